--- pulsar: the module every actor's VM sees as `require "pulsar"` (docs/API.md §2).
local core = require "pulsar.core"
local future = require "pulsar.future"
local actor = require "pulsar.actor"

local pulsar = {
  VERSION = core.versions().pulsar,
  versions = core.versions(),
  log = require "pulsar.log",

  Future = future.Future,
  is_future = future.is_future,
  async = future.async,
  gather = future.gather,
  sleep = future.sleep,
  call_later = future.call_later,
  call_soon = future.call_soon,
  time = core.now,
}

local mailbox = require "pulsar.mailbox"

pulsar.send = mailbox.send
pulsar.cast = mailbox.cast
pulsar.command = mailbox.command
pulsar.is_proxy = mailbox.is_proxy

--- Spawns an actor (docs/API.md §2, Actors); returns a Future of its ActorProxy.
-- From the arbiter it spawns directly; elsewhere it asks the arbiter, which
-- then manages the new actor.
function pulsar.spawn(params)
  local me = actor.current()
  if me.kind == "arbiter" then return require("pulsar.arbiter").spawn(params) end
  if type(params) ~= "table" then error("spawn: parameters must be a table", 2) end
  me:_fire("on_params", params)
  return mailbox.send("arbiter", "spawn", params)
end

--- pulsar.Application{...} (lua/pulsar/application.lua), loaded when first
-- used: only the arbiter needs it, and every new VM would compile it.
function pulsar.Application(params) return require("pulsar.application")(params) end

--- Networking (lua/pulsar/net.lua), loaded when first used.
function pulsar.create_server(params) return require("pulsar.net").create_server(params) end
function pulsar.open_connection(...) return require("pulsar.net").open_connection(...) end

--- The Actor of the current VM.
pulsar.get_actor = actor.current

--- The Arbiter, in the arbiter's VM; nil elsewhere.
function pulsar.arbiter()
  local a = actor.current()
  if a and a.kind == "arbiter" then return a end
  return nil
end

-- The settings before this VM has an actor (a table of its own, made once).
local early_cfg

--- pulsar.cfg is the current actor's cfg (the very table `actor.cfg`,
-- `config get/set` and the runtime read), looked up at each use, so that
-- there is one table per VM; before the VM has an actor, the command line's
-- settings. The batteries, each loaded when first used: pulsar.apps
-- (lua/pulsar/apps/), pulsar.http (http.lua: the client, the router,
-- WebSocket), pulsar.json (json.lua), pulsar.observer (observer/, in the
-- arbiter).
local LAZY = {apps = "pulsar.apps", http = "pulsar.http", json = "pulsar.json",
              observer = "pulsar.observer"}

setmetatable(pulsar, {__index = function(t, key)
  if key == "cfg" then
    local a = actor.current()
    if a then return a.cfg end
    early_cfg = early_cfg or core.config()
    return early_cfg
  end
  local module = LAZY[key]
  if not module then return nil end
  local value = require(module)
  rawset(t, key, value)
  return value
end})

return pulsar
