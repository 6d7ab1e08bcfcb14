--- pulsar.apps.socket: SocketServer, an Application serving a protocol on
-- sockets that its monitor binds once and every worker accepts on (pulsar's
-- SocketServer; docs/API.md §2 "Applications").
--
--   local app = pulsar.apps.SocketServer{
--     name = "echo", bind = "127.0.0.1:0", workers = 2,
--     protocol = function() return {
--       connection_made = function(self, transport) self.transport = transport end,
--       data_received = function(self, data) self.transport:write(data) end,
--     } end,
--   }
--   app:start():wait()
--   print(app.address)                     --> 127.0.0.1:41234
--
-- Settings beside the Application's (name, workers, concurrency, hooks...):
--   bind         "HOST:PORT", ":PORT", "unix:PATH", or a comma list of them;
--                default pulsar.cfg.bind (--bind), else 127.0.0.1:8060 as in
--                pulsar ("127.0.0.1:0" picks a free port)
--   protocol     a factory: one protocol table per connection (pulsar.net)
--   backlog      the listen queue (2048)
--   keep_alive   seconds after which a connection where nothing moved is
--                closed (0 or nil: never); an answer still draining to a
--                slow reader is movement, a peer that takes none of its
--                answer for that long is closed with a warning
--   max_requests a worker serves about that many connections, then stops
--                gracefully and its monitor replaces it; "about": each
--                worker draws its own limit, int(lognormal(log(n), 0.2)), as
--                pulsar does, so that workers do not all recycle at once
--
-- A protocol method that raises is logged with its traceback and closes
-- its connection (pulsar.net); the worker and its other connections go on.
--
-- How the socket is shared: monitor_start binds every address (in the
-- arbiter's process, where monitors live) and keeps the sockets; each
-- worker's spawn parameters carry their descriptors (`fds`). A thread
-- worker serves dups of them on its own loop; a process worker inherits
-- them at 3, 4, ... when it is spawned. All workers accept from the same
-- kernel queue, so a worker that stops or dies refuses no connection: the
-- others, or its replacement, take what waits. With workers = 0 the monitor
-- serves itself.
--
-- A worker stopping gracefully (max_requests, the `stop` command, the
-- application or the arbiter stopping) stops accepting at once, calls
-- server_stopping(self) on the protocol of each open connection that has
-- one (finish what is in flight, then close), lets them finish, and ends
-- when none is left or after exit_timeout.
--
-- Worker info (the `info` command, and the monitor's list of workers)
-- carries `server = {address=, addresses=, processed=, open=,
-- max_requests=, keep_alive=}`: connections accepted so far, and open now.
-- In a worker (or the monitor with workers = 0), `actor.server` is its
-- pulsar.net Server, for hooks that want more (a worker_info that adds
-- its own counts).
-- app.address and app.addresses are set once app:start() has resolved; the
-- monitor's info has them in `extra`.
local Application = require "pulsar.application"

local M = {}

local DEFAULT_BIND = "127.0.0.1:8060"
local SETTINGS = {protocol = true, bind = true, backlog = true, keep_alive = true, max_requests = true}

local function fail(message) error("SocketServer: " .. message, 4) end

local function check(params)
  if type(params) ~= "table" then fail("parameters must be a table") end
  if type(params.protocol) ~= "function" then fail("protocol must be a function returning a protocol table") end
  local backlog = params.backlog
  if backlog ~= nil and (math.type(backlog) ~= "integer" or backlog < 1) then
    fail("backlog must be a whole number from 1")
  end
  local keep_alive = params.keep_alive
  if keep_alive ~= nil and (type(keep_alive) ~= "number" or keep_alive < 0) then
    fail("keep_alive must be a number of seconds from 0")
  end
  local max = params.max_requests
  if max ~= nil and (math.type(max) ~= "integer" or max < 0) then
    fail("max_requests must be a whole number from 0")
  end
end

---------------------------------------------------------------------------
-- What the monitor and the workers run. The hooks built by SocketServer
-- below call these through require, so that they cross into other VMs
-- carrying only the settings and the user's own hooks.

--- monitor_start: binds every address once.
function M.monitor_start(monitor, settings)
  local net = require "pulsar.net"
  local log = require "pulsar.log"
  local bound = net.bind(settings.bind, {backlog = settings.backlog}):wait()
  monitor.socket_bound = bound
  monitor.extra.address, monitor.extra.addresses = bound.address, bound.addresses
  log.info("%s listening on %s", monitor.name, table.concat(bound.addresses, ", "))
end

--- actorparams: every worker gets the listening descriptors.
function M.actorparams(monitor, params)
  if monitor.socket_bound then params.fds = monitor.socket_bound.fds end
end

-- pulsar's rule: int(lognormvariate(log(n), 0.2)), at least 1.
local function draw_limit(n)
  if not n or n == 0 then return nil end
  local u1, u2 = 1 - math.random(), math.random()
  local z = math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)
  return math.max(1, math.floor(math.exp(math.log(n) + 0.2 * z)))
end

-- Past max_requests: no more accepting; the monitor is told to replace
-- this worker now; the worker stops once its connections are done.
local function retire(worker, server)
  local pulsar = require "pulsar"
  require("pulsar.log").info("reached max_requests (%d connections): stopping gracefully",
                             server.processed)
  server:close()
  pulsar.cast("monitor", "pulsar:retiring")
  worker:stop()
end

--- worker_start: accepts on the monitor's sockets (or, with workers = 0,
-- the monitor on its own).
function M.worker_start(worker, settings)
  local net = require "pulsar.net"
  local inherited = worker.kind == "process"
  local fds = worker.fds or (worker.socket_bound and worker.socket_bound.fds)
  if not fds then error("SocketServer: this worker was given no listening socket", 0) end
  local limit = worker.kind ~= "monitor" and draw_limit(settings.max_requests) or nil
  worker.socket_limit = limit
  worker.server = net.serve(fds, {
    protocol = settings.protocol, keep_alive = settings.keep_alive,
    backlog = settings.backlog, own = inherited,
    on_accept = limit and function(server)
      if server.processed >= limit and not server:closed() then retire(worker, server) end
    end or nil,
  })
