-- Argo CD health check for deploy.panda.dev/v1alpha1 PandaDeploy.
-- Installed as resource.customizations.health.deploy.panda.dev_PandaDeploy in
-- argocd-cm (deploy/argocd/argocd-cm-patch.yaml holds this same script).
-- Reads spec.suspend, metadata.generation and status: observedGeneration,
-- phase (Pending, Progressing, Succeeded, Failed) and the kstatus conditions
-- Ready, Reconciling and Stalled. Lua 5.1 (Argo CD runs gopher-lua).
local hs = {}

local function condition(status, type)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local spec = obj.spec or {}
local status = obj.status
local generation = (obj.metadata or {}).generation
local suspended = spec.suspend == true

local observed = nil
local phase = nil
if status ~= nil then
  observed = status.observedGeneration
  phase = status.phase
end
local ready = condition(status, "Ready")
local reconciling = condition(status, "Reconciling")
local stalled = condition(status, "Stalled")
-- A run holds a worker (Progressing) or waits for one (Pending with Reconciling).
-- Pending without Reconciling is a stall, which starts no run.
local running = phase == "Progressing" or is_true(reconciling)

-- Suspended: no new run starts; a run already going finishes first.
if suspended and not running then
  hs.status = "Suspended"
  hs.message = "Suspended: spec.suspend is true, no new run starts"
  return hs
end

-- The operator has not looked at this generation yet: a run is due.
if observed == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the resource"
  return hs
end
if generation ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. tostring(generation) ..
    " (observed: " .. tostring(observed) .. ")"
  return hs
end

if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = text(stalled, "Stalled: " .. tostring(stalled.reason))
  return hs
end

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = text(ready, status.message or "The last run failed")
  return hs
end

if running then
  hs.status = "Progressing"
  hs.message = text(reconciling, text(ready, status.message or "A run is in progress"))
  return hs
end

if is_true(ready) then
  hs.status = "Healthy"
  hs.message = text(ready, "Ready")
  return hs
end

hs.status = "Progressing"
hs.message = text(ready, status.message or "Waiting for the resource to become Ready")
return hs
