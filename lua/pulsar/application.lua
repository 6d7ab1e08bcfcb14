--- pulsar.application: Applications, pools of workers kept alive by a
-- monitor (docs/API.md §2 "Applications"; pulsar's Application and Monitor).
--
--   pulsar.Application{name = "myapp", workers = 2, concurrency = "process",
--                      worker_start = function(worker) ... end, ...}:start()
--
-- start() spawns the application's monitor, an actor of kind "monitor"
-- (lua/pulsar/monitor.lua), which spawns `workers` workers through the
-- arbiter and replaces any that dies or stops answering, within a restart
-- budget (Erlang's intensity and period): past `max_restarts` restarts in
-- `restart_period` seconds it stops the application and logs why.
local Application = {}
Application.__index = Application
Application.__name = "pulsar.Application"

local WORKER_HOOKS = {worker_start = "start", worker_stopping = "stopping",
                      worker_info = "on_info", worker_task = "periodic_task"}
local MONITOR_HOOKS = {"monitor_start", "monitor_task", "monitor_stopping", "actorparams"}

local function fail(message) error("Application: " .. message, 3) end

local function check(params)
  if type(params) ~= "table" then fail("parameters must be a table") end
  if type(params.name) ~= "string" or params.name == "" then fail("name must be a non-empty string") end
  if params.name == "arbiter" or params.name == "monitor" then fail("name '" .. params.name .. "' is reserved") end
  local workers = params.workers
  if workers ~= nil and (math.type(workers) ~= "integer" or workers < 0) then
    fail(("workers must be a whole number from 0, not %s"):format(tostring(workers)))
  end
  local kind = params.concurrency
  if kind ~= nil and kind ~= "process" and kind ~= "thread" then
    fail(("concurrency must be 'process' or 'thread', not '%s'"):format(tostring(kind)))
  end
  for hook in pairs(WORKER_HOOKS) do
    if params[hook] ~= nil and type(params[hook]) ~= "function" then fail(hook .. " must be a function") end
  end
  for _, hook in ipairs(MONITOR_HOOKS) do
    if params[hook] ~= nil and type(params[hook]) ~= "function" then fail(hook .. " must be a function") end
  end
  for _, key in ipairs {"max_restarts", "restart_period", "timeout"} do
    local v = params[key]
    if v ~= nil and (type(v) ~= "number" or v < 0) then fail(key .. " must be a number from 0") end
  end
end

--- A new application (not started); checks every parameter.
function Application.new(params)
  check(params)
  return setmetatable({params = params}, Application)
end

--- Starts the application's monitor; returns a Future of its proxy,
-- resolved once the monitor has started its workers.
function Application:start()
  local pulsar = require "pulsar"
  local arbiter = pulsar.arbiter()
  if not arbiter then error("Application:start() runs in the arbiter", 2) end
  local p, cfg = self.params, arbiter.cfg
  local app = {
    name = p.name,
    workers = p.workers or cfg.workers or 1,
    concurrency = p.concurrency or cfg.concurrency or "process",
    max_restarts = p.max_restarts or cfg.max_restarts or 5,
    restart_period = p.restart_period or cfg.restart_period or 10,
    worker_hooks = {},
    worker_fields = p.worker_fields,
    cfg = p.cfg,
    timeout = p.timeout,
  }
  for hook, as in pairs(WORKER_HOOKS) do app.worker_hooks[as] = p[hook] end
  local monitor = {name = p.name, module = "pulsar.monitor", app = app, cfg = p.cfg}
  for _, hook in ipairs(MONITOR_HOOKS) do app[hook] = p[hook] end
  self.monitor = require("pulsar.arbiter").spawn(monitor, nil, true)
  return self.monitor
end

return setmetatable(Application, {__call = function(_, params) return Application.new(params) end})