end

--- worker_stopping (and monitor_stopping): stops accepting; a Future of
-- the end of the open connections, which the actor waits for up to
-- exit_timeout.
function M.worker_stopping(worker)
  local server = worker.server
  if worker.socket_bound then worker.socket_bound.close() end
  if not server then return end
  return server:shutdown()
end

function M.worker_info(worker, info)
  local s = worker.server
  if not s then return end
  info.server = {address = s.address, addresses = s.addresses, processed = s.processed, open = s.open,
                 max_requests = worker.socket_limit, keep_alive = s.keep_alive}
end

---------------------------------------------------------------------------
-- The Application

local SocketServer = setmetatable({}, {__index = Application})
SocketServer.__index = SocketServer
SocketServer.__name = "pulsar.apps.SocketServer"

-- hook(actor, ...) running ours, then the user's; the first Future
-- either returns is what the actor waits for.
local function chain(name, settings, user)
  return function(actor, ...)
    local ours = require("pulsar.apps.socket")[name](actor, settings, ...)
    local theirs
    if user then theirs = user(actor, ...) end
    return ours or theirs
  end
end

-- actorparams(monitor, params) and worker_info(worker, info) take no
-- settings: the same chain with the settings left out.
local function chain_plain(name, user)
  return function(actor, x)
    require("pulsar.apps.socket")[name](actor, x)
    if user then return user(actor, x) end
  end
end

--- SocketServer{...}: an Application (see the head of this file); bad
-- settings raise at once, a bad address included.
function M.SocketServer(params)
  check(params)
  local pulsar = require "pulsar"
  local bind = params.bind or pulsar.cfg.bind or DEFAULT_BIND
  require("pulsar.net").parse_bind(bind, 3)
  local settings = {protocol = params.protocol, bind = bind, backlog = params.backlog,
                    keep_alive = params.keep_alive, max_requests = params.max_requests}
  local app_params = {}
  for k, v in pairs(params) do if not SETTINGS[k] then app_params[k] = v end end
  app_params.monitor_start = chain("monitor_start", settings, params.monitor_start)
  app_params.worker_start = chain("worker_start", settings, params.worker_start)
  app_params.worker_stopping = chain("worker_stopping", settings, params.worker_stopping)
  app_params.monitor_stopping = chain("worker_stopping", settings, params.monitor_stopping)
  app_params.actorparams = chain_plain("actorparams", params.actorparams)
  app_params.worker_info = chain_plain("worker_info", params.worker_info)
  local app = Application.new(app_params)
  app.settings = settings
  return setmetatable(app, SocketServer)
end

--- Starts the monitor (which binds) and its workers: a Future of the
-- monitor's proxy, resolved once the workers accept; app.address (the
-- first bound address, with its real port) and app.addresses are set by
-- then.
function SocketServer:start()
  local future = require "pulsar.future"
  local pulsar = require "pulsar"
  local started = Application.start(self)
  return future.async(function()
    local proxy = started:wait()
    local extra = pulsar.send(proxy, "info"):wait().extra or {}
    self.address, self.addresses = extra.address, extra.addresses
    return proxy
  end)
end

return M
