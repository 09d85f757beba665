-- Argo CD health of a crema.dev StoreRegion (floors in the region's timezone; issue 14).
-- Degraded: the Degraded condition (unknown timezone, missing model) or CapacityClamped (the floor
-- the calendar asks for is above serving.maxReplicas: the rush would be under-provisioned).
-- Suspended: a freeze window is active (canary promotions of its model are held).
-- Healthy: the floor is computed (Ready, or a desiredMinReplicas without a Ready condition).
-- Missing fields never fail the script.
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
  hs.message = text(degraded, "Degraded")
  return hs
end
local clamped = condition(status, "CapacityClamped")
if isTrue(clamped) then
  hs.status = "Degraded"
  hs.message = "Capacity clamped: " .. text(clamped, "the floor is above serving.maxReplicas")
  return hs
end

local floor = ""
if status.desiredMinReplicas ~= nil then floor = "floor " .. tostring(status.desiredMinReplicas) end
local window = ""
if type(status.activeWindow) == "string" and status.activeWindow ~= "" then window = " (" .. status.activeWindow .. ")" end

local frozen = condition(status, "Frozen")
local freezeName = status.activeFreezeWindow
if isTrue(frozen) or (type(freezeName) == "string" and freezeName ~= "") or
    (type(status.frozenUntil) == "string" and status.frozenUntil ~= "") then
  hs.status = "Suspended"
  local until_ = type(status.frozenUntil) == "string" and status.frozenUntil ~= "" and (" until " .. status.frozenUntil) or ""
  hs.message = "Freeze window active" .. until_ .. ": " .. text(frozen, "canary promotions are held") ..
    (floor ~= "" and ("; " .. floor .. window) or "")
  return hs
end

local ready = condition(status, "Ready")
if isTrue(ready) or (ready == nil and status.desiredMinReplicas ~= nil) then
  hs.status = "Healthy"
  hs.message = floor ~= "" and (floor .. window) or text(ready, "Ready")
  return hs
end
hs.message = text(ready, hs.message)
return hs
