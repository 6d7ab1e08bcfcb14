--- pulsar.http: HTTP/1.1 for the HttpServer battery (issue 6).
--
-- Three layers, each usable alone:
--   * pure functions: `unescape`, `parse_query`, `reason`, `date`,
--     `response` (a whole response as one string);
--   * `request(raw)`: a parsed request (core.http_parser, host/lhttp.c) made
--     into what a handler receives: path decoded, query as a table;
--   * `protocol(handler, opts)`: a protocol factory for pulsar's transports
--     (API.md §2, Networking): one protocol table per connection, which
--     parses what arrives, runs the handler of each request in a task of its
--     own, and writes the responses in request order.
--
-- A handler gets {method=, path=, query=, headers=, body=, target=,
-- query_string=, version=} and returns `status, headers, body`, or
-- `status, body` (a second value that is a table is headers), or a body
-- alone (status 200), or nothing (200, empty).
-- It runs in a task, so it may wait on Futures; a Lua error in it answers
-- 500 and logs the traceback; the connection and the worker go on.
--
-- Per connection, memory is bounded: the parser's limits bound each request,
-- at most `pipeline` requests are in flight (reading pauses beyond), and
-- reading pauses while the transport's write buffer is above its high-water
-- mark (pause_writing), so a client that never reads its responses stops
-- being read instead of growing the buffer.
local core = require "pulsar.core"
local future = require "pulsar.future"
local log = require "pulsar.log"

local M = {}

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

--- Makes a request from core.http_parser into a handler's request: `path`
-- percent-decoded ('+' stays), `query` a table (parse_query); `target` and
-- `query_string` keep the bytes as sent.
function M.request(raw)
  raw.path = M.unescape(raw.path)
  raw.query = M.parse_query(raw.query_string)
  return raw
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

local function check_value(name, value)
  local t = type(value)
  if t == "number" then return tostring(value) end
  if t ~= "string" then
    error(("header '%s': value must be a string or a number, not a %s"):format(name, t), 4)
  end
  if value:find("[\r\n%z]") then
    error(("header '%s': value holds CR, LF or NUL"):format(name), 4)
  end
  return value
end

local function body_string(body)
  local t = type(body)
  if t == "nil" then return "" end
  if t == "string" then return body end
  if t == "number" then return tostring(body) end
  if t == "table" then return table.concat(body) end
  error("response body must be a string, a number or a list of strings, not a " .. t, 3)
end

-- Appends "Name: value\r\n" for each header the handler set (a list value
-- gives one line each, as Set-Cookie needs). Returns what the writer needs
-- to know: which of Date, Server, Content-Type were set, the handler's
-- Content-Length and whether it asked to close.
local function add_user_headers(parts, headers)
  local seen, length, close = {}, nil, false
  for name, value in pairs(headers) do
    if type(name) ~= "string" or not name:find(TOKEN) then
      error(("header name %q is not a token"):format(tostring(name)), 3)
    end
    local lower = name:lower()
    seen[lower] = true
    local values = type(value) == "table" and value or {value}
    for i = 1, #values do
      local v = check_value(name, values[i])
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
  return seen, length, close
end

