-- Argo CD health check for tradewarden.io/StrategyConfig (resource_customizations format: the object is
-- the global `obj`; the script returns {status = ..., message = ...}). Installed into argocd-cm by
-- ../../argocd-cm-resource-customizations.yaml; tested in tests/unit/test_argocd_health.py.
--
--   observedGeneration < metadata.generation -> Progressing (the Valid condition is about an older spec)
--   Valid=True                               -> Healthy
--   Valid=False                              -> Degraded, with the validation error as the message
--   no Valid condition yet                   -> Progressing
local hs = {}

local status = obj.status
local valid = nil
if status ~= nil and status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Valid" then
      valid = c
    end
  end
end

local generation = obj.metadata.generation
if valid ~= nil and generation ~= nil and (status.observedGeneration or 0) < generation then
  hs.status = "Progressing"
  hs.message = string.format("Waiting for the operator to validate generation %d", generation)
  return hs
end

if valid == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to validate the config"
elseif valid.status == "True" then
  hs.status = "Healthy"
  hs.message = valid.message or "Valid"
  if hs.message == "" then
    hs.message = "Valid"
  end
elseif valid.status == "False" then
  hs.status = "Degraded"
  hs.message = valid.message or "Invalid"
  if hs.message == "" then
    hs.message = "Invalid"
  end
else
  hs.status = "Progressing"
  hs.message = valid.message or "Validation pending"
end
return hs
