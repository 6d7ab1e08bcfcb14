--- pulsar.websocket: WebSocket (RFC 6455, with RFC 7692's permessage-deflate)
-- on pulsar's transports, the server side on HttpServer's connections and a
-- client (docs/API.md, "WebSocket").
--
--   -- in an HTTP handler (or router:websocket)
--   return websocket.upgrade(request, function(ws)
--     while true do
--       local message = ws:receive():wait()
--       if message == nil then break end          -- closed
--       ws:send(message, ws.last_kind):wait()     -- an echo
--     end
--   end)
--
--   local ws = websocket.connect("ws://127.0.0.1:8080/chat"):wait()
--
-- What lives where. The frames (masking, fragments, UTF-8, deflate, limits)
-- are the C codec's (core.ws_codec, host/codec/ws.c): every byte from a peer
-- goes through its bounded parser. This file does the rest, in Lua since it
-- is all decisions and no byte loops:
--   * the opening handshake, both sides: the server's checks of an upgrade
--     request (§4.2.1), the choice of a subprotocol and of
--     permessage-deflate's parameters (RFC 7692 §7.1), the client's request
--     and its checks of the 101;
--   * the WebSocket object, which is at once the connection's protocol for
--     pulsar.net (data_received...) and the user's `ws` (receive, send,
--     close): one table per connection, no layer between them;
--   * the closing handshake, and the ends that are not one.
-- pulsar.http (lua/pulsar/http.lua) knows nothing of WebSocket: a handler's
-- answer whose metatable is http.Upgrade makes it write the object's
-- `response` in its place in the pipeline and hand the transport to the
-- protocol that `make_protocol` returns.
--
-- Memory per connection is bounded both ways:
--   * in: the codec holds at most one message (max_message); messages read
--     and not yet taken by ws:receive() wait in an inbox, and reading from
--     the socket pauses while it holds more than max_pending messages or
--     pending_bytes bytes;
--   * out: ws:send writes at once (frames keep their order) and its Future
--     is done at once while the transport's queue is below its high-water
--     mark, else once it drains (resume_writing), so a sender that waits on
--     it goes at the pace of the reader. A sender that does not wait cannot
--     grow the queue past max_queue: past it the connection is aborted,
--     logged and closed with 1008 on our side.
--
-- How a connection ends (§7). The closing handshake: the side that closes
-- sends a close frame and waits for the peer's, at most close_timeout; the
-- side that receives one answers it with the same code and reason. Then the
-- server closes the TCP connection at once, the client waits for it to do
-- so. Each of these waits lasts close_timeout at most, after which the
-- connection is aborted, unsent bytes and all. A peer's bad bytes (the codec's
-- 1002, 1007, 1009) are answered with a close frame with that code and
-- reason; then our side is shut and what the peer still sends is dropped
-- until its EOF or close_timeout, for closing a socket with unread input
-- would reset it and could destroy the close frame before the peer reads
-- it. ws.closed gives the code: the one received, or the one we failed the
-- connection with, or 1006 when it ended without a close frame.
local core = require "pulsar.core"
local future = require "pulsar.future"
local http = require "pulsar.http"
local log = require "pulsar.log"

local Future = future.Future

