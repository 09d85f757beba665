-- Argo CD health of a crema.dev RecommenderModel (status: operator/src/controllers/recommendermodel/status.ts).
-- Degraded: the Degraded condition, or the last canary was rolled back (until a new rollout starts).
-- Suspended: a canary held by spec.paused or by a StoreRegion freeze window. Progressing: a canary,
-- a promotion, or pods rolling out. Healthy: Ready. Missing fields never fail the script.
local hs = { status = "Progressing", message = "Waiting for the operator to report status" }

local function condition(status, t)
  if type(status.conditions) ~= "table" then return nil end
  for _, c in ipairs(status.conditions) do
    if type(c) == "table" and c.type == t then return c end
  end
  return nil
end
local function isTrue(c) return c ~= nil and c.status == "True" end
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

local degraded = condition(status, "Degraded")
if isTrue(degraded) then
  hs.status = "Degraded"
  hs.message = text(degraded, "Degraded: " .. tostring(degraded.reason))
  return hs
end

local progressing = condition(status, "Progressing")
local canary = status.canary
if type(canary) == "table" and canary.modelSha ~= nil then
  local where = "Canary revision " .. tostring(canary.revision or "?") .. " at step " ..
    tostring((canary.step or 0) + 1) .. ", weight " .. tostring(canary.weight or 0) .. "%"
  local progressingText = text(progressing, "")
  local frozen = condition(status, "Frozen")
  if obj.spec ~= nil and obj.spec.paused == true then
    hs.status = "Suspended"
    hs.message = where .. ": paused (spec.paused is true)"
  elseif isTrue(frozen) or (status.frozen ~= nil and status.frozen ~= false) or
      (type(status.frozenUntil) == "string" and status.frozenUntil ~= "") or
      string.find(progressingText, "freeze window", 1, true) ~= nil then
    hs.status = "Suspended"
    hs.message = where .. ": frozen (" .. text(frozen, progressingText ~= "" and progressingText or "StoreRegion freeze window") .. ")"
  else
    hs.status = "Progressing"
    hs.message = progressingText ~= "" and progressingText or where
  end
  return hs
end

if type(status.promotion) == "table" and status.promotion.modelSha ~= nil then
  hs.status = "Progressing"
  hs.message = text(progressing, "Promoting the canary to stable")
  return hs
end

local rolledBack = condition(status, "RolledBack")
if isTrue(rolledBack) or status.phase == "RolledBack" then
  hs.status = "Degraded"
  hs.message = "Rolled back: " .. text(rolledBack, "the last canary was rolled back")
  return hs
end

local ready = condition(status, "Ready")
if isTrue(ready) then
  hs.status = "Healthy"
  hs.message = text(ready, "Serving")
  local drift = condition(status, "DriftDetected")
  if isTrue(drift) then hs.message = hs.message .. "; drift detected: " .. text(drift, "") end
  return hs
end

hs.status = "Progressing"
hs.message = text(ready, text(progressing, hs.message))
return hs
