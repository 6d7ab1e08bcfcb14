--- pulsar.http: HTTP/1.1 served over pulsar's transports, the protocol of
-- pulsar.apps.HttpServer (lua/pulsar/apps/http.lua).
--
-- Three layers, each usable alone:
--   * pure functions: `unescape`, `parse_query`, `reason`, `date`,
--     `response` (a whole response as one string);
--   * `request(raw)`: a parsed request (core.http_parser, host/bind/lhttp.c) made
--     into what a handler receives: path decoded, query as a table;
--   * `protocol(handler, opts)`: a protocol factory for pulsar's transports
--     (docs/API.md §2, Networking): one protocol table per connection, which
--     parses what arrives, runs the handler of each request in a task of its
--     own, and writes the responses in request order.
--
-- A handler gets {method=, path=, query=, headers=, body=, target=,
-- query_string=, version=} and returns `status, headers, body`, or
-- `status, body` (a second value that is a table is headers), or a body
-- alone (status 200), or nothing (200, empty).
-- A handler may also take the connection over: an upgrade object as its
-- answer (pulsar.websocket.upgrade) is written as its 101 in its place and
-- the connection handed to another protocol (see "Switching protocols").
-- It runs in a task, so it may wait on Futures; a Lua error in it answers
-- 500 and logs the traceback; the connection and the worker go on. With
-- `handler_timeout`, one that has not answered by then is answered 503 in
-- its turn (the answers of later requests still wait for it), the timeout
-- is logged, its task is cancelled and whatever it returns later dropped.
--
-- Bad input (core.http_parser: RFC 9112's grammar and framing rules, and
-- the limits) is answered 4xx, or 501 for a transfer coding other than
-- chunked, after the answers of the requests before it, and the connection
-- closed.
--
-- Per connection, memory is bounded: the parser's limits bound each request,
-- at most `pipeline` requests are in flight (the others read wait, and
-- reading pauses), and nothing is written nor dispatched while the
-- transport's write buffer is above its high-water mark (pause_writing),
-- so a client that never reads its responses stops being read instead of
-- growing the buffer (see "The protocol" below).
--
-- Cost: a request is a task (future.run: a pooled coroutine, and no
-- Future unless the handler waits); the common response (no headers from
-- the handler) is one concatenation of cached pieces.
--
-- How a connection ends. The server closes it after a response that says
-- Connection: close (bad input, the client's wish, a graceful stop). It
-- does so as a lingering close: our side is shut (the peer reads what was
-- sent, then EOF) and what the peer still sends is read and dropped until
-- its EOF or `linger` seconds, for closing a socket with unread input
-- would reset the connection and could destroy the response before the
-- peer reads it (a 413 while the body is still coming, a 414 in the middle
-- of a megabyte). The transport's idle timeout (the server's keep_alive)
-- counts only between requests: it is lifted while a handler runs.
local core = require "pulsar.core"
local future = require "pulsar.future"
local log = require "pulsar.log"

local M = {}

---------------------------------------------------------------------------
-- The batteries, each in a module of its own, loaded when first used: the
-- client (lua/pulsar/httpclient.lua), the router and its static files
-- (router.lua, static.lua), WebSocket (websocket.lua).

--- pulsar.http.request{method=, url=, headers=, body=, timeout=}: a Future
-- of {status=, headers=, body=}.
function M.request(params) return require("pulsar.httpclient").request(params) end
--- pulsar.http.get(url [, opts]): request{method = "GET", url = url, ...}.
function M.get(url, opts) return require("pulsar.httpclient").get(url, opts) end
--- pulsar.http.Router(): routes, middleware and static files for HttpServer.
function M.Router(...) return require("pulsar.router").Router(...) end
--- pulsar.http.websocket(url [, opts]): a Future of a client WebSocket.
function M.websocket(url, opts) return require("pulsar.websocket").connect(url, opts) end

M.SERVER = "pulsar-lua/" .. core.versions().pulsar

---------------------------------------------------------------------------
-- Names and dates

