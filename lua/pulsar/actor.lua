--- pulsar.actor: the Actor object of this VM (docs/API.md §2, Actors).
--
-- Every VM has exactly one Actor: the arbiter in the master process, a
-- monitor, a process or thread actor, or a console (--attach). An Actor
-- carries its identity (aid, name, unique_name, kind), its lifecycle state
-- ("initial" -> "starting" -> "running" -> "stopping" -> "closed"), its
-- hooks (HOOKS below, from spawn parameters or a module), and builds its
-- `info` table. Its stop runs the `stopping` hook for at most exit_timeout
-- seconds, then closes it.
--
-- What differs between an arbiter, a monitor and a worker is its *role*,
-- given to actor.new{role = ...}: a table of the functions below, each
-- optional, each called with the actor first.
--
--   on_stop(actor)             stop() began: tells whoever must know (a
--                              worker tells the arbiter, which ends it by
--                              force if it is not gone within exit_timeout
--                              and a margin). May wait briefly for the
--                              answer, so that the news is out before a
--                              stuck stopping hook could hold it back.
--   stop_children(actor)       at the start of stop(), before the stopping
--                              hook: stops the actors this one manages and
--                              returns once they are gone (the arbiter: every
--                              actor; a monitor: its workers). May wait.
--   close(actor)               once the stopping hook is done: releases the
--                              actor's handles (its link to the arbiter, the
--                              arbiter's listeners, the heartbeat). Must not
--                              wait.
--   on_closed(actor)           last: ends the VM's loop with actor.exit_code.
--   extra_info(actor, info)    adds to the info table, before on_info hooks
--                              (the arbiter: workers and monitors; a
--                              monitor: its workers).
--   on_notify(actor, aid, info) a managed actor's heartbeat arrived (the
--                              `notify` command); records it. Must not wait.
--
-- The roles live beside what they serve: arbiter.role (pulsar.arbiter),
-- worker.role (pulsar.worker, for process and thread actors) and
-- monitor.role (pulsar.monitor: a worker's role plus its pool's).
local core = require "pulsar.core"
local future = require "pulsar.future"
local log = require "pulsar.log"

local M = {}

-- pulsar.mailbox requires this module; fetch it when first needed.
local function mailbox() return require "pulsar.mailbox" end

local Actor = {}
Actor.__index = Actor
Actor.__name = "pulsar.Actor"

function Actor.__tostring(a) return ("%s(%s)"):format(a.name, a.aid) end

local HOOKS = {"start", "stopping", "periodic_task", "on_info", "on_params"}
M.HOOKS = HOOKS

-- Fields and methods a spawn parameter may not override.
local BUILTIN = {aid = true, name = true, unique_name = true, kind = true, state = true,
                 address = true, extra = true, cfg = true, hooks = true, role = true,
                 next_periodic_task = true, manager = true, exit_code = true}
function M.is_builtin_field(key)
  return BUILTIN[key] or Actor[key] ~= nil or key:sub(1, 1) == "_"
end

local current -- the Actor of this VM

--- Makes this VM's Actor. `params` gives aid, name, kind, cfg, role (see
-- the head of this file) and hooks.
function M.new(params)
  local self = setmetatable({
    aid = params.aid or core.random_id(),
    name = params.name or "actor",
    kind = params.kind or "process",
    state = "initial",
    address = params.address,
    extra = {},
    cfg = params.cfg or {},
    hooks = {},
    role = params.role or {},
    next_periodic_task = nil,
    _born = core.hrtime(),
    _age = params.age or 0,
  }, Actor)
  for _, hook in ipairs(HOOKS) do self.hooks[hook] = params[hook] end
  current = self
  log.set_actor_name(self.name)
  return self
end

function M.current() return current end

function Actor:is_running() return self.state == "running" end
function Actor:started() return self.state ~= "initial" and self.state ~= "starting" end
function Actor:stopped() return self.state == "closed" or self.state == "terminated" end

