--- pulsar.monitor: what a monitor actor runs (see pulsar.application).
--
-- A monitor keeps exactly `workers` workers of its application alive. Its
-- workers are spawned through the arbiter with the monitor as their manager:
-- their heartbeats come here, and the arbiter tells the monitor at once when
-- one ends (`pulsar:worker_ended`), so a dead worker is replaced at once, not
-- at the next tick. At each tick the monitor runs monitor_task, stops the
-- workers that stopped answering, and tops the pool up. Restarts count
-- against a budget; past it the application stops. A worker that says it is
-- retiring (`pulsar:retiring`, as a SocketServer worker past max_requests
-- does) leaves the pool and is replaced at once, outside the budget.
--
-- `restart_worker` (the observer's restart, or anyone's) replaces one
-- worker the same way, replacement first: the pool never runs short.
-- `info.restarts` counts the workers replaced since the monitor started,
-- whatever the cause.
--
-- Every worker shares the name `<app>-worker` and has a unique name of its
-- own, `<app>-worker-<n>`: n is the lowest number no live worker of the
-- pool holds, so a replacement takes the number of the worker it replaces.
-- M.role is a monitor's role (see the head of pulsar.actor): a worker's,
-- plus stopping the pool, listing it in info and recording heartbeats.
local core = require "pulsar.core"
local future = require "pulsar.future"
local log = require "pulsar.log"
local pulsar = require "pulsar"

local M = {commands = {}}

local function app_of(monitor) return monitor.app end

local function worker_params(monitor, number)
  local app = app_of(monitor)
  local params = {name = app.name .. "-worker", unique_name = ("%s-worker-%d"):format(app.name, number),
                  concurrency = app.concurrency, timeout = app.timeout, cfg = app.cfg}
  for hook, fn in pairs(app.worker_hooks) do params[hook] = fn end
  for key, value in pairs(app.worker_fields or {}) do params[key] = value end
  return params
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- The lowest worker number that no worker of the pool, nor a retiring
-- one still finishing, holds.
local function free_number(monitor)
  local used = {}
  for _, set in ipairs {monitor.pool, monitor.retiring} do
    for _, w in pairs(set) do
      if type(w) == "table" then used[w.number] = true end
    end
  end
  local n = 1
  while used[n] do n = n + 1 end
  return n
end

-- Spawns one worker; a failed start counts as a restart.
local function spawn_worker(monitor)
  local number = free_number(monitor)
  local ok, proxy = pcall(function() return pulsar.spawn(worker_params(monitor, number)):wait(60) end)
  if ok then
    if monitor.state ~= "running" and monitor.state ~= "starting" then
      -- started while the monitor stops: it must not outlive the monitor
      pulsar.send("arbiter", "kill_actor", proxy.aid)
    elseif not monitor.retiring[proxy.aid] then -- it may have retired already
      monitor.pool[proxy.aid] = {proxy = proxy, number = number, notified = core.now()}
    end
    return true
  end
  log.error("application '%s': a worker failed to start: %s", app_of(monitor).name, tostring(proxy))
  return false
end

