--- pulsar.commands: the built-in commands every actor answers (docs/API.md §2).
-- The arbiter adds its own (spawn, kill_actor and the spawn handshake) in
-- pulsar.arbiter.
local core = require "pulsar.core"
local mailbox = require "pulsar.mailbox"

local M = {}

-- Settings the runtime keeps outside cfg: setting one applies it too, and a
-- value it refuses (an unknown level) is refused before cfg changes.
local APPLY = {
  log_level = function(value) core.set_log_level(value) end, -- per process
}

local function config(request, action, name, value)
  local cfg = request.actor.cfg
  if type(name) ~= "string" then error("config: name must be a string", 0) end
  if action == "get" then return cfg[name] end
  if action == "set" then
    if APPLY[name] then
      local ok, err = pcall(APPLY[name], value)
      if not ok then error(("config: cannot set %s: %s"):format(name, err), 0) end
    end
    cfg[name] = value
    return true
  end
  error("config: action must be 'get' or 'set', not " .. tostring(action), 0)
end

--- Registers the built-ins in this VM's mailbox.
function M.install()
  mailbox.command("ping", function() return "pong" end)
  mailbox.command("echo", function(_, x) return x end)
  mailbox.command("info", function(request) return request.actor:info() end)
  mailbox.command("run", function(request, fn, ...)
    if type(fn) ~= "function" then error("run: the first argument must be a function", 0) end
    return fn(request.actor, ...)
  end)
  mailbox.command("stop", function(request) request.actor:stop() end, {ack = false})
  mailbox.command("config", config)
  -- The observer's poll (lua/pulsar/observer/sampler.lua): this actor's
  -- figures, and the log lines of its process after `since` when it is a
  -- process of its own (a thread or monitor logs into the arbiter's).
  mailbox.command("pulsar:observe", function(request, since)
    local a = request.actor
    local info = a:info()
    local summary = {actor = info.actor, http = info.http, restarts = info.restarts,
                     application = info.extra and info.extra.application}
    if a.kind == "process" and core.log_tail then
      summary.logs = core.log_tail(math.tointeger(since) or 0)
    end
    return summary
  end)
  -- The manager's side of the heartbeat: its role records it.
  mailbox.command("notify", function(request, info)
    request.actor:_role("on_notify", request.caller, info)
    return core.now()
  end)
end

return M
