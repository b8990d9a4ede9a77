-- Argo CD health check for tradewarden.io/TradingBot (resource_customizations format: the object is the
-- global `obj`; the script returns {status = ..., message = ...}). Installed into argocd-cm by
-- ../../argocd-cm-resource-customizations.yaml; tested in tests/unit/test_argocd_health.py.
--
-- First match wins:
--   no status yet, or status.observedGeneration < metadata.generation  -> Progressing (operator behind)
--   phase Invalid, or ConfigValid=False                                 -> Degraded (fix the spec/config)
--   phase Halted, or KillSwitchEngaged=True                             -> Suspended (a human's brake)
--   RunnerHealthy=False                                                 -> Degraded (runner lost or failing)
--   Ready=True                                                          -> Healthy
--   anything else                                                       -> Progressing
local hs = {}

local function condition(status, ctype)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function is(c, value)
  return c ~= nil and c.status == value
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the bot"
  return hs
end

local generation = obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = string.format("Waiting for the operator to observe generation %d (observed %d)",
    generation, observed or 0)
  return hs
end

local configValid = condition(status, "ConfigValid")
if status.phase == "Invalid" or is(configValid, "False") then
  hs.status = "Degraded"
  hs.message = text(configValid, "The bot's configuration is invalid")
  return hs
end

local engaged = condition(status, "KillSwitchEngaged")
if status.phase == "Halted" or is(engaged, "True") then
  local mode = status.killMode
  if mode == nil or mode == "" or mode == "off" then
    mode = "halted"
  end
  hs.status = "Suspended"
  hs.message = "Kill switch engaged (" .. mode .. ")"
  if engaged ~= nil and engaged.message ~= nil and engaged.message ~= "" then
    hs.message = hs.message .. ": " .. engaged.message
  end
  return hs
end

local runner = condition(status, "RunnerHealthy")
if is(runner, "False") then
  hs.status = "Degraded"
  hs.message = text(runner, "The runner is not healthy")
  return hs
end

local ready = condition(status, "Ready")
if is(ready, "True") then
  hs.status = "Healthy"
  hs.message = text(ready, "Ready")
  return hs
end

hs.status = "Progressing"
hs.message = text(ready, "Waiting for the bot to become Ready")
return hs