-- Whether one more restart fits in the budget (Erlang's intensity/period).
local function restart_allowed(monitor)
  local app, now = app_of(monitor), core.now()
  local recent = {}
  for _, t in ipairs(monitor.restarts) do
    if now - t <= app.restart_period then recent[#recent + 1] = t end
  end
  recent[#recent + 1] = now
  monitor.restarts = recent
  return #recent <= app.max_restarts
end

-- Past the budget the application stops, and the arbiter is told why: when
-- nothing else is left it exits with status 1 and says so.
local function give_up(monitor)
  local app = app_of(monitor)
  local why = ("application '%s' gave up: %d restarts within %g s (max_restarts %d)"):format(
    app.name, #monitor.restarts, app.restart_period, app.max_restarts)
  log.error("%s", why)
  monitor.extra.stopped_because = "restart budget exceeded"
  pcall(function() pulsar.send("arbiter", "pulsar:gave_up", why):wait(5) end)
  monitor:stop(1)
end

--- Brings the pool to `workers`: spawns the missing, culls the surplus.
-- Restarts (after the first fill) count against the budget.
local function fill_pool(monitor, restarting)
  local app = app_of(monitor)
  if monitor.filling then return end
  monitor.filling = true
  while monitor.state == "running" or monitor.state == "starting" do
    local n = count(monitor.pool)
    if n >= app.workers then break end
    if restarting and not restart_allowed(monitor) then
      monitor.filling = false
      return give_up(monitor)
    end
    if not spawn_worker(monitor) then restarting = true end
  end
  for aid in pairs(monitor.pool) do
    if count(monitor.pool) <= app.workers then break end
    monitor.pool[aid] = nil
    pulsar.send("arbiter", "kill_actor", aid)
  end
  monitor.filling = false
end

local function worker_ended(monitor, aid, how)
  monitor.retiring[aid], monitor.infos[aid] = nil, nil
  if not monitor.pool[aid] then return end
  monitor.pool[aid] = nil
  if monitor.state ~= "running" then return end
  monitor.restarted = monitor.restarted + 1
  log.warning("application '%s': worker %s %s; replacing it", app_of(monitor).name, aid, how)
  future.async(fill_pool, monitor, true)
end

-- Stops the workers that sent no heartbeat for longer than their timeout.
local function check_silent(monitor)
  local timeout, now = monitor.cfg.timeout or 30, core.now()
  for aid, w in pairs(monitor.pool) do
    if not w.stopping and now - w.notified > timeout then
      w.stopping = true
      log.warning("application '%s': worker %s silent for %.1f s: stopping it",
                  app_of(monitor).name, aid, now - w.notified)
      future.async(function() pcall(function() pulsar.send("arbiter", "kill_actor", aid):wait() end) end)
    end
  end
end

local function stop_workers(monitor)
  if not monitor.pool then return end -- not started
  local waits = {}
  for _, set in ipairs {monitor.pool, monitor.retiring} do
    for aid in pairs(set) do
      waits[#waits + 1] = pulsar.send("arbiter", "kill_actor", aid)
    end
  end
  monitor.pool, monitor.retiring = {}, {}
  if #waits > 0 then
    local all = pulsar.gather(table.unpack(waits))
    pcall(all.wait, all, (monitor.cfg.exit_timeout or 3) + 15)
  end
end

-- The pool in info, by worker number: each worker's last heartbeat (its
-- first is sent before its spawn resolves), else what the monitor knows.
local function pool_info(monitor)
  local list = {}
  for aid, w in pairs(monitor.pool or {}) do
    list[#list + 1] = monitor.infos[aid] or
      {actor = {aid = aid, name = w.proxy.name, state = "running",
                unique_name = ("%s-worker-%d"):format(app_of(monitor).name, w.number)}}
  end
  local number = {}
  for aid, w in pairs(monitor.pool or {}) do number[aid] = w.number end
  table.sort(list, function(x, y) return (number[x.actor.aid] or 0) < (number[y.actor.aid] or 0) end)
  return list
end

-- Replaces worker `aid`: it leaves the pool as a retiring one does, its
-- replacement is started, then it is stopped (kill_actor). Outside the
-- restart budget: nothing failed.
local function restart_worker(monitor, aid)
  local w = monitor.pool[aid]
  if not w then
    error(("restart_worker: '%s' is not a worker of application '%s'"):format(
      tostring(aid), app_of(monitor).name), 0)
  end
  monitor.pool[aid], monitor.retiring[aid] = nil, w
  monitor.restarted = monitor.restarted + 1
  log.info("application '%s': restarting worker %s", app_of(monitor).name, aid)
  fill_pool(monitor, false)
  return pulsar.send("arbiter", "kill_actor", aid):wait()
end

M.role = setmetatable({
  stop_children = stop_workers,
  extra_info = function(monitor, info)
    info.workers, info.restarts = pool_info(monitor), monitor.restarted
  end,
  -- A worker's heartbeat. Kept also for a worker not yet pooled: its first
  -- one arrives before its spawn resolves here.
  on_notify = function(monitor, aid, info)
    if not monitor.infos then return end
    monitor.infos[aid] = info
    local w = monitor.pool[aid]
    if w then w.notified = core.now() end
  end,
}, {__index = require("pulsar.worker").role})

function M.start(monitor)
  local app = app_of(monitor)
  monitor.pool, monitor.restarts, monitor.retiring, monitor.infos = {}, {}, {}, {}
  monitor.restarted = 0
  monitor.extra.application = app.name
  pulsar.command("pulsar:worker_ended", function(request, aid, how)
    worker_ended(request.actor, aid, how)
  end, {ack = false})
  -- A worker that retires on its own (a SocketServer's max_requests) is
  -- replaced at once, outside the restart budget, while it finishes.
  pulsar.command("pulsar:retiring", function(request)
    local aid = request.caller
    local w = monitor.pool[aid]
    monitor.retiring[aid] = w or true -- not yet pooled: spawn_worker skips it
    if not w then return end
    monitor.pool[aid] = nil
    if monitor.state == "running" then future.async(fill_pool, monitor, false) end
  end, {ack = false})
  pulsar.command("restart_worker", function(request, aid) return restart_worker(request.actor, aid) end)
  monitor.hooks.on_params = app.actorparams
  if app.monitor_start then app.monitor_start(monitor) end
  if app.workers == 0 then
    -- No pool: the monitor does the work itself, in the arbiter's process.
    if app.worker_hooks.start then app.worker_hooks.start(monitor) end
    monitor.hooks.on_info = app.worker_hooks.on_info
    return
  end
  fill_pool(monitor, false)
  if count(monitor.pool) == 0 then error("no worker could be started", 0) end
end

function M.periodic_task(monitor)
  local app = app_of(monitor)
  if app.monitor_task then app.monitor_task(monitor) end
  if app.workers == 0 then
    if app.worker_hooks.periodic_task then app.worker_hooks.periodic_task(monitor) end
    return
  end
  check_silent(monitor)
  fill_pool(monitor, true)
end

function M.stopping(monitor)
  local app = app_of(monitor)
  local own = app.workers == 0 and app.worker_hooks.stopping
  if own then own(monitor) end
  if app.monitor_stopping then return app.monitor_stopping(monitor) end
end

return M
