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

--- Nodes (docs/API.md "Nodes"): this node's name, nil for a plain arbiter.
function pulsar.node()
  local a = actor.current()
  return (a and a.cfg or core.config()).node
end

local function on_a_node(what)
  if not pulsar.node() then error(what .. ": this arbiter is not a node (--node NAME)", 3) end
  return actor.current().kind == "arbiter"
end

--- The names of the nodes this one is linked to, sorted. Outside the
-- arbiter it asks the arbiter, so it waits: call it in a task.
function pulsar.nodes()
  if not pulsar.node() then return {} end
  if actor.current().kind == "arbiter" then return require("pulsar.nodes").names() end
  return mailbox.send("arbiter", "pulsar:nodes"):wait()
end

local node_watchers -- outside the arbiter: name -> {fn, ...}

--- Calls fn(name, reason) once when node `name` goes down (at once when it
-- is not linked now).
function pulsar.monitor_node(name, fn)
  if on_a_node("monitor_node") then return require("pulsar.nodes").monitor(name, fn) end
  if type(name) ~= "string" then error("monitor_node: the node's name must be a string", 2) end
  if type(fn) ~= "function" then error("monitor_node: fn must be a function", 2) end
  if not node_watchers then
    node_watchers = {}
    mailbox.command("pulsar:node_down", function(_, node, why)
      local list = node_watchers[node]
      node_watchers[node] = nil
      for _, f in ipairs(list or {}) do f(node, why) end
    end, {ack = false})
  end
  local list = node_watchers[name]
  if not list then
    list = {}
    node_watchers[name] = list
    mailbox.cast("arbiter", "pulsar:monitor_node", name)
  end
  list[#list + 1] = fn
end

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