--- A whole response as one string, and whether the connection stays open.
--   status: an integer from 100 to 999
--   headers: name -> value (a string, a number, or a list of them)
--   body: a string, a number, a list of strings, or nil
--   opts.head: a response to HEAD: the same headers, Content-Length
--     included, and no body
--   opts.keep_alive: false when the request ends the connection
--   opts.version: "HTTP/1.0" for a 1.0 client (Connection: keep-alive is
--     then said explicitly; HTTP/1.1 says it too, which is harmless)
-- Content-Length is computed from the body (a handler's own is kept only for
-- HEAD); Date, Server and, for a non-empty body, Content-Type
-- (text/plain; charset=utf-8) are added unless given; Connection is
-- keep-alive or close, close if the handler asked for it.
function M.response(status, headers, body, opts)
  opts = opts or {}
  if math.type(status) ~= "integer" or status < 100 or status > 999 then
    error(("invalid HTTP status %s"):format(tostring(status)), 2)
  end
  body = body_string(body)
  local parts = {"HTTP/1.1 ", tostring(status), " ", M.reason(status), "\r\n"}
  local seen, length, close = add_user_headers(parts, headers or {})
  local keep_alive = opts.keep_alive ~= false and not close
  if not seen.date then parts[#parts + 1] = "Date: " .. M.date() .. "\r\n" end
  if not seen.server then parts[#parts + 1] = "Server: " .. M.SERVER .. "\r\n" end
  if no_body_status(status) then
    body = ""
  else
    if body ~= "" and not seen["content-type"] then
      parts[#parts + 1] = "Content-Type: text/plain; charset=utf-8\r\n"
    end
    if not (opts.head and length) then
      length = #body
    elseif not length:find("^%d+$") then
      error(("header 'Content-Length': %q is not a length"):format(length), 2)
    end
    parts[#parts + 1] = "Content-Length: " .. length .. "\r\n"
  end
  parts[#parts + 1] = keep_alive and "Connection: keep-alive\r\n\r\n" or "Connection: close\r\n\r\n"
  if not opts.head then parts[#parts + 1] = body end
  return table.concat(parts), keep_alive
end

-- What a handler returned, as status, headers, body.
local function interpret(res)
  local a, b, c = res[1], res[2], res[3]
  if res.n == 0 or a == nil then return 200, nil, "" end
  if math.type(a) == "integer" then
    if type(b) == "table" then return a, b, c end
    return a, nil, b
  end
  if type(a) == "number" then error("invalid HTTP status " .. tostring(a), 0) end
  return 200, nil, a
end

local CONTINUE = "HTTP/1.1 100 Continue\r\n\r\n"

---------------------------------------------------------------------------
-- The protocol: one per connection

local Protocol = {}
Protocol.__index = Protocol

local function run_handler(handler, request)
  return table.pack(handler(request))
end

function Protocol:connection_made(transport)
  self.transport = transport
  self.parser = core.http_parser(self.limits)
  self.slots, self.first, self.last = {}, 1, 0 -- responses, in request order
end

-- Adds a response slot at the end of the queue.
function Protocol:_push(slot)
  self.last = self.last + 1
  self.slots[self.last] = slot
  return slot
end

function Protocol:_in_flight() return self.last - self.first + 1 end

function Protocol:_close()
  if self.closed then return end
  self.closed = true
  self:_stop_timer()
  self.transport:close()
end

-- Writes every finished response at the head of the queue, in order.
function Protocol:_flush()
  if self.closed or self.lost then return end
  while self.first <= self.last do
    local slot = self.slots[self.first]
    if not slot.data then break end
    self.slots[self.first] = nil
    self.first = self.first + 1
    self.transport:write(slot.data)
    if slot.close then return self:_close() end
  end
  if (self.eof or self.draining) and self:_in_flight() == 0 then return self:_close() end
  self:_throttle()
end

-- Reads only while there is room: few enough requests in flight, a write
-- buffer below its high-water mark, and the connection not ending.
function Protocol:_throttle()
  if self.closed or self.lost or self.eof then return end
  local room = not self.closing and not self.write_paused and not self.draining and
               self:_in_flight() < self.pipeline
  if room and self.read_paused then
    self.read_paused = false
    self.transport:resume_reading()
  elseif not room and not self.read_paused then
    self.read_paused = true
    self.transport:pause_reading()
  end
end

-- The answer to bad input: one last response, then close.
function Protocol:_fail(status, reason)
  log.debug("HTTP %d from %s: %s", status,
            tostring(self.transport:get_extra_info("peername")), reason)
  self.closing = true
  self:_stop_timer()
  local data = M.response(status, nil, M.reason(status) .. ": " .. reason .. "\n",
                          {keep_alive = false})
  self:_push({data = data, close = true})
end

function Protocol:_answer(slot, task)
  if self.closed or self.lost then return end
  local ok, data, keep_alive
  if self.draining and slot == self.slots[self.last] then
    slot.keep_alive = false -- the last answer before a graceful stop says so
  end
  if task:exception() == nil then
    ok, data, keep_alive = pcall(function()
      local status, headers, body = interpret(task:result())
      return M.response(status, headers, body, slot)
    end)
    if not ok then log.error("HTTP handler for %s %s: bad response: %s", slot.method,
                             slot.target, tostring(data)) end
  else
    ok = false
    log.error("HTTP handler for %s %s failed: %s", slot.method, slot.target,
              task:traceback() or tostring(task:exception()))
  end
  if not ok then
    data, keep_alive = M.response(500, nil, "Internal Server Error\n", slot)
  end
  slot.close = not keep_alive
  slot.data = data
  self:_flush()
end

function Protocol:_dispatch(raw)
  local slot = self:_push({
    method = raw.method, target = raw.target, head = raw.method == "HEAD",
    keep_alive = raw.keep_alive,
  })
  if not raw.keep_alive then self.closing = true end
  local task = future.async(run_handler, self.handler, M.request(raw))
  if task:done() then
    self:_answer(slot, task)
  else
    task:add_done_callback(function(t) self:_answer(slot, t) end)
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
    self:_flush()
  end)
end

function Protocol:data_received(data)
  if self.closing or self.draining or self.closed or self.lost then return end
  local requests, status, reason = self.parser:feed(data)
  for i = 1, #requests do
    if self.closed then return end -- a handler's Connection: close
    self:_dispatch(requests[i])
  end
  if self.parser:take_continue() then self:_push({data = CONTINUE}) end
  if status then self:_fail(status, reason) else self:_watch(#requests > 0) end
  self:_flush()
end

--- The peer sent everything it will: answer what is in flight, then close.
-- Returns true, asking the transport to stay open for those answers.
function Protocol:eof_received()
  self.eof = true
  self:_stop_timer()
  self:_flush()
  return true
end

--- True while a request is being received or answered on this connection.
function Protocol:busy()
  return not self.closed and not self.lost and
         (self:_in_flight() > 0 or self.parser:in_request())
end

--- For a graceful stop: reads no further request, answers those in flight
-- (with Connection: close), then closes; at once if nothing is in flight.
function Protocol:close_when_idle()
  if self.closed or self.lost then return end
  self.draining = true
  self:_stop_timer()
  self:_flush()
end

function Protocol:connection_lost()
  self.lost = true
  self:_stop_timer()
  self.slots, self.first, self.last = {}, 1, 0
end

function Protocol:pause_writing()
  self.write_paused = true
  self:_throttle()
end

function Protocol:resume_writing()
  self.write_paused = false
  self:_throttle()
end

local function check_opts(opts)
  for key, min in pairs {max_body = 0, max_header = 1, max_headers = 0, pipeline = 1} do
    local v = opts[key]
    if v ~= nil and (math.type(v) ~= "integer" or v < min) then
      error(("http.protocol: %s must be an integer from %d"):format(key, min), 3)
    end
  end
  if opts.timeout ~= nil and (type(opts.timeout) ~= "number" or opts.timeout <= 0) then
    error("http.protocol: timeout must be a number of seconds above 0", 3)
  end
end

--- A protocol factory for pulsar.create_server (API.md §2): each call
-- makes the protocol table of one connection. opts:
--   max_body (16 MiB), max_header (64 KiB), max_headers (100): the parser's
--     limits, answered 413, 414 or 431 and the connection closed
--   pipeline (16): requests in flight per connection before reading pauses
--   timeout (none): seconds for a request to arrive whole once begun (408)
function M.protocol(handler, opts)
  if type(handler) ~= "function" then error("http.protocol needs a handler function", 2) end
  opts = opts or {}
  check_opts(opts)
  local limits = {max_body = opts.max_body, max_header = opts.max_header,
                  max_headers = opts.max_headers}
  core.http_parser(limits) -- refuses bad limits now, not at the first client
  local pipeline = opts.pipeline or 16
  return function()
    return setmetatable({handler = handler, limits = limits, pipeline = pipeline,
                         timeout = opts.timeout}, Protocol)
  end
end

return M