local REASONS = {
  [100] = "Continue", [101] = "Switching Protocols",
  [200] = "OK", [201] = "Created", [202] = "Accepted",
  [203] = "Non-Authoritative Information", [204] = "No Content",
  [205] = "Reset Content", [206] = "Partial Content",
  [300] = "Multiple Choices", [301] = "Moved Permanently", [302] = "Found",
  [303] = "See Other", [304] = "Not Modified", [307] = "Temporary Redirect",
  [308] = "Permanent Redirect",
  [400] = "Bad Request", [401] = "Unauthorized", [402] = "Payment Required",
  [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed",
  [406] = "Not Acceptable", [407] = "Proxy Authentication Required",
  [408] = "Request Timeout", [409] = "Conflict", [410] = "Gone",
  [411] = "Length Required", [412] = "Precondition Failed",
  [413] = "Content Too Large", [414] = "URI Too Long",
  [415] = "Unsupported Media Type", [416] = "Range Not Satisfiable",
  [417] = "Expectation Failed", [418] = "I'm a teapot",
  [421] = "Misdirected Request", [422] = "Unprocessable Content",
  [425] = "Too Early", [426] = "Upgrade Required",
  [428] = "Precondition Required", [429] = "Too Many Requests",
  [431] = "Request Header Fields Too Large",
  [451] = "Unavailable For Legal Reasons",
  [500] = "Internal Server Error", [501] = "Not Implemented",
  [502] = "Bad Gateway", [503] = "Service Unavailable",
  [504] = "Gateway Timeout", [505] = "HTTP Version Not Supported",
}

--- The reason phrase of a status code (RFC 9110 §15), "Unknown" if none.
function M.reason(status) return REASONS[status] or "Unknown" end

local DAYS = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}
local MONTHS = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
                "Oct", "Nov", "Dec"}
local date_second, date_text -- the last one made: one per second at most

--- The IMF-fixdate of `t` (default: now), as in "Sun, 06 Nov 1994 08:49:37
-- GMT" (RFC 9110 §5.6.7). English names whatever the C locale.
function M.date(t)
  t = t or os.time()
  if t ~= date_second then
    local d = os.date("!*t", t)
    date_text = ("%s, %02d %s %04d %02d:%02d:%02d GMT"):format(
      DAYS[d.wday], d.day, MONTHS[d.month], d.year, d.hour, d.min, d.sec)
    date_second = t
  end
  return date_text
end

---------------------------------------------------------------------------
-- Decoding

local function hex_char(h) return string.char(tonumber(h, 16)) end

--- Percent-decoding; a '%' not followed by two hex digits stays as it is.
function M.unescape(s) return (s:gsub("%%(%x%x)", hex_char)) end

local function unescape_form(s)
  return M.unescape((s:gsub("+", " ")))
end

