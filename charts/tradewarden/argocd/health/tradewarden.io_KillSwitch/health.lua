-- Argo CD health check for tradewarden.io/KillSwitch (resource_customizations format: the object is the
-- global `obj`; the script returns {status = ..., message = ...}). Installed into argocd-cm by
-- ../../argocd-cm-resource-customizations.yaml; tested in tests/unit/test_argocd_health.py.
--
-- A switch that is off is Healthy. An engaged switch is Suspended once every matched runner has
-- acknowledged the mode: trading is paused on purpose, which is what Suspended means to Argo CD, and it
-- keeps the Application from looking broken while a human holds the brake. Until then it is
-- Progressing, naming the bots still pending: acknowledgements arrive in well under a second, so a
-- switch that stays Progressing means runners are not answering (their bots turn RunnerHealthy=False).
--   spec.mode off (or unset)                                     -> Healthy  "off"
--   engaged, status not yet about this generation                -> Progressing "engaging <mode>"
--   engaged, no bot matched                                       -> Suspended "engaged: <mode>, no bots matched"
--   engaged, Acknowledged=True                                   -> Suspended "engaged: <mode>, all N acknowledged"
--   engaged, otherwise                                           -> Progressing "engaged: <mode>, A/N acknowledged; pending: ..."
local hs = {}
local MAX_NAMED = 5

local mode = "off"
if obj.spec ~= nil and obj.spec.mode ~= nil and obj.spec.mode ~= "" then
  mode = obj.spec.mode
end

if mode == "off" then
  hs.status = "Healthy"
  hs.message = "off"
  return hs
end

local status = obj.status
local generation = obj.metadata.generation
if status == nil or (generation ~= nil and (status.observedGeneration or 0) < generation) then
  hs.status = "Progressing"
  hs.message = "engaging " .. mode .. ": waiting for the operator to count acknowledgements"
  return hs
end

local acknowledged = nil
if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Acknowledged" then
      acknowledged = c
    end
  end
end

local matched = status.matched or 0
local acked = status.acknowledged or 0
if matched == 0 then
  hs.status = "Suspended"
  hs.message = "engaged: " .. mode .. ", no bots matched"
  return hs
end

if acknowledged ~= nil and acknowledged.status == "True" then
  hs.status = "Suspended"
  hs.message = string.format("engaged: %s, all %d acknowledged", mode, matched)
  return hs
end

local pending = status.pendingBots or {}
local named = {}
for i, bot in ipairs(pending) do
  if i > MAX_NAMED then
    break
  end
  named[#named + 1] = bot
end
hs.status = "Progressing"
hs.message = string.format("engaged: %s, %d/%d acknowledged", mode, acked, matched)
if #named > 0 then
  hs.message = hs.message .. "; pending: " .. table.concat(named, ", ")
  if #pending > MAX_NAMED then
    hs.message = hs.message .. string.format(" and %d more", #pending - MAX_NAMED)
  end
end
return hs
