--- pulsar.apps.http: HttpServer, HTTP/1.1 served by the workers of a
-- SocketServer (pulsar's WSGIServer; docs/API.md §2 "Applications").
--
--   local app = pulsar.apps.HttpServer{
--     name = "hello", bind = "127.0.0.1:8070", workers = 2,
--     handler = function(request)
--       return 200, {["Content-Type"] = "text/plain"}, "Hello " .. request.path
--     end,
--   }
--   app:start():wait()
--   print(app.address)
--
-- It is a SocketServer (lua/pulsar/apps/socket.lua) whose protocol is
-- pulsar.http's (lua/pulsar/http.lua): this file only joins the two and
-- picks the defaults. What each piece does for the rules of HTTP:
--   * pulsar.http parses (core.http_parser, bounded), runs the handler of
--     each request in a task of its own, answers in request order
--     (pipelining), 500 with a logged traceback for a handler's error, 503
--     for one slower than http_handler_timeout, 4xx (501 for a transfer
--     coding it does not know) and a lingering close for bad input, 408 for
--     a request that takes longer than http_timeout to arrive;
--   * the transport (pulsar.net) closes a connection idle for keep_alive
--     seconds (pulsar.http lifts that while a handler runs; an answer
--     still going out to a slow reader is not idleness), and says when
--     a client does not read its answers (pause_writing), upon which
--     pulsar.http stops reading from it;
--   * the SocketServer shares the socket among the workers, replaces the
--     dead and the retired (max_requests, which counts connections), and on
--     a graceful stop tells each connection to finish what is in flight
--     (server_stopping) before the worker ends.
--
-- The handler crosses into the workers' VMs by value (docs/API.md "Actors"):
-- its upvalues are copied, modules are required again by name. One that
-- cannot cross is refused here, by HttpServer{}, with the upvalue's name.
--
-- Settings beside SocketServer's (bind, workers, concurrency, backlog,
-- max_requests, the Application's hooks...):
--   handler           function(request) -> status, headers, body | body,
--                     or a pulsar.http.Router() (it crosses as data and is
--                     compiled in each worker)
--   keep_alive        idle seconds between requests before a connection is
--                     closed (15, as pulsar; 0: never)
--   http_max_body     bytes of a request body (16 MiB), else 413
--   http_max_header   bytes of a request line and headers (64 KiB), else
--                     414 or 431
--   http_max_headers  header fields in a request (100), else 431
--   http_pipeline     requests in flight per connection (16) before
--                     reading from it pauses
--   http_timeout      seconds a request may take to arrive whole from its
--                     first byte (60), else 408 and the connection closes
--   http_linger       seconds a closing connection keeps reading and
--                     dropping what the client still sends (2)
--   http_handler_timeout  seconds a handler may take to answer (none: no
--                     limit); past them the request is answered 503 in its
--                     turn, "handler timed out after N s: METHOD PATH" is
--                     logged, the handler's task is cancelled and whatever
--                     it returns later is dropped
--   ws_max_message    bytes of a WebSocket message (16 MiB), else the
--                     connection closes with 1009: the default max_message
--                     of pulsar.websocket.upgrade
--
-- Worker info has, beside SocketServer's `server`, `http = {requests=,
-- errors=, rejected=, in_flight=, write_queue=, write_queue_max=,
-- websockets=}`: requests handed to the handler, handler errors (500), bad
-- requests (4xx), requests read and not answered yet, the bytes waiting in
-- the transports' write buffers (in total, and on the fullest connection),
-- and the connections switched to WebSocket.
local M = {}

local DEFAULTS = {keep_alive = 15, http_timeout = 60}
local OPTIONS = { -- setting -> pulsar.http's protocol option
  http_max_body = "max_body", http_max_header = "max_header",
  http_max_headers = "max_headers", http_pipeline = "pipeline",
  http_timeout = "timeout", http_linger = "linger",
  http_handler_timeout = "handler_timeout", ws_max_message = "ws_max_message",
}

-- Counters of every connection this VM serves (one HttpServer per worker).
M.stats = {requests = 0, errors = 0, rejected = 0}

local function fail(message, level) error("HttpServer: " .. message, (level or 1) + 1) end

-- The protocol options of `params`, checked by pulsar.http itself; its
-- complaints name our settings.
local function protocol_options(params, keep_alive)
  local opts = {keep_alive = keep_alive}
  for setting, option in pairs(OPTIONS) do opts[option] = params[setting] end
  if opts.timeout == nil then opts.timeout = DEFAULTS.http_timeout end
  local handler = params.handler
  if type(handler) == "table" then handler = function() end end -- a Router: checked by HttpServer{}
  local ok, err = pcall(require("pulsar.http").protocol, handler, opts)
  if not ok then
    err = tostring(err):gsub("^http%.protocol: ", "")
    for setting, option in pairs(OPTIONS) do err = err:gsub("^" .. option .. " ", setting .. " ") end
    fail(err, 3)
  end
  return opts
end

-- The protocol factory given to SocketServer. It crosses into each worker
-- with only the handler and the options; pulsar.http is required there,
-- once, at the first connection.
-- A Router (lua/pulsar/router.lua) crosses as plain data and is compiled
-- into one handler function here, in the worker, once.
local function protocol_factory(handler, opts)
  local make
  return function()
    if not make then
      opts.stats = require("pulsar.apps.http").stats
      if type(handler) == "table" then handler = require("pulsar.router").handler(handler) end
      make = require("pulsar.http").protocol(handler, opts)
    end
    return make()
  end
end

--- worker_info: the HTTP counters and the state of the open connections.
function M.worker_info(worker, info)
  local server = worker.server
  if not server then return end
  local s = M.stats
  local in_flight, queued, fullest, websockets = 0, 0, 0, 0
  for transport in pairs(server.connections) do
    local protocol = transport:get_protocol()
    if type(protocol) == "table" then
      if protocol.is_websocket then websockets = websockets + 1
      elseif protocol.pending then in_flight = in_flight + protocol:pending() end
    end
    local size = transport:get_write_buffer_size()
    queued, fullest = queued + size, math.max(fullest, size)
  end
  info.http = {requests = s.requests, errors = s.errors, rejected = s.rejected,
               in_flight = in_flight, write_queue = queued, write_queue_max = fullest,
               websockets = websockets}
end

local HttpServer = {}
HttpServer.__index = HttpServer
HttpServer.__name = "pulsar.apps.HttpServer"

--- HttpServer{...}: a SocketServer serving HTTP (see the head of this
-- file); bad settings raise at once.
function M.HttpServer(params)
  if type(params) ~= "table" then fail("parameters must be a table", 2) end
  local handler = params.handler
  local is_router = require("pulsar.router").is_router(handler)
  if type(handler) ~= "function" and not is_router then
    fail("handler must be a function(request) or a pulsar.http.Router()", 2)
  end
  if is_router then
    -- compiled here too, so that a bad route is refused now, not in each worker
    local compiled, why = pcall(require("pulsar.router").handler, handler)
    if not compiled then fail("the router: " .. tostring(why), 2) end
  end
  if params.protocol ~= nil then fail("takes a handler, not a protocol", 2) end
  local crosses, why = pcall(require("pulsar.core").encode, params.handler)
  if not crosses then fail("the handler cannot cross into the workers: " .. tostring(why), 2) end
  local keep_alive = params.keep_alive
  if keep_alive == nil then keep_alive = DEFAULTS.keep_alive end
  local socket_params = {}
  for k, v in pairs(params) do
    if k ~= "handler" and not OPTIONS[k] then socket_params[k] = v end
  end
  socket_params.name = params.name or "http"
  socket_params.keep_alive = keep_alive
  socket_params.protocol = protocol_factory(params.handler, protocol_options(params, keep_alive))
  local user_info = params.worker_info
  socket_params.worker_info = function(worker, info)
    require("pulsar.apps.http").worker_info(worker, info)
    if user_info then return user_info(worker, info) end
  end
  local ok, app = pcall(require("pulsar.apps.socket").SocketServer, socket_params)
  if not ok then fail(tostring(app):gsub("^SocketServer: ", ""), 2) end
  if not getmetatable(HttpServer) then -- SocketServer's methods (start)
    setmetatable(HttpServer, {__index = getmetatable(app)})
  end
  return setmetatable(app, HttpServer)
end

return M