--- Calls the role's function `name` with the actor and args, if it has one.
function Actor:_role(name, ...)
  local fn = self.role[name]
  if fn then return fn(self, ...) end
end

--- Closes the actor's handles at once, without a graceful stop (its role's
-- close), as if its VM had crashed.
function Actor:_close() return self:_role("close") end

--- Calls hook `name` with the actor and args; logs its error with the
-- traceback and returns false, args... on failure.
function Actor:_fire(name, ...)
  local hook = self.hooks[name]
  if not hook then return true end
  local ok, res = xpcall(hook, debug.traceback, self, ...)
  if not ok then log.error("%s hook failed: %s", name, res) end
  return ok, res
end

--- The info table of docs/API.md §2, then whatever on_info hooks add.
function Actor:info()
  local now = core.hrtime()
  local info = {
    actor = {
      name = self.name, unique_name = self.unique_name, aid = self.aid, kind = self.kind,
      state = self.state, pid = core.pid(), thread_id = core.thread_id(), node = self.cfg.node,
      uptime = now - self._born, age = self._age,
      memory_lua = math.floor(collectgarbage("count") * 1024),
      memory_limit = select(2, core.memory()), -- nil: none
      mailbox = {
        sent = mailbox().counters.sent, received = mailbox().counters.received,
        pending = mailbox().pending_count(),
      },
    },
    extra = self.extra,
  }
  if self.kind == "arbiter" or self.kind == "process" or self.kind == "monitor" then
    info.system = core.system()
  end
  self:_role("extra_info", info)
  self:_fire("on_info", info)
  return info
end

-- Runs the stopping hook in a task of its own and waits for it, and for a
-- Future it returns, at most `budget` seconds in all: a hook that never
-- returns does not keep the actor from closing.
local function run_stopping_hook(self, budget)
  if not self.hooks.stopping then return end
  local deadline = core.now() + budget
  local fired, res
  local task = future.async(function() fired, res = self:_fire("stopping") end)
  local ok, err = pcall(task.wait, task, budget)
  if ok and fired and future.is_future(res) then
    ok, err = pcall(res.wait, res, math.max(0, deadline - core.now()))
  end
  if not ok then
    log.warning("the stopping hook did not end within exit_timeout (%g s), closing anyway: %s",
                budget, tostring(err))
  end
end

--- Stops the actor gracefully: its role stops its children, its `stopping`
-- hook runs (for at most exit_timeout seconds, a Future it returns
-- included), then the actor closes. Returns a Future that resolves to the
-- exit code once it is closed.
function Actor:stop(exit_code)
  if self._stop then return self._stop end
  local done = future.Future("stop of " .. self.name)
  self._stop = done
  self.exit_code = exit_code or 0
  self.state = "stopping"
  future.async(function()
    local ok, err = pcall(self._role, self, "on_stop")
    if not ok then log.warning("telling that %s stops: %s", tostring(self), tostring(err)) end
    ok, err = pcall(self._role, self, "stop_children")
    if not ok then log.error("stopping the actors of %s: %s", tostring(self), tostring(err)) end
    run_stopping_hook(self, self.cfg.exit_timeout or 3)
    self.state = "closed"
    self:_role("close")
    self:_role("on_closed")
    done:set_result(self.exit_code)
  end)
  return done
end

--- Sends `command` to `target`; a Future of the reply (docs/API.md §2).
function Actor:send(target, command, ...) return mailbox().send(target, command, ...) end

--- Spawns an actor managed by the arbiter; a Future of its ActorProxy.
function Actor:spawn(params) return require("pulsar").spawn(params) end

--- This actor's executor: a pool of `thread_workers` threads (default 5),
-- each with a Lua VM of its own, for CPU-bound functions.
function Actor:executor()
  if not self._executor then
    local Executor = require "pulsar.executor"
    self._executor = Executor.new(self.cfg.thread_workers or 5)
  end
  return self._executor
end

return M
