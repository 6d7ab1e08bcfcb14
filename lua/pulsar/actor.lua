--- pulsar.actor: the Actor object of this VM (API.md §2, Actors).
--
-- Every VM has exactly one Actor: the arbiter in the master process, and
-- later one per thread or process actor. It carries identity (aid, name,
-- kind), lifecycle state, its hooks, and builds its `info` table.
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
local BUILTIN = {aid = true, name = true, kind = true, state = true, address = true,
                 extra = true, cfg = true, hooks = true, next_periodic_task = true,
                 manager = true, exit_code = true}
function M.is_builtin_field(key)
  return BUILTIN[key] or Actor[key] ~= nil or key:sub(1, 1) == "_"
end

local current -- the Actor of this VM

--- Makes this VM's Actor. `params` gives aid, name, kind, cfg and hooks.
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
    next_periodic_task = nil,
    _born = core.hrtime(),
    _age = params.age or 0,
    _mailbox = {sent = 0, received = 0, pending = 0},
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

--- Calls hook `name` with the actor and args; logs its error with the
-- traceback and returns false, args... on failure.
function Actor:_fire(name, ...)
  local hook = self.hooks[name]
  if not hook then return true end
  local ok, res = xpcall(hook, debug.traceback, self, ...)
  if not ok then log.error("%s hook failed: %s", name, res) end
  return ok, res
end

--- The info table of API.md §2, then whatever on_info hooks add.
function Actor:info()
  local now = core.hrtime()
  local info = {
    actor = {
      name = self.name, aid = self.aid, kind = self.kind, state = self.state,
      pid = core.pid(), thread_id = core.thread_id(),
      uptime = now - self._born, age = self._age,
      memory_lua = math.floor(collectgarbage("count") * 1024),
      mailbox = {
        sent = self._mailbox.sent, received = self._mailbox.received,
        pending = self._mailbox.pending,
      },
    },
    extra = self.extra,
  }
  info.actor.mailbox.sent = mailbox().counters.sent
  info.actor.mailbox.received = mailbox().counters.received
  info.actor.mailbox.pending = mailbox().pending_count()
  if self.kind == "arbiter" or self.kind == "process" or self.kind == "monitor" then
    info.system = core.system()
  end
  if self._extra_info then self._extra_info(info) end
  self:_fire("on_info", info)
  return info
end

--- Stops the actor gracefully: its `stopping` hook runs (a Future it returns
-- is waited for up to exit_timeout), then the actor closes. Returns a Future
-- that resolves to the exit code once it is closed.
function Actor:stop(exit_code)
  if self._stop then return self._stop end
  local done = future.Future("stop of " .. self.name)
  self._stop = done
  self.exit_code = exit_code or 0
  self.state = "stopping"
  future.async(function()
    if self._stop_children then self:_stop_children() end
    local ok, res = self:_fire("stopping")
    if ok and future.is_future(res) then
      local waited, err = pcall(res.wait, res, self.cfg.exit_timeout or 3)
      if not waited then log.warning("stopping hook: %s", err) end
    end
    self.state = "closed"
    if self._close then self._close(self) end
    if self._on_closed then self._on_closed(self) end
    done:set_result(self.exit_code)
  end)
  return done
end

--- Sends `command` to `target`; a Future of the reply (API.md §2).
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
