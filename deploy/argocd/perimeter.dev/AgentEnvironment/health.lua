-- Argo CD health of a perimeter.dev AgentEnvironment (docs/argocd.md). Argo CD runs this with the
-- live object in the global `obj` and shows the table it returns. It runs a script from argocd-cm
-- in gopher-lua (Lua 5.1) without the string and math libraries, so this uses neither; Debian's
-- lua5.4 runs it in tests/integration/argocd. The operator writes status.observedGeneration and
-- the Ready condition on every pass (operator/controllers/agentenvironment/reconciler.cc,
-- desired_status).
hs = {}

local function describe(condition)
  if condition.reason ~= nil and condition.message ~= nil and condition.message ~= "" then
    return condition.reason .. ": " .. condition.message
  end
  return condition.reason or condition.message or ""
end

local generation = obj.metadata and obj.metadata.generation
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Perimeter operator to report a status"
  return hs
end
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Perimeter operator to observe generation " .. generation
  return hs
end

local ready = nil
for _, condition in ipairs(status.conditions) do
  if condition.type == "Ready" then
    ready = condition
  end
end
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
local ready_observed = ready.observedGeneration
if generation ~= nil and ready_observed ~= nil and ready_observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition of generation " .. generation
  return hs
end

if ready.status == "True" then
  -- spec.suspend: nothing new is claimed and running sessions finish; the key and the
  -- queue were fine (with a bad key Ready is False, and the environment Degraded).
  if ready.reason == "Suspended" then
    hs.status = "Suspended"
  else
    hs.status = "Healthy" -- Polling, or AtCapacity
  end
elseif ready.status == "False" then
  -- The key (SecretNotFound, KeyRejected, ...), the queue (Unreachable, ServerError, ...),
  -- the spec (InvalidSpec, RunnerPodRejected, ...) or the namespace (NamespaceNotEnabled):
  -- nothing is claimed until it is fixed, or until the queue answers again.
  hs.status = "Degraded"
elseif ready.status == "Unknown" then
  hs.status = "Progressing" -- Starting: the first poll has not answered yet
else
  hs.status = "Unknown"
end
hs.message = describe(ready)
return hs
