-- Argo CD health of a perimeter.dev McpTunnel (docs/argocd.md). Argo CD runs this with the
-- live object in the global `obj` and shows the table it returns. It runs a script from argocd-cm
-- in gopher-lua (Lua 5.1) without the string and math libraries, so this uses neither; Debian's
-- lua5.4 runs it in tests/integration/argocd. The operator writes status.observedGeneration and
-- the Ready condition on every pass (operator/controllers/mcptunnel/reconciler.cc). An McpTunnel
-- has no suspend, so it is never Suspended.
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

-- Ready False while the gateway is on its way: a new configuration rolling out to the replicas
-- (old ones serve the old routes meanwhile), or no replica holding an edge connection yet.
local on_the_way = { RollingOut = true, GatewayNotReady = true }

if ready.status == "True" then
  hs.status = "Healthy" -- GatewayReady
elseif ready.status == "False" and on_the_way[ready.reason] then
  hs.status = "Progressing"
elseif ready.status == "False" then
  -- Credentials, the Tunnels API, the certificate, a route's upstream or the spec: the
  -- reason says which, the message what to do.
  hs.status = "Degraded"
elseif ready.status == "Unknown" then
  hs.status = "Progressing" -- Reconciling
else
  hs.status = "Unknown"
end
hs.message = describe(ready)
return hs