--- Parses a query string (application/x-www-form-urlencoded) into a table:
-- names and values percent-decoded, '+' as a space, a name without '=' has
-- the value "". A name given once maps to its string; a name repeated maps
-- to the list of its values in order (as OpenResty's get_uri_args), so
-- `type(q.x) == "table"` tells that it was repeated. Empty names are
-- dropped.
function M.parse_query(qs)
  local out = {}
  if not qs or qs == "" then return out end
  for pair in qs:gmatch("[^&]+") do
    local name, value = pair:match("^([^=]*)=(.*)$")
    if not name then name, value = pair, "" end
    name, value = unescape_form(name), unescape_form(value)
    if name ~= "" then
      local seen = out[name]
      if seen == nil then
        out[name] = value
      elseif type(seen) == "table" then
        seen[#seen + 1] = value
      else
        out[name] = {seen, value}
      end
    end
  end
  return out
end

-- What every request a handler receives can do (its metatable's methods).
local Request = {}
M.Request = Request
local RequestMeta = {__index = Request, __name = "pulsar.http.Request"}

-- An error a handler raises on purpose, answered with its status (see
-- M.error); any other error is a 500.
local HttpError = {__name = "pulsar.http.HttpError"}
HttpError.__index = HttpError
function HttpError:__tostring() return ("HTTP %d: %s"):format(self.status, self.message) end

--- pulsar.http.error(status, message): raises an error the server answers
-- with `status` and `message` as a text body (a 400 for input the handler
-- refuses, say), logged at debug level only: it is the client's fault.
function M.error(status, message)
  if math.type(status) ~= "integer" or status < 400 or status > 599 then
    error("http.error: status must be an integer from 400 to 599", 2)
  end
  error(setmetatable({status = status, message = tostring(message)}, HttpError), 2)
end

--- The status and message of an error raised by M.error, or nil.
function M.error_status(err)
  if getmetatable(err) == HttpError then return err.status, err.message end
  return nil
end

--- request:json(): the body decoded as JSON (pulsar.json). A body that is
-- not JSON, or empty, raises pulsar.http.error(400, ...) naming the
-- position, so a handler need not check: the client gets the 400.
function Request:json()
  local value, why = require("pulsar.json").decode_body(self.body)
  if value == nil and why then M.error(400, "malformed JSON body: " .. why) end
  return value
end

--- Makes a request from core.http_parser into a handler's request: `path`
-- percent-decoded ('+' stays), `query` a table (parse_query); `target` and
-- `query_string` keep the bytes as sent. Its methods are M.Request's.
function M.incoming(raw)
  local path = raw.path
  if path:find("%", 1, true) then raw.path = M.unescape(path) end
  raw.query = M.parse_query(raw.query_string)
  return setmetatable(raw, RequestMeta)
end

---------------------------------------------------------------------------
-- Responses

local TOKEN = "^[!#$%%&'*+%-.^_`|~%w]+$"
-- Headers this module writes itself; a handler's own are dropped (framing)
-- or decide (Connection: close).
local OURS = {["content-length"] = true, ["transfer-encoding"] = true,
              ["connection"] = true}

local function no_body_status(status)
  return status < 200 or status == 204 or status == 304
end

-- Header values found safe, so that a handler's usual ones are checked
-- once; bounded as NAMES below.
local VALUES, VALUES_MAX, values_count = {}, 256, 0

local function check_value(name, value)
  if VALUES[value] then return value end
  local t = type(value)
  if t == "number" then return tostring(value) end
  if t ~= "string" then
    error(("header '%s': value must be a string or a number, not a %s"):format(name, t), 4)
  end
  if value:find("[\r\n%z]") then
    error(("header '%s': value holds CR, LF or NUL"):format(name), 4)
  end
  if values_count < VALUES_MAX and #value <= 64 then
    values_count = values_count + 1
    VALUES[value] = true
  end
  return value
end

-- A body that is a range of a file, which the transport sends with
-- sendfile(2) after the head (pulsar.static makes them).
local FileBody = {__name = "pulsar.http.FileBody"}

--- pulsar.http.file_body(path, offset, length): a response body of
-- `length` bytes of the file at `path` from `offset`, sent by the kernel
-- (transport:sendfile) rather than read into Lua.
function M.file_body(path, offset, length)
  return setmetatable({path = path, offset = offset, length = length}, FileBody)
end

--- The file range of a body made by file_body, or nil.
function M.is_file_body(body) return getmetatable(body) == FileBody end

local function body_string(body)
  local t = type(body)
  if t == "nil" then return "" end
  if t == "string" then return body end
  if t == "number" then return tostring(body) end
  if t == "table" then return table.concat(body) end
  error("response body must be a string, a number or a list of strings, not a " .. t, 3)
end

-- Header names a handler used, checked once: name -> its lower case. A
-- handler that makes names up cannot grow it past NAMES_MAX.
local NAMES, NAMES_MAX, names_count = {}, 256, 0

local function header_lower(name)
  local lower = NAMES[name]
  if lower then return lower end
  if type(name) ~= "string" or not name:find(TOKEN) then
    error(("header name %q is not a token"):format(tostring(name)), 4)
  end
  lower = name:lower()
  if names_count < NAMES_MAX then
    names_count = names_count + 1
    NAMES[name] = lower
  end
  return lower
end

-- Appends "Name: value\r\n" for each header the handler set (a list value
-- gives one line each, as Set-Cookie needs). Returns what the writer needs
-- to know: whether Date, Server and Content-Type were set, the handler's
-- Content-Length and whether it asked to close.
local function add_user_headers(parts, headers)
  local date, server, ctype, length, close = false, false, false, nil, false
  for name, value in pairs(headers) do
    local lower = header_lower(name)
    if lower == "date" then date = true
    elseif lower == "server" then server = true
    elseif lower == "content-type" then ctype = true end
    local list = type(value) == "table"
    for i = 1, list and #value or 1 do
      local v = check_value(name, list and value[i] or value)
      if lower == "content-length" then
        length = v
      elseif lower == "connection" then
        close = close or v:lower():find("close", 1, true) ~= nil
      end
      if not OURS[lower] then
        parts[#parts + 1] = name .. ": " .. v .. "\r\n"
      end
    end
  end
  return date, server, ctype, length, close
end

local STATUS_LINES = {} -- status -> "HTTP/1.1 200 OK\r\n", made once each

local function status_line(status)
  local line = STATUS_LINES[status]
  if not line then
    line = "HTTP/1.1 " .. status .. " " .. M.reason(status) .. "\r\n"
    STATUS_LINES[status] = line
  end
  return line
end

local stamp_second, stamp_server, stamp -- "Date: ...\r\nServer: ...\r\n"

local function date_and_server()
  local now = os.time()
  if now ~= stamp_second or M.SERVER ~= stamp_server then
    stamp = "Date: " .. M.date(now) .. "\r\nServer: " .. M.SERVER .. "\r\n"
    stamp_second, stamp_server = now, M.SERVER
  end
  return stamp
end

-- "Content-Length: N\r\n" for the first lengths asked, made once each
-- (number to text goes through snprintf).
local LENGTHS, LENGTHS_MAX, lengths_count = {}, 1024, 0

local function length_line(n)
  local line = LENGTHS[n]
  if line then return line end
  line = "Content-Length: " .. n .. "\r\n"
  if lengths_count < LENGTHS_MAX then
    lengths_count = lengths_count + 1
    LENGTHS[n] = line
  end
  return line
end

local DEFAULT_TYPE = "Content-Type: text/plain; charset=utf-8\r\n"
local KEEP, CLOSE = "Connection: keep-alive\r\n\r\n", "Connection: close\r\n\r\n"
local NO_OPTS = {}

-- The pieces of a response being made: one list for all, since a response
-- is made at once (nothing in between can yield), and emptied after (and
-- before, if one raised half-way).
local PARTS = {}

local function clear(list)
  for i = #list, 1, -1 do list[i] = nil end
end

--- A whole response as one string, and whether the connection stays open.
--   status: an integer from 100 to 999
--   headers: name -> value (a string, a number, or a list of them)
--   body: a string, a number, a list of strings, or nil
--   opts.head: a response to HEAD: the same headers, Content-Length
--     included, and no body
--   opts.keep_alive: false when the request ends the connection
-- Content-Length is computed from the body (a handler's own is kept only for
-- HEAD); Date, Server and, for a non-empty body, Content-Type
-- (text/plain; charset=utf-8) are added unless given; Connection is
-- keep-alive or close, close if the handler asked for it (HTTP/1.1 says
-- keep-alive too, which is harmless; a 1.0 client needs it).
function M.response(status, headers, body, opts)
  opts = opts or NO_OPTS
  if math.type(status) ~= "integer" or status < 100 or status > 999 then
    error(("invalid HTTP status %s"):format(tostring(status)), 2)
  end
  local file_length -- a file body: its length, and no bytes here
  if type(body) ~= "string" then
    if getmetatable(body) == FileBody then file_length, body = body.length, ""
    else body = body_string(body) end
  end
  local keep_alive = opts.keep_alive ~= false
  if (headers == nil or next(headers) == nil) and not file_length then -- the common case, in one concatenation
    local connection = keep_alive and KEEP or CLOSE
    if no_body_status(status) then
      return status_line(status) .. date_and_server() .. connection, keep_alive
    end
    return status_line(status) .. date_and_server() .. (body ~= "" and DEFAULT_TYPE or "") ..
           length_line(#body) .. connection .. (opts.head and "" or body), keep_alive
  end
  local parts = PARTS
  if parts[1] then clear(parts) end -- left by a response that raised
  parts[1] = status_line(status)
  local date, server, ctype, length, close = add_user_headers(parts, headers or NO_OPTS)
  keep_alive = keep_alive and not close
  if not date and not server then
    parts[#parts + 1] = date_and_server()
  else
    if not date then parts[#parts + 1] = "Date: " .. M.date() .. "\r\n" end
    if not server then parts[#parts + 1] = "Server: " .. M.SERVER .. "\r\n" end
  end
  if no_body_status(status) then
    body = ""
  else
    if body ~= "" and not ctype then parts[#parts + 1] = DEFAULT_TYPE end
    if not (opts.head and length) then
      parts[#parts + 1] = length_line(file_length or #body)
    elseif length:find("^%d+$") then
      parts[#parts + 1] = "Content-Length: " .. length .. "\r\n"
    else
      error(("header 'Content-Length': %q is not a length"):format(length), 2)
    end
  end
  parts[#parts + 1] = keep_alive and KEEP or CLOSE
  if not opts.head then parts[#parts + 1] = body end
  local text = table.concat(parts)
  clear(parts)
  return text, keep_alive
end

-- What a handler returned (slot[1], slot[2], slot[3]), as status,
-- headers, body.
local function interpret(res)
  local a, b, c = res[1], res[2], res[3]
  if a == nil then return 200, nil, "" end
  if math.type(a) == "integer" then
    if type(b) == "table" then return a, b, c end
    return a, nil, b
  end
  if type(a) == "number" then error("invalid HTTP status " .. tostring(a), 0) end
  return 200, nil, a
end

local CONTINUE = "HTTP/1.1 100 Continue\r\n\r\n"

---------------------------------------------------------------------------
-- Switching protocols (101)
--
-- A handler that takes the connection over answers with an upgrade object
-- (pulsar.websocket.upgrade makes them), known by its metatable: a table
-- with `response`, the whole 101 to write, and `make_protocol(upgrade,
-- defaults)`, which gives the protocol the connection is handed to once
-- that is written; defaults carries the server's ws_max_message. The
-- objects are made elsewhere, so this module needs no WebSocket of its own.

local Upgrade = {__name = "pulsar.http.Upgrade"}
Upgrade.__index = Upgrade
M.Upgrade = Upgrade

--- Whether a handler's answer is an upgrade object.
function M.is_upgrade(v) return getmetatable(v) == Upgrade end

---------------------------------------------------------------------------
-- The protocol: one per connection
--
-- What a connection holds, and why it stays bounded:
--   queue   requests read and not yet dispatched, oldest first, with the
--           ready answers that must follow them (100 Continue, the answer
--           to bad input). One read (64 KiB at most) can complete many
--           requests at once; they wait here, and reading pauses until
--           the queue is empty, so the queue never holds more than a read.
--   slots   the requests dispatched (their handlers running, or done), in
--           order, each with its response once made. At most `pipeline`
--           of them: the queue waits for room.
-- A response is written once those before it are, and only while the
-- transport's buffer is below its high-water mark; while it is above, the
-- done ones wait in their slots and nothing new is dispatched.

local Protocol = {}
Protocol.__index = Protocol

-- A task's result is one value: the handler's three are kept in its slot.
local function run_handler(handler, request, slot)
  slot[1], slot[2], slot[3] = handler(request)
end

function Protocol:connection_made(transport)
  self.transport = transport
  self.parser = core.http_parser(self.limits)
  self.slots, self.first, self.last = {}, 1, 0 -- dispatched, in request order
  self.queue, self.qfirst, self.qlast = {}, 1, 0 -- read, not yet dispatched
  self.running = 0 -- handlers not done yet
  self.requests = {} -- what each read completed (parser:feed's list)
end

-- Adds a response slot at the end of the slots.
function Protocol:_push(slot)
  self.last = self.last + 1
  self.slots[self.last] = slot
  return slot
end

-- Adds a request (or a ready answer: a slot with its data) to the queue.
function Protocol:_enqueue(entry)
  self.qlast = self.qlast + 1
  self.queue[self.qlast] = entry
end

function Protocol:_in_flight() return self.last - self.first + 1 end
function Protocol:_queued() return self.qlast - self.qfirst + 1 end

function Protocol:_drop_queue()
  self.queue, self.qfirst, self.qlast = {}, 1, 0
end

-- Ends the connection once what is written has gone: at once after the
-- peer's EOF, else as a lingering close (see the head of this file).
function Protocol:_close()
  if self.closed then return end
  self.closed = true
  self:_stop_timer()
  self:_drop_queue()
  if self.eof or self.lost then return self.transport:close() end
  self.transport:write_eof()
  if self.read_paused then
    self.read_paused = false
    self.transport:resume_reading()
  end
  self.timer = core.timer(self.linger, function()
    self.timer = nil
    self.transport:close()
  end)
end

-- Writes every finished response at the head of the slots, in order,
-- while the transport's buffer is below its high-water mark: the rest wait
-- for resume_writing, so that buffer holds at most one response more.
function Protocol:_flush()
  if self.closed or self.lost then return end
  while self.first <= self.last do
    local slot = self.slots[self.first]
    if not slot.data or self.write_paused then break end
    self.slots[self.first] = nil
    self.first = self.first + 1
    if self.first > self.last then -- empty: back to the start, where the
      self.first, self.last = 1, 0 -- table keeps its slots in an array
    end
    self.transport:write(slot.data)
    if slot.upgrade then return self:_switch(slot.upgrade) end
    if slot.file then
      self:_send_file(slot.file)
      if self.lost then return end
    end
    if slot.close then return self:_close() end
  end
  if self:_in_flight() == 0 and (self.draining or (self.eof and self:_queued() == 0)) then
    return self:_close()
  end
  self:_throttle()
end

-- The file of a response, after its head. Its length was promised: a
-- file that cannot be sent (gone since the handler looked) ends the
-- connection.
function Protocol:_send_file(file)
  local ok, err = self.transport:sendfile(file.path, file.offset, file.length)
  if not ok then
    log.error("HTTP: cannot send %s: %s", tostring(file.path), tostring(err))
    self.transport:abort()
  end
end

-- Dispatches the queue, in order, while there is room in the pipeline
-- and the writes keep up, writing each answer as soon as it may go. Not
-- re-entered: _answer, reached from a handler done at once, only writes.
function Protocol:_next()
  if self.dispatching then return end
  self.dispatching = true
  local queue, flushed = self.queue, false
  while self.qfirst <= self.qlast and self:_in_flight() < self.pipeline and
        not (self.write_paused or self.closed or self.lost or self.draining) do
    local entry = queue[self.qfirst]
    queue[self.qfirst] = nil
    self.qfirst = self.qfirst + 1
    if self.qfirst > self.qlast then self.qfirst, self.qlast = 1, 0 end
    if entry.data then self:_push(entry) else self:_dispatch(entry) end
    self:_flush()
    flushed = true
  end
  self.dispatching = false
  if not flushed then self:_flush() end
end

-- Reads only while there is room: nothing queued, few enough requests in
-- flight, a write buffer below its high-water mark, and the connection not
-- ending.
function Protocol:_throttle()
  if self.closed or self.lost or self.eof then return end
  local room = not self.closing and not self.write_paused and not self.draining and
               self.qfirst > self.qlast and self:_in_flight() < self.pipeline
  if room and self.read_paused then
    self.read_paused = false
    self.transport:resume_reading()
  elseif not room and not self.read_paused then
    self.read_paused = true
    self.transport:pause_reading()
  end
end

-- The answer to bad input: one last response, after those of the requests
-- before it, then close.
function Protocol:_fail(status, reason)
  log.debug("HTTP %d from %s: %s", status,
            tostring(self.transport:get_extra_info("peername")), reason)
  if self.stats then self.stats.rejected = self.stats.rejected + 1 end
  self.closing = true
  self:_stop_timer()
  local data = M.response(status, nil, M.reason(status) .. ": " .. reason .. "\n",
                          {keep_alive = false})
  self:_enqueue({data = data, close = true})
end

-- The response to what the handler returned; a file body is kept in
-- slot.file, for _flush to send after the head.
local function respond(slot)
  local status, headers, body = interpret(slot)
  local data, keep_alive = M.response(status, headers, body, slot)
  if getmetatable(body) == FileBody and not slot.head and not no_body_status(status) then
    slot.file = body
  end
  return data, keep_alive
end

-- The handler of `slot` is done: at once (task nil), or its task is.
function Protocol:_answer(slot, task)
  if self.closed or self.lost then return end
  local ok, data, keep_alive
  if self.draining and slot == self.slots[self.last] then
    slot.keep_alive = false -- the last answer before a graceful stop says so
  end
  local refused = task and M.error_status(task:exception())
  if (task == nil or task:exception() == nil) and getmetatable(slot[1]) == Upgrade then
    return self:_upgrade_answer(slot)
  end
  if refused then
    ok = true
    log.debug("HTTP %d for %s %s: %s", refused, slot.method, slot.target, task:exception().message)
    data, keep_alive = M.response(refused, nil, M.reason(refused) .. ": " ..
                                  task:exception().message .. "\n", slot)
  elseif task == nil or task:exception() == nil then
    ok, data, keep_alive = pcall(respond, slot)
    if not ok then log.error("HTTP handler for %s %s: bad response: %s", slot.method,
                             slot.target, tostring(data)) end
  else
    ok = false
    log.error("HTTP handler for %s %s failed: %s", slot.method, slot.target,
              task:traceback() or tostring(task:exception()))
  end
  if not ok then
    if self.stats then self.stats.errors = self.stats.errors + 1 end
    slot.file = false
    data, keep_alive = M.response(500, nil, "Internal Server Error\n", slot)
  end
  slot.close = not keep_alive
  slot.data = data
  if self.qfirst > self.qlast then self:_flush() else self:_next() end
end

-- The handler answered with an upgrade object: its 101 goes in the
-- slot, and once written the connection is switched (_flush). A server
-- stopping refuses it instead: the new protocol would outlive the stop.
function Protocol:_upgrade_answer(slot)
  local upgrade = slot[1]
  slot[1], slot[2], slot[3] = false, false, false
  if self.draining then
    slot.close = true
    slot.data = M.response(503, nil, "Service Unavailable: the server is stopping\n", {keep_alive = false})
  else
    slot.upgrade, slot.data = upgrade, upgrade.response
  end
  if self.qfirst > self.qlast then self:_flush() else self:_next() end
end

-- The 101 is written: the transport is the new protocol's from now on.
-- This one is done (closed: nothing more is parsed nor answered); the
-- connection is no longer idle between requests, and reads again if the
-- request's Connection: upgrade, which ends HTTP, had paused it.
function Protocol:_switch(upgrade)
  self.closed = true
  self:_stop_timer()
  self:_drop_queue()
  local transport = self.transport
  local ok, protocol = xpcall(upgrade.make_protocol, debug.traceback, upgrade,
                              {max_message = self.ws_max_message})
  if not ok or type(protocol) ~= "table" then
    log.error("switching %s to the new protocol failed: %s",
              tostring(transport:get_extra_info("peername")), tostring(protocol))
    return transport:abort("protocol switch failed")
  end
  transport:set_idle_timeout(0)
  transport:set_protocol(protocol)
  if protocol.connection_made then protocol:connection_made(transport) end
  if self.write_paused and protocol.pause_writing then protocol:pause_writing() end
  if self.read_paused then transport:resume_reading() end
  if self.eof and not (protocol.eof_received and protocol:eof_received()) then
    transport:close()
  end
end

function Protocol:_dispatch(raw)
  -- every field the slot will have, so that it is made at its full size
  local slot = self:_push({
    false, false, false, data = false, close = false,
    method = raw.method, target = raw.target, path = raw.path, head = raw.method == "HEAD",
    keep_alive = raw.keep_alive, timer = false, timed_out = false, file = false, upgrade = false,
  })
  if not raw.keep_alive then self.closing = true end
  if self.stats then self.stats.requests = self.stats.requests + 1 end
  local done, task = future.run(run_handler, self.handler, M.incoming(raw), slot)
  if done then return self:_answer(slot) end
  if task:done() then return self:_answer(slot, task) end
  self:_hold_idle(1)
  if self.handler_timeout then
    slot.timer = core.timer(self.handler_timeout, function()
      slot.timer = false
      self:_time_out(slot, task)
    end)
  end
  task:add_done_callback(function(t)
    if slot.timed_out then return end -- answered 503 already: the late answer is dropped
    if slot.timer then slot.timer:cancel() slot.timer = false end
    self:_hold_idle(-1)
    self:_answer(slot, t)
  end)
end

-- The handler of `slot` ran past handler_timeout: its task is cancelled
-- (it stops at the wait it is in; one that never waits cannot be stopped,
-- and what it returns is dropped) and the request answered 503, in its
-- place in the pipeline.
function Protocol:_time_out(slot, task)
  slot.timed_out = true
  self:_hold_idle(-1)
  log.error("handler timed out after %g s: %s %s", self.handler_timeout, slot.method, slot.path)
  if self.stats then self.stats.errors = self.stats.errors + 1 end
  task:cancel()
  if self.closed or self.lost then return end
  if self.draining and slot == self.slots[self.last] then slot.keep_alive = false end
  local data, keep_alive = M.response(503, nil, ("Service Unavailable: no answer within %g s\n"):format(
    self.handler_timeout), slot)
  slot.close = not keep_alive
  slot.data = data
  if self.qfirst > self.qlast then self:_flush() else self:_next() end
end

-- Counts the handlers still running; while any is, the transport's idle
-- timeout (keep_alive) is lifted: a slow answer is not an idle connection.
function Protocol:_hold_idle(delta)
  local before = self.running
  self.running = before + delta
  if not self.keep_alive or self.closed or self.lost then return end
  if before == 0 and self.running > 0 then
    self.transport:set_idle_timeout(0)
  elseif before > 0 and self.running == 0 then
    self.transport:set_idle_timeout(self.keep_alive)
  end
end

function Protocol:_stop_timer()
  if self.timer then self.timer:cancel() end
  self.timer = nil
end

-- opts.timeout: a request must arrive whole within that many seconds of its
-- first byte, or it is answered 408 and the connection closed. Waiting
-- between requests is the server's keep_alive, not this.
function Protocol:_watch(completed)
  if not self.timeout or self.closing then return end
  if not self.parser:in_request() then return self:_stop_timer() end
  if completed then self:_stop_timer() end -- a new request began: its own time
  if self.timer then return end
  self.timer = core.timer(self.timeout, function()
    self.timer = nil
    if self.closed or self.lost or self.closing or not self.parser:in_request() then return end
    self:_fail(408, ("request not received within %g s"):format(self.timeout))
    self:_next()
  end)
end

function Protocol:data_received(data)
  if self.closing or self.draining or self.closed or self.lost then return end
  local requests, status, reason = self.parser:feed(data, self.requests)
  local n = #requests
  if n == 1 and not status and self.last == 0 and self.qlast == 0 and
     not (requests.continue or requests.partial or self.timer or self.write_paused) then
    return self:_dispatch(requests[1]) -- the common case: one whole request, nothing before it
  end
  for i = 1, n do self:_enqueue(requests[i]) end
  if requests.continue then self:_enqueue({data = CONTINUE}) end
  if status then
    self:_fail(status, reason)
  elseif self.timer or requests.partial then
    self:_watch(n > 0)
  end
  self:_next()
end

--- The peer sent everything it will: answer what was read, then close.
-- Returns true, asking the transport to stay open for those answers; false
-- (close now) when this side had already finished.
function Protocol:eof_received()
  if self.closed then return false end
  self.eof = true
  self:_stop_timer()
  self:_next()
  return true
end

--- The requests read on this connection and not answered yet.
function Protocol:pending() return self:_in_flight() + self:_queued() end

--- True while a request is being received or answered on this connection.
function Protocol:busy()
  return not self.closed and not self.lost and
         (self:_in_flight() > 0 or self:_queued() > 0 or self.parser:in_request())
end

--- For a graceful stop: reads no further request, answers those in flight
-- (with Connection: close), then closes; at once if nothing is in flight.
-- Requests read but not yet dispatched are dropped: the last answer's
-- Connection: close tells the client to send them again elsewhere.
function Protocol:close_when_idle()
  if self.closed or self.lost then return end
  self.draining = true
  self:_stop_timer()
  self:_drop_queue()
  self:_flush()
end

--- The server stops gracefully (pulsar.net's Server:shutdown).
Protocol.server_stopping = Protocol.close_when_idle

function Protocol:connection_lost()
  self.lost = true
  self:_stop_timer()
  -- handlers still running go on (their answers have nowhere to go), but
  -- are no longer timed: a late answer is dropped all the same
  for i = self.first, self.last do
    local slot = self.slots[i]
    if slot and slot.timer then slot.timer:cancel() slot.timer = false end
  end
  self.slots, self.first, self.last = {}, 1, 0
  self:_drop_queue()
end

function Protocol:pause_writing()
  self.write_paused = true
  self:_throttle()
end

function Protocol:resume_writing()
  self.write_paused = false
  self:_next()
end

local function check_opts(opts)
  for key, min in pairs {max_body = 0, max_header = 1, max_headers = 0, pipeline = 1,
                        ws_max_message = 1} do
    local v = opts[key]
    if v ~= nil and (math.type(v) ~= "integer" or v < min) then
      error(("http.protocol: %s must be an integer from %d"):format(key, min), 3)
    end
  end
  for _, key in ipairs {"timeout", "linger", "handler_timeout"} do
    local v = opts[key]
    if v ~= nil and (type(v) ~= "number" or v <= 0 or v ~= v) then
      error(("http.protocol: %s must be a number of seconds above 0"):format(key), 3)
    end
  end
  local keep_alive = opts.keep_alive
  if keep_alive ~= nil and (type(keep_alive) ~= "number" or keep_alive < 0 or keep_alive ~= keep_alive) then
    error("http.protocol: keep_alive must be a number of seconds from 0", 3)
  end
  if opts.stats ~= nil and type(opts.stats) ~= "table" then
    error("http.protocol: stats must be a table", 3)
  end
end

--- A protocol factory for pulsar.create_server (docs/API.md §2): each call
-- makes the protocol table of one connection. opts:
--   max_body (16 MiB), max_header (64 KiB), max_headers (100): the parser's
--     limits, answered 413, 414 or 431 and the connection closed
--   pipeline (16): requests in flight per connection before reading pauses
--   timeout (none): seconds for a request to arrive whole once begun (408)
--   handler_timeout (none): seconds a handler may run; past them the request
--     is answered 503 in its turn, the timeout logged, the handler's task
--     cancelled and its late answer dropped
--   keep_alive (none): the server's idle timeout (pulsar.net's keep_alive),
--     which this protocol lifts while a handler runs and sets back after
--   linger (2): seconds a closing connection keeps reading (and dropping)
--     what the peer still sends, waiting for its EOF
--   ws_max_message (16 MiB): what a handler's upgrade gets as its default
--     max_message (pulsar.websocket.upgrade)
--   stats: a table whose counters requests, errors (answered 500) and
--     rejected (bad input answered 4xx) the protocols count up
function M.protocol(handler, opts)
  if type(handler) ~= "function" then error("http.protocol needs a handler function", 2) end
  opts = opts or {}
  check_opts(opts)
  local limits = {max_body = opts.max_body, max_header = opts.max_header,
                  max_headers = opts.max_headers}
  core.http_parser(limits) -- refuses bad limits now, not at the first client
  local stats = opts.stats
  if stats then
    for _, key in ipairs {"requests", "errors", "rejected"} do stats[key] = stats[key] or 0 end
  end
  local keep_alive = opts.keep_alive ~= 0 and opts.keep_alive or nil
  local pipeline, timeout, linger = opts.pipeline or 16, opts.timeout, opts.linger or 2
  local handler_timeout, ws_max_message = opts.handler_timeout, opts.ws_max_message
  return function()
    return setmetatable({handler = handler, limits = limits, pipeline = pipeline,
                         timeout = timeout, keep_alive = keep_alive, linger = linger,
                         handler_timeout = handler_timeout, stats = stats,
                         ws_max_message = ws_max_message}, Protocol)
  end
end

return M
