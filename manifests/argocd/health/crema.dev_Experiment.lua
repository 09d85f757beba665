-- Argo CD health of a crema.dev Experiment (phases Pending, Running, Concluded, Stopped; issue 13).
-- Degraded: stopped (a guardrail, a sample-ratio mismatch or a person stopped it), an SRM
-- condition while running, or the Degraded condition (e.g. a variant names a missing model).
-- Suspended: a winner waits for a person to promote it (decision.autoPromote false), or spec.paused.
-- Progressing: Pending or Running. Healthy: Concluded. Missing fields never fail the script.
local hs = { status = "Progressing", message = "Waiting for the operator to report status" }

local function condition(status, t)
  if type(status.conditions) ~= "table" then return nil end
  for _, c in ipairs(status.conditions) do
    if type(c) == "table" and c.type == t then return c end
  end
  return nil
end
local function isTrue(c) return c ~= nil and c.status == "True" end
local function isFalse(c) return c ~= nil and c.status == "False" end
local function text(c, fallback)
  if c ~= nil and type(c.message) == "string" and c.message ~= "" then return c.message end
  return fallback
end

local status = obj.status
if type(status) ~= "table" then return hs end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local phase = status.phase
local decision = type(status.decision) == "string" and status.decision or ""

local degraded = condition(status, "Degraded")
if isTrue(degraded) then
  hs.status = "Degraded"
  hs.message = text(degraded, "Degraded")
  return hs
end
-- Condition names the controller may use for unresolved references; False means "not valid".
for _, t in ipairs({ "ReferencesResolved", "ModelsResolved", "Valid" }) do
  local c = condition(status, t)
  if isFalse(c) then
    hs.status = "Degraded"
    hs.message = text(c, t .. " is False")
    return hs
  end
end

if phase == "Stopped" then
  local stopped = condition(status, "Stopped")
  hs.status = "Degraded"
  hs.message = "Stopped: " .. text(stopped, decision ~= "" and decision or "the experiment was stopped")
  return hs
end

for _, t in ipairs({ "SampleRatioMismatch", "SRM" }) do
  local c = condition(status, t)
  if isTrue(c) then
    hs.status = "Degraded"
    hs.message = "Sample ratio mismatch: " .. text(c, "no decision until the split is fixed")
    return hs
  end
end

if phase == "Concluded" then
  hs.status = "Healthy"
  if type(status.winner) == "string" and status.winner ~= "" then
    hs.message = "Concluded: winner " .. status.winner .. (decision ~= "" and (" (" .. decision .. ")") or "")
  else
    hs.message = "Concluded: " .. (decision ~= "" and decision or "no winner")
  end
  return hs
end

local awaiting = condition(status, "WinnerAwaitsPromotion") or condition(status, "WinnerAwaitingPromotion")
if isTrue(awaiting) then
  hs.status = "Suspended"
  hs.message = text(awaiting, "A winner awaits promotion by a person")
  return hs
end
if obj.spec ~= nil and obj.spec.paused == true then
  hs.status = "Suspended"
  hs.message = "Paused (spec.paused is true)"
  return hs
end

hs.status = "Progressing"
if phase == "Running" then
  hs.message = "Running" .. (decision ~= "" and (": " .. decision) or "")
elseif phase == "Pending" then
  hs.message = "Pending" .. (decision ~= "" and (": " .. decision) or "")
end
return hs
