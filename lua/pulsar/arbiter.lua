--- pulsar.arbiter: the arbiter's side of actors: spawning them, the
-- mailbox they connect to, routing between them, and learning at once when
-- one ends (docs/API.md §2 "Actors", docs/DESIGN.md "The arbiter routes").
--
-- Every actor has one link to the arbiter: a Unix socket for process
-- actors, an in-process channel for thread actors. The arbiter keeps a
-- record per actor and relays envelopes between them unchanged, remembering
-- which requests each actor still owes a reply to, so that when an actor
-- dies every caller waiting on it fails at once.
--
-- The spawn handshake (as pulsar's): the new actor sends `pulsar:hello`
-- and gets its parameters back; it runs its `start` hook; then it casts
-- `pulsar:started` with its info, its first heartbeat (or calls
-- `pulsar:start_failed`), which resolves the Future that `spawn` returned. One that has not started
-- within its `timeout` is stopped, then ended by force, and its spawn fails.
--
-- Names: an aid names one actor, and so does a unique name (a worker's
-- `app-worker-2`). A name several actors share (every worker of an
-- application is `app-worker`) reaches the monitor of that name if there is
-- one, else the longest-lived running actor of that name (the first
-- spawned), else the first spawned of them still starting.
--
-- Ending: an actor that says it is stopping (`pulsar:stopping`) and is not
-- gone within its exit_timeout and a margin is ended by force. When an
-- application gave up (its restart budget spent) and the loop ends with
-- nothing left, the arbiter exits with status 1 and says why (exit_status):
-- that is, when its monitor ended and no other actor was left, and nothing
-- was spawned since.
--
-- M.role is the arbiter's role (see the head of pulsar.actor).
local core = require "pulsar.core"
local future = require "pulsar.future"
local log = require "pulsar.log"
local mailbox = require "pulsar.mailbox"
local actor_mod = require "pulsar.actor"

local M = {}

local records = {}   -- aid -> record of a live actor
local by_name = {}   -- name -> the records of that name, in spawn order
local by_unique = {} -- unique name -> record
local by_link = setmetatable({}, {__mode = "k"}) -- link -> record
local arbiter        -- the Arbiter actor
local listener, tcp_listener, private_dir
local spawned = 0
local gave_up        -- why an application gave up, when it ended the last actors

local start_deadline, stopping_deadline, launch -- defined below, used by spawn and commands
local nodes          -- pulsar.nodes, on a node (--node NAME)

-- A new aid: on a node it ends in "@NODE", so that it names one actor in
-- the whole cluster.
local function new_aid()
  local node = arbiter.cfg.node
  return node and core.random_id() .. "@" .. node or core.random_id()
end

local function label(rec) return ("actor '%s' (%s)"):format(rec.name, rec.aid) end

---------------------------------------------------------------------------
-- The mailbox listener

-- A process actor's link forwards, in C, what it sends to the actors of
-- this process (conn:forward_local): no Lua of the arbiter's runs for it.
local function attach(link, rec)
  link:set_handler(function(payload) mailbox.receive(link, payload) end,
                   function(reason) M.link_closed(link, reason) end)
  if rec then rec.link, by_link[link] = link, rec end
  if rec and rec.kind == "process" then link:forward_local() end
end

-- `--mailbox HOST:PORT`: a TCP listener beside the Unix mailbox, for
-- consoles and actors on other machines; a link it accepts is handled as
-- any other only once pulsar.auth has admitted it (the cookie).
local function start_tcp_listener(address)
  local cookie, why = core.load_cookie(arbiter.cfg.cookie_file)
  if not cookie then error(("cannot open the mailbox at %s: %s"):format(address, why), 0) end
  local auth = require "pulsar.auth"
  tcp_listener, why = core.listen(address, function(link)
    auth.admit(link, cookie, function(admitted) attach(admitted, nil) end, arbiter.cfg.handshake_timeout,
               arbiter.cfg.max_handshakes)
  end)
  if not tcp_listener then error(("cannot open the mailbox at %s: %s"):format(address, why), 0) end
  -- a node serves its cluster until it is stopped; otherwise a mailbox
  -- alone does not keep the arbiter alive
  if not arbiter.cfg.node then tcp_listener:unref() end
  arbiter.tcp_address = tcp_listener.address
  log.info("mailbox listening on %s (TCP; peers must know the cookie)", arbiter.tcp_address)
end

local function close_listener()
  if listener then listener:close() end
  if tcp_listener then tcp_listener:close() end
  if private_dir then core.remove_dir(private_dir) end
  listener, tcp_listener, private_dir = nil, nil, nil
end

-- The arbiter's own actors always use the Unix mailbox: the one named by
-- --mailbox unix:PATH, else a private one, also when --mailbox is TCP.
local function start_listener()
  local address, tcp = arbiter.cfg.mailbox, nil
  if address and address:sub(1, 5) ~= "unix:" then address, tcp = nil, address end
  if not address then
    private_dir = core.private_dir()
    address = "unix:" .. private_dir .. "/mailbox.sock"
  end
  local why
  listener, why = core.listen(address, function(link) attach(link, nil) end)
  if not listener then error(("cannot open the mailbox at %s: %s"):format(address, why), 0) end
  listener:unref() -- a mailbox alone does not keep the arbiter alive
  arbiter.address = address
  if not tcp then return end
  local ok, err = pcall(start_tcp_listener, tcp)
  if not ok then
    close_listener() -- and its private directory
    error(err, 0)
  end
end

---------------------------------------------------------------------------
-- Routing

-- The record `target` (an aid, a unique name or a name) designates; see
-- "Names" at the head of this file.
local function lookup(target)
  local rec = records[target] or by_unique[target]
  if rec then return rec end
  local short = mailbox.local_name(target) -- "worker@a" on node a
  if short ~= target then return lookup(short) end
  local named = by_name[target]
  if not named then return nil end
  for _, r in ipairs(named) do
    if r.kind == "monitor" then return r end
  end
  for _, r in ipairs(named) do
    if r.state == "running" then return r end
  end
  return named[1]
end

-- Every VM of this process resolves names through the inbox directory
-- (core.route): it is told what a name reaches whenever that may change.
local function publish(name)
  local rec = lookup(name)
  core.publish_name(name, rec and rec.aid or nil)
end

local function index_record(rec)
  local named = by_name[rec.name]
  if not named then
    named = {}
    by_name[rec.name] = named
  end
  named[#named + 1] = rec
  if rec.unique_name then by_unique[rec.unique_name] = rec end
  publish(rec.name)
  if rec.unique_name then publish(rec.unique_name) end
end

local function unindex_record(rec)
  local named = by_name[rec.name] or {}
  for i, r in ipairs(named) do
    if r == rec then
      table.remove(named, i)
      break
    end
  end
  if #named == 0 then by_name[rec.name] = nil end
  if rec.unique_name and by_unique[rec.unique_name] == rec then by_unique[rec.unique_name] = nil end
  publish(rec.name)
  if rec.unique_name then publish(rec.unique_name) end
end

local function route(aid)
  local node = nodes and mailbox.remote_node(aid)
  if node then
    local peer, why = nodes.route(node)
    if not peer then return nil, why end
    return peer, nil, "@" .. node -- its calls fail when that node goes down
  end
  local rec = lookup(aid)
  if not rec then return nil, ("unknown target '%s'"):format(aid) end
  if not rec.link then return nil, label(rec) .. " is not connected" end
  return rec.link, nil, rec.aid
end

local function inflight_key(sender, id) return sender .. "\0" .. id end

local function fail_request(env, message)
  if env.sender == arbiter.aid then return end -- its own calls fail via pending
  local caller = records[env.sender]
  if caller and caller.link then return mailbox.reply(caller.link, env, nil, message) end
  local node = nodes and mailbox.remote_node(env.sender)
  local peer = node and nodes.route(node)
  if peer then mailbox.reply(peer, env, nil, message) end
end

-- Relays an envelope for an actor on another node, on that node's link;
-- a call is remembered there, to fail if the node goes down.
local function relay_to_node(link, payload, command, target, sender, id, ack, node)
  local peer, why = nodes.route(node)
  local ok
  if peer then ok, why = peer:send(payload) end
  if command == "callback" then return end
  local env = ack and id and sender and {command = command, id = id, sender = sender}
  if not ok then
    if env then mailbox.reply(link, env, nil, ("cannot send '%s' to %s: %s"):format(command, target, why)) end
    return
  end
  if env then peer.inflight[inflight_key(sender, id)] = env end
end

-- Relays an envelope that is not for the arbiter itself, from the fields
-- mailbox.receive read off its head; the payload goes on unchanged.
local function relay(link, payload, command, target, sender, id, ack)
  mailbox.counters.relayed = mailbox.counters.relayed + 1
  local replier = command == "callback" and (by_link[link] or (nodes and nodes.peer_of(link)))
  if replier and ack then replier.inflight[inflight_key(target, ack)] = nil end
  local node = nodes and mailbox.remote_node(target)
  if node then return relay_to_node(link, payload, command, target, sender, id, ack, node) end
  local rec = lookup(target)
  if command == "callback" then
    if rec and rec.link then rec.link:send(payload) end
    return
  end
  local ok, why
  if rec and rec.link then ok, why = rec.link:send(payload) end
  local env = ack and id and sender and {command = command, id = id, sender = sender}
  if not ok then
    if env then
      mailbox.reply(link, env, nil, rec and ("cannot send '%s' to %s: %s"):format(command, label(rec), why)
                                        or ("unknown target '%s'"):format(target))
    end
    return
  end
  if env then rec.inflight[inflight_key(sender, id)] = env end
end

---------------------------------------------------------------------------
-- Actors ending

-- Fails every call still waiting on rec, once.
local function fail_calls(rec, why)
  local message = ("%s %s before replying"):format(label(rec), why)
  mailbox.fail_pending(rec.aid, message)
  for key, env in pairs(rec.inflight) do
    rec.inflight[key] = nil
    fail_request(env, ("%s to '%s'"):format(message, env.command))
  end
end

function M.link_closed(link, reason)
  local rec = by_link[link]
  by_link[link] = nil
  if not rec then return require("pulsar.console").link_closed(link) end
  rec.link = nil
  fail_calls(rec, "disconnected (" .. tostring(reason) .. ")")
  if rec.kind == "thread" then return end -- its thread's end follows
end

local function describe_exit(status, signal)
  if signal and signal ~= 0 then return ("killed by signal %d"):format(signal) end
  return ("exited with status %d"):format(status)
end

-- Every process actor hears that rec ended: calls to it that this
-- process forwarded in C (attach) are not in rec.inflight.
local function tell_down(rec, how)
  for aid, other in pairs(records) do
    if other.kind == "process" and other.link then
      mailbox.cast(aid, "pulsar:down", rec.aid, rec.name, how)
    end
  end
end

-- A process ended by force leaves its direct socket behind.
local function remove_direct_socket(rec)
  local path = rec.direct and rec.direct:match("^unix:(.*)/direct%.sock$")
  if not path then return end
  os.remove(path .. "/direct.sock")
  core.remove_dir(path)
end

local function actor_ended(rec, status, signal)
  records[rec.aid] = nil
  unindex_record(rec)
  if rec.deadline then rec.deadline:cancel() end
  rec.state = "terminated"
  rec.exit_status = status
  local how = describe_exit(status, signal)
  if rec.link then
    local link = rec.link
    by_link[link], rec.link = nil, nil
    link:close("actor ended")
  end
  fail_calls(rec, how)
  tell_down(rec, how)
  remove_direct_socket(rec)
  if not rec.spawn:done() then
    rec.spawn:set_exception(("%s %s before it started"):format(label(rec), how))
  end
  log.debug("%s %s", label(rec), how)
  if rec.manager and records[rec.manager] then
    mailbox.cast(rec.manager, "pulsar:worker_ended", rec.aid, how)
  end
  if rec.kind == "monitor" then M.stop_orphans(rec) end
  if rec.gave_up then
    local others = false
    for _, r in pairs(records) do
      if r.manager ~= rec.aid then others = true break end
    end
    if not others then gave_up = rec.gave_up end
  end
  rec.gone:set_result(how)
end

-- A monitor's workers do not outlive it (as an Erlang supervisor's
-- children): whatever way it ended, the arbiter stops those still alive.
function M.stop_orphans(monitor)
  for aid, rec in pairs(records) do
    if rec.manager == monitor.aid and not rec.stopping then
      log.warning("%s ended: stopping its worker %s", label(monitor), label(rec))
      future.async(function() pcall(M.kill_actor, aid) end)
    end
  end
end

---------------------------------------------------------------------------
-- Spawning

local PARAMS = {name = true, unique_name = true, concurrency = true, timeout = true,
                commands = true, module = true, cfg = true, max_memory = true}
for _, hook in ipairs(actor_mod.HOOKS) do PARAMS[hook] = true end

local function check_params(params)
  if type(params) ~= "table" then error("spawn: parameters must be a table", 3) end
  if params.name ~= nil and type(params.name) ~= "string" then error("spawn: name must be a string", 3) end
  local unique = params.unique_name
  if unique ~= nil then
    if type(unique) ~= "string" or unique == "" then error("spawn: unique_name must be a non-empty string", 3) end
    -- one that is stopping or failed to start passes its unique name on
    local holder = records[unique] or by_unique[unique]
    if holder and (holder.stopping or (holder.spawn:done() and holder.state ~= "running")) then
      holder = nil
    end
    if holder or unique == "arbiter" or unique == "monitor" then
      error(("spawn: the name '%s' is taken%s"):format(unique, holder and " by " .. label(holder) or ""), 3)
    end
  end
  local kind = params.concurrency or arbiter.cfg.concurrency or "process"
  if kind ~= "process" and kind ~= "thread" then
    error(("spawn: concurrency must be 'process' or 'thread', not '%s'"):format(tostring(kind)), 3)
  end
  for _, hook in ipairs(actor_mod.HOOKS) do
    if params[hook] ~= nil and type(params[hook]) ~= "function" then
      error(("spawn: hook '%s' must be a function"):format(hook), 3)
    end
  end
  if params.commands ~= nil then
    if type(params.commands) ~= "table" then error("spawn: commands must be a table", 3) end
    for name, fn in pairs(params.commands) do
      if type(name) ~= "string" or type(fn) ~= "function" then
        error(("spawn: commands.%s must be a function"):format(tostring(name)), 3)
      end
    end
  end
  if params.module ~= nil and type(params.module) ~= "string" then error("spawn: module must be a string", 3) end
  if params.timeout ~= nil and (type(params.timeout) ~= "number" or params.timeout <= 0) then
    error("spawn: timeout must be a number of seconds above 0", 3)
  end
  local max_memory = params.max_memory
  if max_memory == nil and type(params.cfg) == "table" then max_memory = params.cfg.max_memory end
  if max_memory ~= nil and (math.type(max_memory) ~= "integer" or max_memory <= 0) then
    error("spawn: max_memory must be a whole number of bytes above 0", 3)
  end
  for key in pairs(params) do
    if type(key) ~= "string" then error("spawn: parameter keys must be strings", 3) end
    if not PARAMS[key] and actor_mod.is_builtin_field(key) then
      error(("spawn: '%s' is a built-in field of an actor and cannot be set"):format(key), 3)
    end
  end
  return kind
end

-- What the new actor receives in reply to its hello.
local function actor_spec(params, aid, kind, manager)
  local cfg = {}
  for k, v in pairs(arbiter.cfg) do cfg[k] = v end
  for k, v in pairs(params.cfg or {}) do cfg[k] = v end
  if params.timeout then cfg.timeout = params.timeout end
  if params.max_memory then cfg.max_memory = params.max_memory end
  local spec = {aid = aid, name = params.name or "actor", unique_name = params.unique_name,
                kind = kind, cfg = cfg,
                path = package.path, cpath = package.cpath, address = arbiter.address,
                module = params.module, commands = params.commands, hooks = {}, fields = {},
                manager = manager}
  for _, hook in ipairs(actor_mod.HOOKS) do spec.hooks[hook] = params[hook] end
  for key, value in pairs(params) do
    if not PARAMS[key] then spec.fields[key] = value end
  end
  return spec
end

local function new_record(spec)
  spawned = spawned + 1
  return {aid = spec.aid, name = spec.name, unique_name = spec.unique_name, kind = spec.kind,
          spec = spec, state = "starting",
          inflight = {}, age = spawned,
          spawn = future.Future(("the spawn of '%s'"):format(spec.name)),
          gone = future.Future(("the end of '%s'"):format(spec.name))}
end

-- An actor that has not reported itself started within its timeout is
-- stopped (then ended by force, as kill_actor does), and its spawn fails
-- naming it: a start hook that never returns does not hang spawn.
start_deadline = function(rec)
  local timeout = rec.spec.cfg.timeout or 30
  -- a monitor starts its workers first, each under its own deadline
  local app = rec.kind == "monitor" and rec.spec.fields.app
  if app then timeout = timeout * (1 + (app.workers or 1)) end
  rec.deadline = core.timer(timeout, function()
    rec.deadline = nil
    if rec.spawn:done() or rec.gone:done() then return end
    local why = ("%s did not start within %g s"):format(label(rec), timeout)
    log.warning("%s: stopping it", why)
    rec.spawn:set_exception(why)
    future.async(function() pcall(M.kill_actor, rec.aid) end)
  end)
  rec.deadline:unref()
end

--- Spawns an actor (docs/API.md §2); returns a Future of its ActorProxy.
-- `manager` is the aid of the monitor that asked for it (nil: the arbiter);
-- `as_monitor` makes a monitor: a thread actor of kind "monitor".
function M.spawn(params, manager, as_monitor)
  if arbiter.state ~= "running" then error("spawn: the arbiter is stopping", 2) end
  if type(params) == "table" and params.node ~= nil and params.node ~= arbiter.cfg.node then
    return M.spawn_on_node(params)
  end
  local kind = check_params(params)
  if not manager then arbiter:_fire("on_params", params) end
  local spec = actor_spec(params, new_aid(), as_monitor and "thread" or kind, manager)
  if as_monitor then spec.kind = "monitor" end
  local ok, err = pcall(core.encode, spec) -- refuse what cannot cross, here
  if not ok then
    error("spawn: " .. tostring(err):gsub("^value%.hooks%.", ""):gsub("^value%.commands", "commands")
                                   :gsub("^value%.fields%.", ""), 2)
  end
  gave_up = nil -- the program goes on: the application that gave up was not the end
  local rec = new_record(spec)
  rec.manager, rec.started_at = manager, core.now()
  records[rec.aid] = rec
  index_record(rec)
  start_deadline(rec)
  local launched, why = pcall(launch, rec, spec, kind, as_monitor)
  if not launched then
    -- nothing started: the record goes, and its name with it, at once
    -- (not at its start deadline), so a retry is not refused as a duplicate
    records[rec.aid] = nil
    unindex_record(rec)
    if rec.deadline then rec.deadline:cancel() rec.deadline = nil end
    rec.spawn:set_exception(("spawn: %s could not start: %s"):format(label(rec), tostring(why)))
  end
  return rec.spawn
end

--- spawn{node = "b", ...}: the arbiter of node b spawns it (its hooks and
-- commands cross by value, as to a local actor) and manages it.
function M.spawn_on_node(params)
  if not nodes then error("spawn: node '" .. tostring(params.node) .. "': this arbiter is not a node (--node NAME)", 3) end
  if not nodes.valid_name(params.node) then error("spawn: node must be a node's name", 3) end
  local copy = {}
  for k, v in pairs(params) do copy[k] = v end
  copy.node = nil
  return mailbox.send("arbiter@" .. params.node, "spawn", copy)
end

-- Starts the process, thread or monitor of a new record.
launch = function(rec, spec, kind, as_monitor)
  if as_monitor then
    local link, monitor = core.spawn_monitor(rec.aid, function(status) actor_ended(rec, status) end)
    rec.monitor = monitor
    attach(link, rec)
  elseif kind == "process" then
    -- `fds` (listening sockets of this process, from a SocketServer's
    -- monitor) are inherited at 3, 4, ...: the child's actor.fds says so.
    local fds = spec.fields.fds
    if fds then
      spec.fields.fds = {}
      for i = 1, #fds do spec.fields.fds[i] = 2 + i end
    end
    rec.process = core.spawn_process(rec.aid, arbiter.address,
                                     function(status, signal) actor_ended(rec, status, signal) end, fds)
    rec.pid = rec.process.pid
  else
    local link, thread = core.spawn_thread(rec.aid, function(status) actor_ended(rec, status) end)
    rec.thread = thread
    attach(link, rec)
  end
end

--- Stops the actor `aid` and waits until it is gone (kill_actor): a
-- graceful stop first; one that does not end within `timeout` seconds
-- (default: its exit_timeout) is ended by force (see force_end).
function M.kill_actor(aid, timeout)
  local rec = lookup(aid)
  if not rec then error(("kill_actor: unknown actor '%s'"):format(tostring(aid)), 0) end
  timeout = timeout or rec.spec.cfg.exit_timeout or arbiter.cfg.exit_timeout or 3
  rec.stopping = true
  if rec.link then mailbox.cast(rec.aid, "stop") end
  if not pcall(rec.gone.wait, rec.gone, timeout) then
    log.warning("%s did not stop within %g s", label(rec), timeout)
    M.force_end(rec, timeout)
    if not pcall(rec.gone.wait, rec.gone, timeout + 10) then
      error(("kill_actor: %s did not stop"):format(label(rec)), 0)
    end
  end
  return "killed " .. rec.aid
end

--- Stops every actor, waiting up to `timeout` for all of them, then kills
-- the processes left. Monitors go first, so that none of them replaces a
-- worker that is being stopped.
function M.stop_all(timeout)
  M.stop_group(function(rec) return rec.kind == "monitor" end, timeout)
  M.stop_group(function() return true end, timeout)
end

function M.stop_group(selected, timeout)
  local group = {}
  for _, rec in pairs(records) do
    if selected(rec) then group[#group + 1] = rec end
  end
  if #group == 0 then return end
  local waits = {}
  for i, rec in ipairs(group) do
    if rec.link then mailbox.cast(rec.aid, "stop") end
    waits[i] = rec.gone
  end
  local all = future.gather(table.unpack(waits))
  if pcall(all.wait, all, timeout) then return end
  for _, rec in ipairs(group) do
    if not rec.gone:done() then
      log.warning("%s did not stop within %g s: ending it", label(rec), timeout)
      M.force_end(rec, timeout)
    end
  end
  all = future.gather(table.unpack(waits))
  pcall(all.wait, all, timeout + 10)
end

--- Ends an actor that did not stop when asked. A process gets SIGTERM,
-- then SIGKILL if it is still there after `timeout` seconds; a thread stuck
-- in Lua code is interrupted through a count hook on its VM, then ended
-- hard (thread:terminate) if it is still there after `timeout` seconds.
function M.force_end(rec, timeout)
  if rec.process then
    rec.process:kill(15)
    core.timer(timeout or arbiter.cfg.exit_timeout or 3, function()
      if not rec.gone:done() and rec.process then rec.process:kill(9) end
    end)
  elseif rec.thread and rec.thread.interrupt then
    rec.thread:interrupt()
    core.timer(timeout or arbiter.cfg.exit_timeout or 3, function()
      if not rec.gone:done() and rec.thread then rec.thread:terminate() end
    end)
  end
end

local function basic_info(rec)
  return {actor = {name = rec.name, unique_name = rec.unique_name, aid = rec.aid, kind = rec.kind,
                   state = rec.state, pid = rec.pid, age = rec.age}}
end

--- The info of the monitors, by name.
function M.monitors_info()
  local monitors = {}
  for _, rec in pairs(records) do
    if rec.kind == "monitor" then monitors[rec.name] = rec.info or basic_info(rec) end
  end
  return monitors
end

--- The info of the actors this arbiter manages itself.
function M.workers_info()
  local list = {}
  for _, rec in pairs(records) do
    if rec.kind ~= "monitor" and not rec.manager then
      list[#list + 1] = rec.info or basic_info(rec)
    end
  end
  table.sort(list, function(a, b) return (a.actor.age or 0) < (b.actor.age or 0) end)
  return list
end

--- Every live actor, oldest first, as the arbiter knows it without asking
-- it: {aid=, name=, unique_name=, kind=, state=, pid=, manager=,
-- started_at=} (manager: the aid of its monitor; nil: the arbiter's).
function M.actors()
  local list = {}
  for _, rec in pairs(records) do
    list[#list + 1] = {aid = rec.aid, name = rec.name, unique_name = rec.unique_name, kind = rec.kind,
                       state = rec.state, pid = rec.pid, manager = rec.manager,
                       started_at = rec.started_at, age = rec.age}
  end
  table.sort(list, function(a, b) return a.age < b.age end)
  return list
end

--- At each tick: stops the actors the arbiter manages that have been silent
-- longer than their timeout (a graceful stop, then the end by force after
-- exit_timeout), as pulsar's arbiter does.
function M.check_silent(now)
  for _, rec in pairs(records) do
    local timeout = rec.spec.cfg.timeout or 30
    local last = rec.notified or rec.started_at
    if not rec.manager and rec.state == "running" and not rec.stopping and now - last > timeout then
      rec.stopping = true
      log.warning("%s sent no heartbeat for %.1f s (timeout %g s): stopping it",
                  label(rec), now - last, timeout)
      future.async(function() pcall(M.kill_actor, rec.aid) end)
    end
  end
end

-- A stopping actor gives its stopping hook at most exit_timeout: one not
-- gone a margin after that is ended by force (SIGTERM then SIGKILL, or the
-- interrupt of a thread), instead of waiting to be found silent. A monitor
-- is left alone: it waits for its workers, each under this same rule.
local STOP_MARGIN = 2
stopping_deadline = function(rec)
  if rec.kind == "monitor" or rec.stop_deadline then return end
  rec.stopping = true
  local exit_timeout = rec.spec.cfg.exit_timeout or 3
  rec.stop_deadline = core.timer(exit_timeout + STOP_MARGIN, function()
    if rec.gone:done() then return end
    log.warning("%s did not stop within %g s: ending it", label(rec), exit_timeout + STOP_MARGIN)
    M.force_end(rec, exit_timeout)
  end)
  rec.stop_deadline:unref()
end

--- The status the arbiter exits with when its loop ends with nothing left
-- to run: 1 when an application gave up (the last log line says which and
-- why), else 0.
function M.exit_status()
  if not gave_up then return 0 end
  log.error("exiting with status 1: %s", gave_up)
  return 1
end

---------------------------------------------------------------------------
-- Handshake and arbiter commands

local function install_commands()
  mailbox.command("pulsar:hello", function(request, direct)
    local rec = records[request.caller]
    if not rec or rec.state ~= "starting" then
      if request.link then request.link:close("unknown actor") end
      error("unknown actor " .. tostring(request.caller), 0)
    end
    if not rec.link then attach(request.link, rec) end
    if rec.kind == "process" and type(direct) == "string" and direct:match("^unix:/") then
      rec.direct = direct
    end
    return rec.spec
  end)
  -- The directory (pulsar.links): where an actor's own process listens for
  -- direct links; none for the actors of this process.
  mailbox.command("pulsar:where", function(_, target)
    local rec = type(target) == "string" and lookup(target)
    if not rec then error(("unknown target '%s'"):format(tostring(target)), 0) end
    return {aid = rec.aid, name = rec.name, address = rec.direct}
  end)
  mailbox.command("pulsar:started", function(request, info)
    local rec = records[request.caller]
    if not rec or rec.spawn:done() then return false end -- past its start deadline
    if rec.deadline then rec.deadline:cancel() rec.deadline = nil end
    rec.state, rec.info = "running", info
    if not rec.manager then rec.notified = core.now() end -- its first heartbeat
    publish(rec.name) -- a running actor takes its name over from one still starting
    rec.pid = rec.pid or (info and info.actor and info.actor.pid)
    rec.proxy = mailbox.proxy(rec.aid, rec.name, arbiter.address, arbiter.cfg.node)
    rec.spawn:set_result(rec.proxy)
    return true
  end)
  mailbox.command("pulsar:start_failed", function(request, message)
    local rec = records[request.caller]
    if rec and not rec.spawn:done() then
      rec.spawn:set_exception(("%s failed to start: %s"):format(label(rec), tostring(message)))
    end
    return true
  end)
  mailbox.command("spawn", function(request, params)
    local caller = records[request.caller]
    if type(params) == "table" and params.fds ~= nil and (not caller or caller.kind == "process") then
      error("spawn: fds name descriptors of the arbiter's process: only its monitors and threads may pass them", 0)
    end
    local manager = caller and caller.kind == "monitor" and caller.aid or nil
    return M.spawn(params, manager):wait()
  end)
  mailbox.command("kill_actor", function(_, aid, timeout) return M.kill_actor(aid, timeout) end)
  mailbox.command("pulsar:stopping", function(request)
    local rec = records[request.caller]
    if rec then stopping_deadline(rec) end
    return true
  end)
  mailbox.command("pulsar:gave_up", function(request, why)
    local rec = records[request.caller]
    if rec then rec.gave_up = tostring(why) end
    return true
  end)
  require("pulsar.console").install(arbiter)
end

--- Makes this VM's arbiter: its mailbox, its routing, its commands.
-- `the_arbiter` was made with M.role.
function M.setup(the_arbiter)
  arbiter = the_arbiter
  mailbox.setup(arbiter, route, relay)
  install_commands()
  start_listener()
  if arbiter.cfg.node then
    nodes = require "pulsar.nodes"
    nodes.setup(arbiter, fail_request)
  end
end

---------------------------------------------------------------------------
-- The arbiter's role (see pulsar.actor)

M.role = {
  stop_children = function(a) M.stop_all(a.cfg.exit_timeout or 3) end,
  close = function()
    if nodes then nodes.close() end
    close_listener()
    local observer = package.loaded["pulsar.observer"]
    if observer then observer.stop() end
  end,
  on_closed = function(a) core.exit_loop(a.exit_code) end,
  extra_info = function(a, info)
    info.workers, info.monitors = M.workers_info(), M.monitors_info()
    info.actor.mailbox.relayed = mailbox.counters.relayed -- what did not go direct
    info.actor.mailbox.forwarded = core.inbox_forwarded() -- from processes, in C
    info.actor.tcp_address = a.tcp_address
    if nodes then info.nodes = nodes.info() end
  end,
  on_notify = function(_, aid, info)
    local rec = records[aid]
    if rec then rec.info, rec.notified = info, core.now() end
  end,
}

return M