local M = {
  MAX_MESSAGE = 16 * 1024 * 1024, -- bytes of one message (the codec's default)
  MAX_QUEUE = 16 * 1024 * 1024,   -- bytes queued for a peer before 1008
  MAX_PENDING = 64,               -- unread messages before reading pauses
  PENDING_BYTES = 1024 * 1024,    -- unread bytes before reading pauses
  CLOSE_TIMEOUT = 5,              -- seconds for the peer's part of a close
  MAX_HEAD = 64 * 1024,           -- bytes of the 101 a client reads
}

--- WebSocket connections open in this VM (worker info counts the server's).
M.open = 0

local UNSENT_CODES = {[1004] = true, [1005] = true, [1006] = true, [1015] = true}

-- Whether `code` may be sent in a close frame (§7.4): 1000-1003, 1007-1014
-- (IANA's registry), and 3000-4999 for libraries and applications.
local function sendable_code(code)
  if math.type(code) ~= "integer" then return false end
  if code >= 3000 and code <= 4999 then return true end
  return code >= 1000 and code <= 1014 and not UNSENT_CODES[code]
end

local function fail(message, level) error(message, (level or 1) + 1) end

---------------------------------------------------------------------------
-- Header values

local function trim(s) return (s:match("^%s*(.-)%s*$")) end

-- The comma-separated elements of a header value (RFC 9110 §5.6.1),
-- trimmed, empty ones dropped; lower case unless keep_case.
local function elements(value, keep_case)
  local list = {}
  for item in (value or ""):gmatch("[^,]+") do
    item = trim(item)
    if item ~= "" then list[#list + 1] = keep_case and item or item:lower() end
  end
  return list
end

local function has_element(value, wanted)
  for _, item in ipairs(elements(value)) do
    if item == wanted then return true end
  end
  return false
end

local TOKEN = "^[!#$%%&'*+%-.^_`|~%w]+$"

-- The offers of a Sec-WebSocket-Extensions value (RFC 6455 §9.1), in order:
-- {name=, params = {{name, value | nil}, ...}}; a quoted value is unquoted.
-- A malformed element is an offer named false, refused as unknown.
local function parse_extensions(value)
  local offers = {}
  for item in (value or ""):gmatch("[^,]+") do
    local parts = {}
    for part in (item .. ";"):gmatch("([^;]*);") do parts[#parts + 1] = trim(part) end
    local name = parts[1]:lower()
    local offer = {name = name:find(TOKEN) and name or false, params = {}}
    for i = 2, #parts do
      local key, v = parts[i]:match("^([^=%s]+)%s*=%s*(.*)$")
      key = (key or parts[i]):lower()
      if v then v = v:match('^"(.*)"$') or v end
      if not key:find(TOKEN) then offer.name = false end
      offer.params[#offer.params + 1] = {key, v}
    end
    if item:find("%S") then offers[#offers + 1] = offer end
  end
  return offers
end

---------------------------------------------------------------------------
-- permessage-deflate's parameters (RFC 7692 §7.1)

local WINDOW_BITS = {"server_max_window_bits", "client_max_window_bits"}
local NO_TAKEOVER = {"server_no_context_takeover", "client_no_context_takeover"}

local function window_bits(v)
  local bits = v and v:find("^%d%d?$") and tonumber(v)
  if bits and bits >= 8 and bits <= 15 then return bits end
  return nil
end

-- The parameters of one permessage-deflate element as a table, each once:
-- nil, why for a parameter unknown, repeated, or with a bad value. A window
-- size without a value (allowed for client_max_window_bits only) is true.
local function deflate_params(params)
  local seen = {}
  for _, p in ipairs(params) do
    local key, v = p[1], p[2]
    if seen[key] ~= nil then return nil, key .. " given twice" end
    if key == NO_TAKEOVER[1] or key == NO_TAKEOVER[2] then
      if v ~= nil then return nil, key .. " takes no value" end
      seen[key] = true
    elseif key == WINDOW_BITS[1] or key == WINDOW_BITS[2] then
      if v == nil and key == "client_max_window_bits" then
        seen[key] = true
      else
        seen[key] = window_bits(v)
        if not seen[key] then return nil, key .. " must be 8 to 15" end
      end
    else
      return nil, "unknown parameter " .. key
    end
  end
  return seen
end

-- The codec's deflate table from agreed parameters (15 for a size not set).
local function codec_deflate(p)
  return {
    server_no_context_takeover = p.server_no_context_takeover == true,
    client_no_context_takeover = p.client_no_context_takeover == true,
    server_max_window_bits = math.type(p.server_max_window_bits) == "integer" and p.server_max_window_bits or 15,
    client_max_window_bits = math.type(p.client_max_window_bits) == "integer" and p.client_max_window_bits or 15,
  }
end

-- The server's choice among the client's offers: the first permessage-deflate
-- offer whose parameters are good, accepted as it is (we can honour every
-- valid one); returns the codec's table and the answer's text, or nil when
-- none is acceptable (then the connection goes on uncompressed: a bad
-- offer declines the extension, it does not fail the handshake).
local function accept_deflate(header)
  for _, offer in ipairs(parse_extensions(header)) do
    if offer.name == "permessage-deflate" then
      local p, why = deflate_params(offer.params)
      if p then
        local answer = {"permessage-deflate"}
        for _, key in ipairs(NO_TAKEOVER) do
          if p[key] then answer[#answer + 1] = key end
        end
        for _, key in ipairs(WINDOW_BITS) do
          if math.type(p[key]) == "integer" then answer[#answer + 1] = key .. "=" .. p[key] end
        end
        return codec_deflate(p), table.concat(answer, "; ")
      end
      log.debug("permessage-deflate offer declined: %s", why)
    end
  end
  return nil
end

-- What a client offers: any window size for its own compressor.
local CLIENT_OFFER = "permessage-deflate; client_max_window_bits"

-- The client's check of the server's answer to CLIENT_OFFER: the codec's
-- table, nil for no extension, or raises naming what is wrong.
local function agreed_deflate(header)
  local answers = parse_extensions(header)
  if #answers == 0 then return nil end
  if #answers > 1 or answers[1].name ~= "permessage-deflate" then
    error(("the server answered with extensions not offered: %q"):format(header), 0)
  end
  local p, why = deflate_params(answers[1].params)
  if not p then error("the server's permessage-deflate answer is bad: " .. why, 0) end
  if p.client_max_window_bits == true then
    error("the server's permessage-deflate answer is bad: client_max_window_bits needs a value", 0)
  end
  return codec_deflate(p)
end

---------------------------------------------------------------------------
-- The WebSocket object: a connection's protocol and the user's `ws`

local WebSocket = {}
WebSocket.__index = WebSocket
WebSocket.__name = "pulsar.WebSocket"
WebSocket.is_websocket = true -- how worker info tells a WebSocket's connections
M.WebSocket = WebSocket

function WebSocket.__tostring(ws)
  return ("WebSocket(%s, %s)"):format(ws.peername or "?", ws.state)
end

-- A Future done from the start: what ws:send returns while the writes keep
-- up, shared since nothing can change it (set_result on it would raise).
local SENT = Future("a frame queued")
SENT:set_result(true)

local function failed(label, err)
  local f = Future(label)
  f:set_exception(err)
  return f
end

local function new_websocket(role, codec, fields, opts)
  local ws = setmetatable({
    role = role, codec = codec, state = "connecting", last_kind = nil,
    closed = Future("the close of a WebSocket"),
    max_queue = opts.max_queue or M.MAX_QUEUE,
    max_pending = opts.max_pending or M.MAX_PENDING,
    pending_bytes = opts.pending_bytes or M.PENDING_BYTES,
    close_timeout = opts.close_timeout or M.CLOSE_TIMEOUT,
    _out = {},                              -- codec:feed's list, reused
    _inbox = {}, _ifirst = 1, _ilast = 0,   -- kind, payload, kind, payload...
    _ibytes = 0,
    _senders = nil,                         -- Futures of sends waiting for room
  }, WebSocket)
  for k, v in pairs(fields) do ws[k] = v end
  return ws
end

function WebSocket:connection_made(transport)
  self.transport = transport
  self.peername = transport:get_extra_info("peername")
  -- the labels of its Futures, made once: a receive is made per message
  self._receive_label = "a message from " .. tostring(self.peername)
  self._send_label = "room to send to " .. tostring(self.peername)
  self.state = "open"
  M.open = M.open + 1
  if self._handler then self:_run_handler() end
end

-- Starts the server's handler in a task; once it returns the connection is
-- closed (1000), once it raises, logged and closed with 1011.
function WebSocket:_run_handler()
  local task = future.async(self._handler, self)
  task:add_done_callback(function(t)
    if not t:failed() then return self:_end(1000, "") end
    local err = t:exception()
    if self.state == "closed" and tostring(err):find("^websocket: ") then
      log.debug("WebSocket handler for %s: %s", self.request.path, tostring(err))
    else
      log.error("WebSocket handler for %s failed: %s", self.request.path,
                t:traceback() or tostring(err))
    end
    self:_end(1011, "internal error")
  end)
end

-- The handler is done: close if nothing else has.
function WebSocket:_end(code, reason)
  if self.state == "open" then self:close(code, reason) end
end

---------------------------------------------------------------------------
-- Reading

-- The peer's bytes: decoded, messages to the inbox (or the waiting
-- receive), pings answered, a close frame answered.
function WebSocket:data_received(data)
  if self._failed or self.state == "closed" or self._peer_closed then return end
  local out = self._out
  local n, code, reason = self.codec:feed(data, out)
  if not n then
    for k in pairs(out) do out[k] = nil end
    return self:_fail(code, reason)
  end
  for i = 1, n do
    local kind, payload = out[2 * i - 1], out[2 * i]
    out[2 * i - 1], out[2 * i] = nil, nil
    if kind == "text" or kind == "binary" then
      self:_deliver(kind, payload)
    elseif kind == "ping" then
      if self.state == "open" then self:_write(self.codec:encode("pong", payload)) end
    elseif kind == "close" then
      self:_close_received(self.codec:close_code(), payload)
    end -- a pong needs nothing
  end
  self:_throttle()
end

-- A message for the user: to the receive waiting for it, else queued.
function WebSocket:_deliver(kind, payload)
  local waiter = self._waiter
  self._waiter = nil
  if waiter and not waiter:done() then -- done: cancelled by its owner
    self.last_kind = kind
    return waiter:set_result(payload)
  end
  local inbox = self._inbox
  inbox[self._ilast + 1], inbox[self._ilast + 2] = kind, payload
  self._ilast = self._ilast + 2
  self._ibytes = self._ibytes + #payload
end

-- Reads while the inbox has room and the connection is not ending.
function WebSocket:_throttle()
  if self:_ended() then return end -- reading goes on to the end, to see the EOF
  local unread = (self._ilast - self._ifirst + 1) // 2
  local room = unread < self.max_pending and self._ibytes < self.pending_bytes
  if room and self._read_paused then
    self._read_paused = false
    self.transport:resume_reading()
  elseif not room and not self._read_paused then
    self._read_paused = true
    self.transport:pause_reading()
  end
end

-- No more messages will come: the connection is closed, or the peer has
-- sent its close frame, or its bytes were bad.
function WebSocket:_ended()
  return self.state == "closed" or self._peer_closed or self._failed
end

--- A Future of the next message (a string; ws.last_kind says "text" or
-- "binary"), nil once no more will come. While one is pending, receive()
-- gives that same Future: a wait that timed out loses no message.
function WebSocket:receive()
  local waiter = self._waiter
  if waiter and not waiter:done() then return waiter end
  local f = Future(self._receive_label)
  if self._ifirst <= self._ilast then
    local inbox, i = self._inbox, self._ifirst
    local kind, payload = inbox[i], inbox[i + 1]
    inbox[i], inbox[i + 1] = nil, nil
    self._ifirst = i + 2
    if self._ifirst > self._ilast then self._ifirst, self._ilast = 1, 0 end
    self._ibytes = self._ibytes - #payload
    self.last_kind = kind
    f:set_result(payload)
    self:_throttle()
  elseif self:_ended() then
    f:set_result(nil)
  else
    self._waiter = f
  end
  return f
end

---------------------------------------------------------------------------
-- Writing

-- Writes a frame unless the queue is already past max_queue: then the
-- peer is not reading, and the connection goes (1008) instead of memory.
-- Returns true when written.
function WebSocket:_write(frame)
  local transport = self.transport
  local queued = transport:get_write_buffer_size()
  if queued > self.max_queue then
    self:_overflow(queued)
    return false
  end
  transport:write(frame)
  return true
end

function WebSocket:_overflow(queued)
  log.warning("WebSocket %s closed (1008): %d bytes queued and the peer does not read them",
              tostring(self.peername), queued)
  self:_set_close(1008, ("over %d bytes queued for a peer that does not read"):format(self.max_queue))
  self.transport:abort("WebSocket write queue over its bound")
end

local function check_kind(kind)
  if kind == nil or kind == "text" or kind == "binary" then return kind or "text" end
  fail(("ws:send: kind must be \"text\" or \"binary\", not %s"):format(tostring(kind)), 3)
end

--- Sends a message: text (checked to be UTF-8) or, with "binary", bytes.
-- A Future done once the frame is queued below the transport's high-water
-- mark; failing with "websocket: closed (CODE ...)" once the connection
-- is ending.
function WebSocket:send(data, kind)
  kind = check_kind(kind)
  if type(data) == "number" then data = tostring(data) end
  if type(data) ~= "string" then fail("ws:send: data must be a string, not a " .. type(data), 2) end
  if kind == "text" and not utf8.len(data) then
    fail("ws:send: the text is not valid UTF-8 (send it as \"binary\")", 2)
  end
  if self.state ~= "open" then return failed("a send", self:_closed_error()) end
  if not self:_write(self.codec:encode(kind, data)) then
    return failed("a send", self:_closed_error())
  end
  if not self._write_paused then return SENT end
  local f = Future(self._send_label)
  local senders = self._senders or {}
  self._senders = senders
  senders[#senders + 1] = f
  return f
end

--- Sends a ping (a pong comes back; nothing waits for it). The send's Future.
function WebSocket:ping(data)
  data = data or ""
  if type(data) ~= "string" or #data > 125 then fail("ws:ping: data must be a string of 125 bytes at most", 2) end
  if self.state ~= "open" then return failed("a ping", self:_closed_error()) end
  if not self:_write(self.codec:encode("ping", data)) then return failed("a ping", self:_closed_error()) end
  return SENT
end

function WebSocket:_closed_error()
  return ("websocket: closed (%s %s)"):format(tostring(self.close_code or "closing"), self.close_reason or "")
end

-- The senders waiting for room, told `err` (nil: there is room).
function WebSocket:_wake_senders(err)
  local senders = self._senders
  self._senders = nil
  for _, f in ipairs(senders or {}) do
    if not f:done() then
      if err then f:set_exception(err) else f:set_result(true) end
    end
  end
end

function WebSocket:pause_writing() self._write_paused = true end

function WebSocket:resume_writing()
  self._write_paused = false
  self:_wake_senders()
end

---------------------------------------------------------------------------
-- Closing

function WebSocket:_set_close(code, reason)
  if self.close_code then return end
  self.close_code, self.close_reason = code, reason
end

local function check_close(code, reason)
  if code ~= nil and not sendable_code(code) then
    fail(("ws:close: code %s cannot be sent (1000-1003, 1007-1014 or 3000-4999)"):format(tostring(code)), 3)
  end
  reason = reason or ""
  if type(reason) ~= "string" then fail("ws:close: reason must be a string", 3) end
  if #reason > 123 then fail("ws:close: reason must be 123 bytes at most", 3) end
  if code == nil and reason ~= "" then fail("ws:close: a reason needs a code", 3) end
  return reason
end

--- Starts the closing handshake (code default 1000); returns ws.closed.
-- The peer has close_timeout seconds to answer before the TCP connection
-- is closed all the same.
function WebSocket:close(code, reason)
  if code == nil and reason == nil then code = 1000 end
  reason = check_close(code, reason)
  if self.state == "open" then
    self.state = "closing"
    self:_wake_senders(self:_closed_error())
    self:_write(self.codec:encode("close", reason, code))
    self:_deadline()
  end
  return self.closed
end

-- The peer's close frame: answered with its code and reason if we had
-- not closed, then the TCP connection ends (see the head of this file).
function WebSocket:_close_received(code, reason)
  self._peer_closed = true
  self:_set_close(code or 1005, reason or "")
  if self.state == "open" then
    self.state = "closing"
    self:_wake_senders(self:_closed_error())
    if code then self:_write(self.codec:encode("close", reason, code))
    else self:_write(self.codec:encode("close", "")) end
  end
  self:_wake_receiver()
  self:_stop_timer()
  if self._read_paused then -- nothing more is decoded: reading only sees the end
    self._read_paused = false
    self.transport:resume_reading()
  end
  if self.role == "server" then self.transport:close() end -- the client waits for it
  self:_deadline()
end

-- The peer's bytes were bad: a close frame saying why, our side shut, and
-- what the peer still sends dropped until its EOF or close_timeout.
function WebSocket:_fail(code, reason)
  log.debug("WebSocket %s failed (%d): %s", tostring(self.peername), code, reason)
  self._failed = true
  self:_set_close(code, reason)
  if self.state == "open" then
    self.state = "closing"
    self:_wake_senders(self:_closed_error())
    self:_write(self.codec:encode("close", reason:sub(1, 123), code))
  end
  self:_wake_receiver()
  self.transport:write_eof()
  if self._read_paused then
    self._read_paused = false
    self.transport:resume_reading()
  end
  self:_deadline()
end

-- The receive waiting gets nil once no more messages will come.
function WebSocket:_wake_receiver()
  local waiter = self._waiter
  if waiter and self._ifirst > self._ilast then
    self._waiter = nil
    if not waiter:done() then waiter:set_result(nil) end
  end
end

-- The connection ends within close_timeout, else it is aborted with
-- whatever is still queued: a peer that neither answers nor reads cannot
-- keep it.
function WebSocket:_deadline()
  if self._timer then return end
  self._timer = core.timer(self.close_timeout, function()
    self._timer = nil
    if self.state == "closed" then return end
    log.debug("WebSocket %s: no end of the close within %g s", tostring(self.peername), self.close_timeout)
    self.transport:abort(("the close did not end within %g s"):format(self.close_timeout))
  end)
end

function WebSocket:_stop_timer()
  if self._timer then self._timer:cancel() end
  self._timer = nil
end

--- The peer shut its side: the end, whatever was under way.
function WebSocket:eof_received()
  return false
end

--- A graceful stop of the server: 1001, "going away".
function WebSocket:server_stopping()
  if self.state == "open" then self:close(1001, "going away") end
end

function WebSocket:connection_lost(err)
  if self.state == "closed" then return end
  if self.state ~= "connecting" then M.open = M.open - 1 end
  self.state = "closed"
  self:_stop_timer()
  self:_set_close(1006, err and tostring(err) or "the connection ended without a close frame")
  self:_wake_senders(self:_closed_error())
  self:_wake_receiver()
  self.closed:set_result(self.close_code)
end

---------------------------------------------------------------------------
-- The server's handshake (RFC 6455 §4.2)

local SERVER_OPTS = {max_message = "integer", max_queue = "integer", max_pending = "integer",
                     pending_bytes = "integer", close_timeout = "number",
                     protocols = "table", deflate = "boolean"}

local function check_opts(opts, allowed, what)
  if opts == nil then return {} end
  if type(opts) ~= "table" then fail(what .. ": opts must be a table", 3) end
  for key, v in pairs(opts) do
    local kind = allowed[key]
    if not kind then fail(("%s: unknown option %s"):format(what, tostring(key)), 3) end
    local ok
    if kind == "integer" then ok = math.type(v) == "integer" and v >= 1
    elseif kind == "number" then ok = type(v) == "number" and v > 0 and v == v
    else ok = type(v) == kind end
    if not ok then
      fail(("%s: %s must be %s"):format(what, key, kind == "integer" and "a whole number from 1"
           or kind == "number" and "a number above 0" or "a " .. kind), 3)
    end
  end
  for _, p in ipairs(opts.protocols or {}) do
    if type(p) ~= "string" or not p:find(TOKEN) then
      fail(("%s: protocols must be a list of tokens, not %s"):format(what, tostring(p)), 3)
    end
  end
  return opts
end

-- A refusal, as the handler's answer.
local function refuse(status, reason, headers)
  return status, headers or {}, "bad WebSocket upgrade: " .. reason .. "\n"
end

local VERSION_HEADERS = {["Sec-WebSocket-Version"] = "13"}
local UPGRADE_HEADERS = {Upgrade = "websocket", ["Sec-WebSocket-Version"] = "13"}
local KEY = "^[A-Za-z0-9+/]" .. ("[A-Za-z0-9+/]"):rep(21) .. "==$"

-- Why `request` is not a valid opening handshake, with the status and
-- headers to answer; nil when it is one.
local function handshake_problem(request)
  local h = request.headers
  if not has_element(h.upgrade, "websocket") then
    return 426, "the request does not ask for one (no Upgrade: websocket)", UPGRADE_HEADERS
  end
  if request.method ~= "GET" then return 400, "the method must be GET, not " .. request.method end
  if request.version ~= "HTTP/1.1" then return 400, "HTTP/1.1 needed, not " .. tostring(request.version) end
  if not has_element(h.connection, "upgrade") then return 400, "Connection does not contain upgrade" end
  local version = h["sec-websocket-version"]
  if version == nil then return 400, "no Sec-WebSocket-Version", VERSION_HEADERS end
  if trim(version) ~= "13" then
    return 426, ("Sec-WebSocket-Version must be 13, not %q"):format(version), VERSION_HEADERS
  end
  local key = h["sec-websocket-key"]
  if key == nil then return 400, "no Sec-WebSocket-Key" end
  if not trim(key):find(KEY) then return 400, "Sec-WebSocket-Key is not 16 bytes in base64" end
  return nil
end

-- The server's pick among the client's subprotocols: its own first choice
-- the client offers (tokens are case-sensitive), or nil.
local function choose_protocol(header, ours)
  if not ours or not header then return nil end
  local offered = {}
  for _, p in ipairs(elements(header, true)) do offered[p] = true end
  for _, p in ipairs(ours) do
    if offered[p] then return p end
  end
  return nil
end

local function switching_response(accept, protocol, extensions)
  local parts = {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
                 "Sec-WebSocket-Accept: ", accept, "\r\n"}
  if protocol then parts[#parts + 1] = "Sec-WebSocket-Protocol: " .. protocol .. "\r\n" end
  if extensions then parts[#parts + 1] = "Sec-WebSocket-Extensions: " .. extensions .. "\r\n" end
  parts[#parts + 1] = "Date: " .. http.date() .. "\r\nServer: " .. http.SERVER .. "\r\n\r\n"
  return table.concat(parts)
end

-- The protocol an accepted upgrade hands the connection to (called by
-- pulsar.http once the 101 is written). defaults.max_message is the
-- server's ws_max_message.
local function make_protocol(upgrade, defaults)
  local opts = upgrade.opts
  local max_message = opts.max_message or (defaults and defaults.max_message) or M.MAX_MESSAGE
  local codec = core.ws_codec{role = "server", max_message = max_message, deflate = upgrade.deflate}
  return new_websocket("server", codec, {
    request = upgrade.request, subprotocol = upgrade.protocol, extensions = upgrade.extensions,
    max_message = max_message, _handler = upgrade.handler,
  }, opts)
end

--- websocket.upgrade(request, handler [, opts]): what an HTTP handler
-- returns to accept a WebSocket. For a valid opening handshake, an upgrade
-- object (pulsar.http writes its 101 and runs handler(ws) in a task); for
-- a bad one, 400 (426 without Upgrade: websocket, or another version),
-- headers and "bad WebSocket upgrade: REASON". opts: max_message (bytes;
-- default the server's ws_max_message), protocols (subprotocols, our
-- preference first), deflate (false: never compress), max_queue,
-- max_pending, pending_bytes, close_timeout (see the head of this file).
function M.upgrade(request, handler, opts)
  if type(request) ~= "table" or type(request.headers) ~= "table" then
    fail("websocket.upgrade: request must be the handler's request", 2)
  end
  if type(handler) ~= "function" then fail("websocket.upgrade: handler must be a function(ws)", 2) end
  opts = check_opts(opts, SERVER_OPTS, "websocket.upgrade")
  local status, why, headers = handshake_problem(request)
  if status then
    log.debug("WebSocket upgrade of %s refused (%d): %s", request.path, status, why)
    return refuse(status, why, headers)
  end
  local h = request.headers
  local protocol = choose_protocol(h["sec-websocket-protocol"], opts.protocols)
  local deflate, extensions
  if opts.deflate ~= false then deflate, extensions = accept_deflate(h["sec-websocket-extensions"]) end
  return setmetatable({
    response = switching_response(core.ws_accept(trim(h["sec-websocket-key"])), protocol, extensions),
    make_protocol = make_protocol,
    request = request, handler = handler, opts = opts,
    protocol = protocol, deflate = deflate, extensions = extensions,
  }, http.Upgrade)
end

---------------------------------------------------------------------------
-- The client (RFC 6455 §4.1)

local CLIENT_OPTS = {headers = "table", timeout = "number", max_message = "integer",
                     protocols = "table", deflate = "boolean", max_queue = "integer",
                     max_pending = "integer", pending_bytes = "integer", close_timeout = "number"}

-- Headers the handshake writes itself.
local OWN_HEADERS = {host = true, upgrade = true, connection = true, ["sec-websocket-key"] = true,
                     ["sec-websocket-version"] = true, ["sec-websocket-extensions"] = true,
                     ["sec-websocket-protocol"] = true}

-- {host=, port=, path=, authority=} of a ws:// URL; raises for another.
local function parse_url(url)
  if type(url) ~= "string" then fail("websocket.connect: url must be a string", 3) end
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  scheme = scheme and scheme:lower()
  if scheme == "wss" then fail(("websocket.connect %s: wss: not supported until TLS"):format(url), 3) end
  if scheme ~= "ws" then fail(("websocket.connect %s: the URL must begin with ws://"):format(url), 3) end
  local authority, path = rest:match("^([^/?#]*)(.*)$")
  path = path:gsub("#.*$", "")
  if path == "" then path = "/" elseif path:sub(1, 1) == "?" then path = "/" .. path end
  if path:find("[%s%c]") then fail(("websocket.connect %s: the path holds spaces or control characters"):format(url), 3) end
  local host, port = authority:match("^%[([%x:.]+)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:@]+):?(%d*)$") end
  port = tonumber(port ~= "" and port or "80")
  if not host or host == "" or not port or port < 1 or port > 65535 then
    fail(("websocket.connect %s: no host and port in the URL"):format(url), 3)
  end
  return {host = host, port = math.tointeger(port), path = path, authority = authority}
end

local function handshake_request(target, key, opts)
  local parts = {"GET ", target.path, " HTTP/1.1\r\nHost: ", target.authority,
                 "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ", key,
                 "\r\nSec-WebSocket-Version: 13\r\n"}
  if opts.deflate ~= false then parts[#parts + 1] = "Sec-WebSocket-Extensions: " .. CLIENT_OFFER .. "\r\n" end
  if opts.protocols and #opts.protocols > 0 then
    parts[#parts + 1] = "Sec-WebSocket-Protocol: " .. table.concat(opts.protocols, ", ") .. "\r\n"
  end
  for name, value in pairs(opts.headers or {}) do
    if type(name) ~= "string" or not name:find(TOKEN) then
      fail(("websocket.connect: header name %q is not a token"):format(tostring(name)), 3)
    end
    if OWN_HEADERS[name:lower()] then
      fail(("websocket.connect: header %s is the handshake's own"):format(name), 3)
    end
    value = tostring(value)
    if value:find("[\r\n%z]") then fail(("websocket.connect: header %s holds CR, LF or NUL"):format(name), 3) end
    parts[#parts + 1] = name .. ": " .. value .. "\r\n"
  end
  parts[#parts + 1] = "\r\n"
  return table.concat(parts)
end

-- Waits on f until the deadline (core.hrtime() seconds, or none); a
-- timeout raises "timed out after N s WHAT".
local function wait_until(f, deadline, timeout, what)
  if not deadline then return f:wait() end
  local left = deadline - core.hrtime()
  local ok, result = pcall(f.wait, f, math.max(left, 0))
  if ok then return result end
  if not f:done() and tostring(result):find("^timed out") then
    error(("timed out after %g s %s"):format(timeout, what), 0)
  end
  error(result, 0)
end

-- The head of the server's answer (up to its blank line) and the bytes
-- after it, read with at most MAX_HEAD bytes.
local function read_head(stream, deadline, timeout)
  local buffer = ""
  while true do
    local data = wait_until(stream:read(), deadline, timeout, "waiting for the handshake's answer")
    if not data then
      error(buffer == "" and "the server closed the connection without answering"
            or "the server closed the connection in the middle of its answer", 0)
    end
    buffer = buffer .. data
    local e = buffer:find("\r\n\r\n", 1, true)
    if e and e + 3 <= M.MAX_HEAD then return buffer:sub(1, e + 1), buffer:sub(e + 4) end
    if #buffer > M.MAX_HEAD then error(("not a WebSocket server: no answer's head within %d bytes"):format(M.MAX_HEAD), 0) end
  end
end

-- The status and the headers (lower-case names, repeats joined by ", ")
-- of an answer's head; raises for what is not HTTP.
local function parse_head(head)
  local status, reason = head:match("^HTTP/1%.1 (%d%d%d) ?([^\r\n]*)\r\n")
  if not status then
    error(("not a WebSocket server: the answer is not HTTP/1.1 (%q)"):format(head:sub(1, 40)), 0)
  end
  local headers = {}
  for line in head:gmatch("\r\n([^\r\n]+)") do
    local name, value = line:match("^([^:%s]+):%s*(.-)%s*$")
    if not name then error(("the answer has a malformed header line %q"):format(line:sub(1, 60)), 0) end
    name = name:lower()
    headers[name] = headers[name] and headers[name] .. ", " .. value or value
  end
  return tonumber(status), reason, headers
end

-- The checks of §4.1 on the server's answer; returns the codec's deflate
-- table and the subprotocol.
local function check_answer(status, reason, headers, key, opts)
  if status ~= 101 then
    error(("not a WebSocket server: it answered %d %s"):format(status, reason), 0)
  end
  if not has_element(headers.upgrade, "websocket") then
    error("the answer's Upgrade is not websocket", 0)
  end
  if not has_element(headers.connection, "upgrade") then
    error("the answer's Connection does not contain upgrade", 0)
  end
  local accept, expected = headers["sec-websocket-accept"], core.ws_accept(key)
  if accept ~= expected then
    error(("the answer's Sec-WebSocket-Accept is %s, not %s"):format(
      accept and ("%q"):format(accept) or "missing", expected), 0)
  end
  local deflate
  if headers["sec-websocket-extensions"] then
    if opts.deflate == false then
      error(("the server answered with extensions not offered: %q"):format(headers["sec-websocket-extensions"]), 0)
    end
    deflate = agreed_deflate(headers["sec-websocket-extensions"])
  end
  local protocol = headers["sec-websocket-protocol"]
  if protocol then
    local offered = false
    for _, p in ipairs(opts.protocols or {}) do offered = offered or p == protocol end
    if not offered then error(("the server chose a subprotocol not offered: %q"):format(protocol), 0) end
  end
  return deflate, protocol
end

-- Hands the stream's transport to the client WebSocket, with what the
-- stream had read past the 101.
local function take_over(stream, ws, rest)
  local transport = stream.transport
  if stream._lost then error("the server closed the connection after its answer", 0) end
  local buffered = table.concat(stream._chunks)
  stream._chunks, stream._size = {}, 0
  transport:set_protocol(ws)
  ws:connection_made(transport)
  if stream._reading_paused then transport:resume_reading() end
  rest = rest .. buffered
  if rest ~= "" then ws:data_received(rest) end
  if stream._eof and not ws:eof_received() then transport:close() end
end

local function client_handshake(target, key, request, opts)
  local timeout = opts.timeout
  local deadline = timeout and core.hrtime() + timeout
  local stream = wait_until(require("pulsar.net").open_connection{
    host = target.host, port = target.port, timeout = timeout, limit = M.MAX_HEAD},
    deadline, timeout, "connecting")
  local ok, result = pcall(function()
    stream:write(request)
    local head, rest = read_head(stream, deadline, timeout)
    local status, reason, headers = parse_head(head)
    local deflate, protocol = check_answer(status, reason, headers, key, opts)
    local max_message = opts.max_message or M.MAX_MESSAGE
    local ws = new_websocket("client", core.ws_codec{role = "client", max_message = max_message,
                                                      deflate = deflate}, {
      subprotocol = protocol, extensions = headers["sec-websocket-extensions"],
      response = {status = status, headers = headers}, max_message = max_message,
    }, opts)
    take_over(stream, ws, rest)
    return ws
  end)
  if not ok then stream:close() error(result, 0) end
  return result
end

--- websocket.connect(url [, opts]): a Future of a client WebSocket, with
-- the server's methods. url: ws://host[:port][/path][?query]. opts:
-- headers (added to the handshake), timeout (seconds for the connection
-- and the handshake), max_message, protocols (subprotocols to offer; the
-- chosen one is ws.subprotocol), deflate (false: do not offer
-- permessage-deflate), max_queue, max_pending, pending_bytes,
-- close_timeout. A failure names the URL and what went wrong.
function M.connect(url, opts)
  local target = parse_url(url)
  opts = check_opts(opts, CLIENT_OPTS, "websocket.connect")
  local key = core.ws_key()
  local request = handshake_request(target, key, opts)
  return future.async(function()
    local ok, result = pcall(client_handshake, target, key, request, opts)
    if not ok then error(("websocket.connect %s: %s"):format(url, tostring(result)), 0) end
    return result
  end)
end

return M
