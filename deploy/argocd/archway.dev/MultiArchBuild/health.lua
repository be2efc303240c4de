-- Argo CD health of an archway.dev/v1alpha1 MultiArchBuild, from the conditions archway writes:
-- Healthy when Ready, Degraded when Stalled (only a change helps), Progressing otherwise, including
-- while the operator has not yet seen the latest generation. Uses only Lua's base library, so it runs
-- as an argocd-cm override without useOpenLibs.
local hs = {}
local status = obj.status
if status == nil or status.observedGeneration == nil or status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the archway operator to observe the latest generation"
  return hs
end
local conditions = {}
for _, condition in ipairs(status.conditions or {}) do
  conditions[condition.type] = condition
end
local ready = conditions["Ready"]
local stalled = conditions["Stalled"]
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
elseif stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.reason .. ": " .. stalled.message
else
  hs.status = "Progressing"
  hs.message = (ready ~= nil and ready.message) or "Waiting for the build to start"
end
return hs
