--- pulsar.net: TCP and Unix stream sockets for Lua (docs/API.md §2 "Networking").
--
--   local server = pulsar.create_server{host = "127.0.0.1", port = 0,
--                                       protocol = function() return {...} end}:wait()
--   local stream = pulsar.open_connection("127.0.0.1", server.port):wait()
--
-- Servers speak to protocols, as asyncio does: `protocol` is a factory
-- called once per connection; the table it returns gets
--   connection_made(self, transport)   data_received(self, data)
--   eof_received(self)                 (return true to stay half-open)
--   pause_writing(self)                resume_writing(self)
--   connection_lost(self, err)         (err is nil after a clean close; once,
--                                       inside transport:abort(), else from
--                                       the loop: host/transport/net.h)
--   server_stopping(self)              (the server stops: finish and close)
-- each only if it has it. These are plain calls, not coroutines: a protocol
-- that must wait starts a task (pulsar.async). One that raises has its
-- error logged with the traceback and its connection closed (aborted, for
-- connection_made; closed after what it wrote, for the others); the server
-- and its other connections go on. The transport (host/bind/lnet.c)
-- has write, write_eof, close, abort, pause_reading, resume_reading,
-- get_extra_info("peername" | "sockname"), get_write_buffer_size,
-- set_write_buffer_limits, set_idle_timeout and unref (it stops keeping
-- the loop alive; Server:unref does it for a server's listeners).
--
-- Flow control, the rule that keeps memory bounded: writes are never
-- dropped; once a write takes a transport's queue above its high-water mark
-- (64 KiB), the protocol's pause_writing is called, and resume_writing when
-- the queue drains below the low-water mark (16 KiB). A protocol without
-- pause_writing has its reading paused over that time instead, so one that
-- only answers what it reads (an echo, a request/response server) stops
-- reading from a peer that does not read its answers. A protocol that
-- produces on its own (timers, tasks) must honour pause_writing itself.
--
-- Streams (open_connection) are the client's side in the style of Lua
-- files: read and readline return Futures, write queues, drain waits for
-- the queue to go down, and nothing is buffered past `limit` bytes: reading
-- from the socket pauses until the caller reads.
--
-- Addresses are text: "HOST:PORT", ":PORT" (every interface), "[::1]:PORT",
-- "unix:PATH" (core.parse_address, host/transport/sockaddr.c); a server's
-- `bind` may list several, separated by commas.
-- Listening sockets are plain descriptors (server.fds) that other actors of
-- the process can serve too (net.serve): that is how the workers of a
-- SocketServer share one socket (lua/pulsar/apps/socket.lua).
local core = require "pulsar.core"
local future = require "pulsar.future"
local log = require "pulsar.log"

local M = {
  BACKLOG = 2048,           -- listen(2) queue
  LIMIT = 64 * 1024,        -- a stream's read buffer, and its longest line
}

local Future = future.Future

---------------------------------------------------------------------------
-- Addresses

local ADDRESS_FORMS = "HOST:PORT, :PORT or unix:PATH"

--- One address: {host=, port=} (host nil for every interface) or {path=};
-- nil, why for anything else. The parser is the host's (sockaddr.c), the
-- one the mailbox and the command line use, so an address means the same
-- everywhere.
function M.parse_address(text)
  if type(text) ~= "string" then
    return nil, ("an address must be a string (%s), not a %s"):format(ADDRESS_FORMS, type(text))
  end
  return core.parse_address(text)
end

--- A comma-separated list of addresses; raises with the first bad one.
function M.parse_bind(text, level)
  if type(text) ~= "string" or not text:match("%S") then
    error(("bind: an address is needed (%s)"):format(ADDRESS_FORMS), (level or 1) + 1)
  end
  local list = {}
  for item in (text .. ","):gmatch("([^,]*),") do
    item = item:match("^%s*(.-)%s*$")
    local ep, why = M.parse_address(item)
    if not ep then error("bind: " .. why, (level or 1) + 1) end
    list[#list + 1] = ep
  end
  return list
end

-- The IP addresses to try for ep.host (in a task): a literal as it is,
-- every interface as dual-stack "::" then "0.0.0.0", a name resolved.
local function addresses_of(ep)
  if ep.host == nil then return {"::", "0.0.0.0"} end
  if core.net_ip_family(ep.host) then return {ep.host} end
  local f = Future("resolving " .. ep.host)
  core.net_getaddrinfo(ep.host, function(list, err)
    if list and #list > 0 then f:set_result(list)
    else f:set_exception(err or ("cannot resolve '%s': no address"):format(ep.host)) end
  end)
  return f:wait()
end

-- Tries fn(endpoint) on each address of ep until one works; raises the
-- first error when none does.
local function each_address(ep, fn)
  if ep.path then
    local result, why = fn({path = ep.path})
    if not result then error(why, 0) end
    return result
  end
  local first
  for _, ip in ipairs(addresses_of(ep)) do
    local result, why = fn({ip = ip, port = ep.port})
    if result then return result end
    first = first or why
  end
  error(first, 0)
end

---------------------------------------------------------------------------
-- Binding

--- Binds every address of `bind` (text, or a list of endpoints); returns
-- a Future of {sockets=, fds=, addresses=, address=, close=}: listening
-- sockets not yet served, for net.serve here or in other actors.
function M.bind(bind, opts)
  local endpoints = type(bind) == "table" and bind or M.parse_bind(bind, 2)
  local backlog = opts and opts.backlog or M.BACKLOG
  return future.async(function()
    local sockets, done = {}, false
    local function close_all() for _, s in ipairs(sockets) do s:close() end end
    local ok, err = pcall(function()
      for _, ep in ipairs(endpoints) do
        sockets[#sockets + 1] = each_address(ep, function(spec)
          spec.backlog = backlog
          return core.net_bind(spec)
        end)
      end
      done = true
    end)
    if not done then close_all(); error(err, 0) end
    local bound = {sockets = sockets, fds = {}, addresses = {}, close = close_all}
    for i, s in ipairs(sockets) do bound.fds[i], bound.addresses[i] = s.fd, s.address end
    bound.address = bound.addresses[1]
    return bound
  end)
end

---------------------------------------------------------------------------
-- Servers

local Server = {}
Server.__index = Server
Server.__name = "pulsar.Server"
function Server.__tostring(s) return ("Server(%s%s)"):format(s.address, s._closed and ", closed" or "") end

local function abort_with(transport, what, err)
  log.error("%s: %s", what, tostring(err))
  transport:abort(what .. " failed")
end

-- A new connection on `server`: counted, given a protocol, told it is made.
local function accepted(server, transport)
  server.processed = server.processed + 1
  server.open = server.open + 1
  server.connections[transport] = true
  local ok, protocol = xpcall(server.protocol, debug.traceback)
  if not ok then return abort_with(transport, "the protocol factory", protocol) end
  if type(protocol) ~= "table" then
    return abort_with(transport, "the protocol factory", "it returned a " .. type(protocol) .. ", not a table")
  end
  transport:set_protocol(protocol)
  if protocol.connection_made then
    local made, err = xpcall(protocol.connection_made, debug.traceback, protocol, transport)
    if not made then return abort_with(transport, "connection_made", err) end
  end
  if server.on_accept then server.on_accept(server, transport) end
end

local function lost(server, transport)
  server.open = server.open - 1
  server.connections[transport] = nil
  if server.on_close then server.on_close(server, transport) end
  if server.open == 0 and server._idle then
    local waiting = server._idle
    server._idle = nil
    for _, f in ipairs(waiting) do if not f:done() then f:set_result(true) end end
  end
end

local function check_protocol(protocol, level)
  if type(protocol) ~= "function" then
    error("protocol must be a function returning a protocol table", level + 1)
  end
end

local function check_seconds(name, v, level)
  if v ~= nil and (type(v) ~= "number" or v < 0 or v ~= v) then
    error(name .. " must be a number of seconds from 0", level + 1)
  end
end

--- Accepts on listening descriptors (a bound socket's fds, or ones this
-- actor inherited): returns a Server at once. params: protocol (the
-- factory), keep_alive (seconds without traffic, a slow answer still going
-- out counting as traffic, before a connection is closed),
-- backlog, own (the descriptors are this server's to close),
-- on_accept(server, transport), on_close(server, transport).
function M.serve(fds, params)
  check_protocol(params.protocol, 2)
  check_seconds("keep_alive", params.keep_alive, 2)
  local server = setmetatable({
    protocol = params.protocol, on_accept = params.on_accept, on_close = params.on_close,
    keep_alive = params.keep_alive, processed = 0, open = 0, connections = {},
    fds = {}, addresses = {}, listeners = {},
  }, Server)
  local opts = {own = params.own, backlog = params.backlog or M.BACKLOG, keep_alive = params.keep_alive,
                on_lost = function(transport) lost(server, transport) end}
  local function on_accept(transport) accepted(server, transport) end
  for i, fd in ipairs(fds) do
    local listener, err = core.net_listen_fd(fd, on_accept, opts)
    if not listener then
      server:close()
      error(err, 2)
    end
    server.listeners[i], server.addresses[i], server.fds[i] = listener, listener.address, fd
  end
  server.address = server.addresses[1]
  return server
end

--- Stops accepting: its listening sockets close (a Unix socket's file is
-- removed by whoever bound it); open connections go on.
function Server:close()
  if self._closed then return end
  self._closed = true
  for _, listener in ipairs(self.listeners) do listener:close() end
  if self.sockets then for _, s in ipairs(self.sockets) do s:close() end end
end

function Server:closed() return self._closed == true end

--- The server no longer keeps its VM's loop alive, as a timer's unref:
-- it still accepts, but the program may end without waiting for it.
function Server:unref()
  for _, listener in ipairs(self.listeners) do listener:unref() end
end

--- A Future resolved once no connection is open.
function Server:wait_idle()
  local f = Future("the connections of " .. tostring(self.address) .. " to close")
  if self.open == 0 then f:set_result(true) return f end
  self._idle = self._idle or {}
  table.insert(self._idle, f)
  return f
end

--- Closes every open connection (flushing what each has queued).
function Server:close_connections()
  for transport in pairs(self.connections) do transport:close() end
end

--- A graceful stop: no more accepting; each open connection's protocol
-- is told through its server_stopping(self), if it has one, so that it
-- closes once what is in flight is done (an idle one at once); one without
-- is left to end by itself. A Future resolved once none is open.
function Server:shutdown()
  self:close()
  if self._shut then return self:wait_idle() end
  self._shut = true
  for transport in pairs(self.connections) do
    local protocol = transport:get_protocol()
    local hook = type(protocol) == "table" and protocol.server_stopping
    if hook then
      local ok, err = xpcall(hook, debug.traceback, protocol)
      if not ok then log.error("server_stopping: %s", err) end
    end
  end
  return self:wait_idle()
end

local function number_field(params, name)
  local v = params[name]
  if v ~= nil and math.type(v) ~= "integer" then error(name .. " must be a whole number", 3) end
  return v
end

--- pulsar.create_server{host=, port= | path= | bind=, protocol=, backlog=,
-- keep_alive=}: binds and serves; a Future of the Server (.address,
-- .addresses, .fds, .processed, .open, :close(), :wait_idle()). host nil
-- means every interface.
function M.create_server(params)
  if type(params) ~= "table" then error("create_server: parameters must be a table", 2) end
  check_protocol(params.protocol, 2)
  check_seconds("keep_alive", params.keep_alive, 2)
  local backlog = number_field(params, "backlog")
  if backlog and backlog < 1 then error("backlog must be at least 1", 2) end
  local endpoints
  if params.bind then
    endpoints = M.parse_bind(params.bind, 2)
  elseif params.path then
    if type(params.path) ~= "string" or params.path == "" then error("create_server: path must be a non-empty string", 2) end
    endpoints = {{path = params.path}}
  else
    local port = params.port
    if math.type(port) ~= "integer" or port < 0 or port > 65535 then
      error("create_server: port must be a whole number from 0 to 65535 (or give path or bind)", 2)
    end
    if params.host ~= nil and type(params.host) ~= "string" then error("create_server: host must be a string", 2) end
    endpoints = {{host = params.host, port = port}}
  end
  local bound = M.bind(endpoints, {backlog = backlog})
  return future.async(function()
    local sockets = bound:wait()
    local ok, server = pcall(M.serve, sockets.fds, {
      protocol = params.protocol, keep_alive = params.keep_alive, backlog = backlog,
      on_accept = params.on_accept, on_close = params.on_close})
    if not ok then sockets.close() error(server, 0) end
    server.sockets = sockets.sockets
    server.addresses = sockets.addresses
    server.address = sockets.address
    server.port = tonumber(server.address:match(":(%d+)$"))
    return server
  end)
end

---------------------------------------------------------------------------
-- Streams: the client's side

local Stream = {}
Stream.__index = Stream
Stream.__name = "pulsar.Stream"
function Stream.__tostring(s) return ("Stream(%s)"):format(s.peername or "?") end

local function settle(f, value, err)
  if f:done() then return end
  if err ~= nil then f:set_exception(err) else f:set_result(value) end
end

-- Takes up to n bytes (all with n nil) from the buffered chunks.
local function take(s, n)
  local chunks = s._chunks
  s._scanned = 0
  if n == nil or n >= s._size then
    local all = #chunks == 1 and chunks[1] or table.concat(chunks)
    s._chunks, s._size = {}, 0
    return all
  end
  local parts, got = {}, 0
  while got < n do
    local c = table.remove(chunks, 1)
    if got + #c > n then
      local want = n - got
      table.insert(chunks, 1, c:sub(want + 1))
      c = c:sub(1, want)
    end
    parts[#parts + 1] = c
    got = got + #c
  end
  s._size = s._size - got
  return table.concat(parts)
end

-- A whole line without its "\n"; nil if none is buffered yet; raises
-- past the limit (the bytes stay buffered).
local function take_line(s)
  if s._size == 0 then return nil end
  if #s._chunks > 1 then s._chunks = {table.concat(s._chunks)} end
  local buf = s._chunks[1]
  local nl = buf:find("\n", s._scanned + 1, true)
  if not nl then
    s._scanned = #buf
    if #buf > s.limit then
      error(("readline: line longer than %d bytes"):format(s.limit), 0)
    end
    return nil
  end
  if nl - 1 > s.limit then error(("readline: line longer than %d bytes"):format(s.limit), 0) end
  s._scanned = 0
  local line = buf:sub(1, nl - 1)
  if nl == #buf then s._chunks = {} else s._chunks[1] = buf:sub(nl + 1) end
  s._size = s._size - nl
  return line
end

-- Reading from the socket pauses while more than `limit` bytes wait.
local function check_buffer(s)
  local t = s.transport
  if not s._reading_paused and s._size > s.limit then
    s._reading_paused = true
    t:pause_reading()
  elseif s._reading_paused and s._size <= s.limit then
    s._reading_paused = false
    t:resume_reading()
  end
end

local function ended(s) return s._eof or s._lost end

-- Tries to satisfy the waiting read; true once it is settled.
local function serve_waiter(s)
  local w = s._waiter
  if not w then return end
  if w.line then
    local ok, line = pcall(take_line, s)
    if not ok then s._waiter = nil; return settle(w.future, nil, line) end
    if line == nil and ended(s) and s._size > 0 then line = take(s) end
    if line == nil and not ended(s) then return end
    s._waiter = nil
    settle(w.future, line, line == nil and s._error or nil)
  else
    if s._size == 0 and not ended(s) then return end
    s._waiter = nil
    if s._size > 0 then settle(w.future, take(s, w.n)) else settle(w.future, nil, s._error) end
  end
  check_buffer(s)
end

local function stream_protocol(s)
  return {
    data_received = function(_, data)
      s._chunks[#s._chunks + 1] = data
      s._size = s._size + #data
      serve_waiter(s)
      check_buffer(s)
    end,
    eof_received = function()
      s._eof = true
      serve_waiter(s)
      return true -- the caller may still write; close() ends it
    end,
    pause_writing = function() s._writing_paused = true end,
    resume_writing = function()
      s._writing_paused = false
      local waiting = s._drain
      s._drain = nil
      for _, f in ipairs(waiting or {}) do settle(f, true) end
    end,
    connection_lost = function(_, err)
      s._lost, s._error = true, err
      serve_waiter(s)
      for _, f in ipairs(s._drain or {}) do settle(f, nil, err or "connection closed") end
      s._drain = nil
      settle(s._closed, true)
    end,
  }
end

local function new_stream(transport, limit)
  local s = setmetatable({transport = transport, limit = limit, _chunks = {}, _size = 0,
                          _scanned = 0, _closed = Future("the close of a stream")}, Stream)
  transport:set_protocol(stream_protocol(s))
  s.peername = transport:get_extra_info("peername")
  s.sockname = transport:get_extra_info("sockname")
  return s
end

local function new_read(s, what, waiter)
  if s._waiter then error(what .. ": another read is already waiting on this stream", 3) end
  waiter.future = Future(what .. " from " .. tostring(s.peername))
  s._waiter = waiter
  serve_waiter(s)
  return waiter.future
end

--- A Future of the next bytes: up to n of them (all that are buffered
-- with n nil) as soon as there is at least one; nil at the end of the
-- stream (the peer closed or shut its side), or the connection's error.
function Stream:read(n)
  if n ~= nil and (math.type(n) ~= "integer" or n < 1) then error("read: n must be a whole number from 1", 2) end
  return new_read(self, "read", {n = n})
end

--- A Future of the next line, without its "\n" (a "\r" before it stays);
-- at the end of the stream the last bytes even without "\n", then nil. A
-- line longer than the stream's limit (64 KiB) fails with "readline: line
-- longer than N bytes"; its bytes stay buffered for read().
function Stream:readline()
  return new_read(self, "readline", {line = true})
end

--- Queues data (several strings go out in order); raises once closed.
-- Nothing is dropped: call drain() to let a slow peer catch up.
function Stream:write(...)
  local ok, err = self.transport:write(...)
  if not ok then error("write: " .. tostring(err), 2) end
  return true
end

--- A Future resolved once the write queue is below the low-water mark.
function Stream:drain()
  local f = Future("drain to " .. tostring(self.peername))
  if not self._writing_paused or self._lost then
    if self._lost then f:set_exception(self._error or "connection closed") else f:set_result(true) end
    return f
  end
  self._drain = self._drain or {}
  table.insert(self._drain, f)
  return f
end

--- Shuts our side once the queue is written; reading goes on.
function Stream:write_eof()
  local ok, err = self.transport:write_eof()
  if not ok then error("write_eof: " .. tostring(err), 2) end
end

--- Closes after writing what is queued.
function Stream:close() self.transport:close() end

--- A Future resolved once the connection is closed.
function Stream:wait_closed() return self._closed end

function Stream:is_closing() return self.transport:is_closing() end
function Stream:at_eof() return ended(self) and self._size == 0 end
function Stream:get_extra_info(name) return self.transport:get_extra_info(name) end

-- open_connection's arguments as {host=, port=} or {path=}, and options.
local function connection_target(a, b, level)
  if type(a) == "table" then
    if a.path then return {path = a.path}, a end
    if math.type(a.port) ~= "integer" then error("open_connection: port must be a whole number", level + 1) end
    return {host = a.host or "127.0.0.1", port = a.port}, a
  end
  if type(a) == "string" and b == nil then
    local ep, why = M.parse_address(a)
    if not ep then error("open_connection: " .. why, level + 1) end
    if not ep.path then ep.host = ep.host or "127.0.0.1" end
    return ep, {}
  end
  if type(a) ~= "string" then error("open_connection: host must be a string", level + 1) end
  local port = math.tointeger(tonumber(b))
  if not port or port < 0 or port > 65535 then
    error(("open_connection: port must be a whole number from 0 to 65535, not %s"):format(tostring(b)), level + 1)
  end
  return {host = a, port = port}, {}
end

local function connect_to(spec, limit, timeout)
  local f = Future("connecting")
  core.net_connect(spec, function(transport, err)
    if not transport then return f:set_exception(err) end
    f:set_result(new_stream(transport, limit))
  end, timeout)
  local ok, result = pcall(f.wait, f)
  if ok then return result end
  return nil, result
end

--- pulsar.open_connection(host, port), ("HOST:PORT"), ("unix:PATH") or
-- ({host=, port= | path=, limit=, timeout=}): a Future of a Stream.
-- `timeout` (seconds, default none) gives up an address that does not
-- answer by then; the kernel alone would retry for minutes.
function M.open_connection(a, b)
  local ep, opts = connection_target(a, b, 2)
  local limit = opts.limit or M.LIMIT
  if math.type(limit) ~= "integer" or limit < 1 then error("open_connection: limit must be a whole number from 1", 2) end
  local timeout = opts.timeout
  if timeout ~= nil and (type(timeout) ~= "number" or timeout <= 0) then
    error("open_connection: timeout must be a number of seconds above 0", 2)
  end
  return future.async(function()
    return each_address(ep, function(spec) return connect_to(spec, limit, timeout) end)
  end)
end

M.Server, M.Stream = Server, Stream

return M
