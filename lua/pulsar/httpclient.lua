--- pulsar.httpclient: an HTTP/1.1 client on pulsar's transports
-- (docs/API.md §2, "HTTP client"); pulsar.http.request and pulsar.http.get
-- are this module's.
--
--   local r = pulsar.http.get("http://127.0.0.1:8080/hello"):wait()
--   print(r.status, r.headers["content-type"], r.body)
--
-- A request is a task: it takes a connection to the host:port from the
-- pool (or opens one), writes the request, feeds what comes back to the
-- response parser (core.http_response_parser, host/codec/http_response.c:
-- bounded, strict framing, fed arbitrary splits) and resolves its Future
-- with {status=, reason=, version=, headers=, body=}. Header names are
-- lower-case; a repeated field's values are joined with ", " as the
-- server's requests are, but Set-Cookie, which cannot be joined, is a list
-- of its values when repeated.
--
-- What it does and why:
--   * keep-alive: after a response that lets the connection live, the
--     connection goes back to a bounded idle pool of its host:port (POOL
--     per host, closed after IDLE seconds without use by the transport's
--     idle timeout). A pooled connection the server has closed meanwhile is
--     seen at once (its EOF arrives while idle) and dropped; one that dies
--     as it is reused, before a byte of the answer came, is retried once on
--     a fresh connection, but only for an idempotent method (RFC 9110
--     §9.2.2): a POST might have been acted on.
--   * bodies out are strings sent with Content-Length (a number is sent as
--     its text); nothing is streamed, so a body is a string in memory
--     anyway. Bodies in: Content-Length, chunked, or until the server
--     closes; none for HEAD, 1xx, 204, 304. 1xx interim answers are skipped.
--   * `timeout` bounds the whole exchange (connecting, sending, the whole
--     response): past it the Future fails with "http: GET URL: no complete
--     response within N s" and the connection is aborted, never reused.
--   * errors name the method and URL and what was wrong: a refused
--     connection, a name that does not resolve, a response the parser
--     refuses (with its reason), a connection closed before the response
--     was whole.
--   * redirects are not followed: a 3xx is a response like any other (its
--     `location` header says where).
--   * http:// only; https:// is refused ("https: not supported until TLS").
--
-- The pool lives in the Lua state that loaded this module, so each actor
-- (the arbiter, a thread actor, a process actor) has its own, and a
-- connection is only used by the actor that opened it.
local core = require "pulsar.core"
local future = require "pulsar.future"

local M = {
  POOL = 8,               -- idle connections kept per host:port
  IDLE = 10,              -- seconds an idle pooled connection is kept
  MAX_BODY = 64 << 20,    -- a response body, by default (64 MiB)
  MAX_HEADER = 64 << 10,  -- a response's status line and headers (64 KiB)
}

M.USER_AGENT = "pulsar-lua/" .. core.versions().pulsar

local Future = future.Future

-- RFC 9110 §9.2.2: a request that may be sent twice for the effect of one.
local IDEMPOTENT = {GET = true, HEAD = true, PUT = true, DELETE = true,
                    OPTIONS = true, TRACE = true}

---------------------------------------------------------------------------
-- URLs and requests

--- Splits an http:// URL: {host=, port=, target=, authority=}; raises a
-- clear error for anything else.
function M.parse_url(url)
  if type(url) ~= "string" then error("http.request: url must be a string", 3) end
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then error(("http.request: '%s' is not an absolute http:// URL"):format(url), 3) end
  scheme = scheme:lower()
  if scheme == "https" then error("https: not supported until TLS (" .. url .. ")", 3) end
  if scheme ~= "http" then error(("http.request: only http:// URLs are supported, not %s://"):format(scheme), 3) end
  local authority, target = rest:match("^([^/?#]*)(.*)$")
  target = target:gsub("#.*$", "")
  if target == "" then target = "/" elseif target:sub(1, 1) == "?" then target = "/" .. target end
  if authority:find("@", 1, true) then error("http.request: user:password@ in URLs is not supported (" .. url .. ")", 3) end
  local host, port = authority:match("^%[([%x:.]+)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:]+):?(%d*)$") end
  if not host or host == "" then error(("http.request: no host in '%s'"):format(url), 3) end
  port = port == "" and 80 or math.tointeger(tonumber(port))
  if not port or port < 1 or port > 65535 then error(("http.request: bad port in '%s'"):format(url), 3) end
  return {host = host:lower(), port = port, target = target, authority = authority}
end

local TOKEN = "^[!#$%%&'*+%-.^_`|~%w]+$"
-- Framing is ours: the caller's own would contradict it.
local FRAMING = {["content-length"] = true, ["transfer-encoding"] = true}

-- The head of a request: its lines, with Host, User-Agent and
-- Content-Length unless the caller gave them; and whether it asked to close.
local function request_head(method, url, headers, body)
  local lines = {("%s %s HTTP/1.1\r\n"):format(method, url.target)}
  local given, close = {}, false
  for name, value in pairs(headers) do
    if type(name) ~= "string" or not name:find(TOKEN) then
      error(("http.request: header name %q is not a token"):format(tostring(name)), 4)
    end
    local lower = name:lower()
    local list = type(value) == "table" and value or {value}
    for _, v in ipairs(list) do
      if type(v) ~= "string" and type(v) ~= "number" then
        error(("http.request: header '%s': value must be a string or a number"):format(name), 4)
      end
      v = tostring(v)
      if v:find("[\r\n%z]") then error(("http.request: header '%s': value holds CR, LF or NUL"):format(name), 4) end
      if lower == "connection" and v:lower():find("close", 1, true) then close = true end
      if not FRAMING[lower] then lines[#lines + 1] = name .. ": " .. v .. "\r\n" end
    end
    given[lower] = true
  end
  if not given.host then lines[#lines + 1] = "Host: " .. url.authority .. "\r\n" end
  if not given["user-agent"] then lines[#lines + 1] = "User-Agent: " .. M.USER_AGENT .. "\r\n" end
  if #body > 0 or method == "POST" or method == "PUT" or method == "PATCH" then
    lines[#lines + 1] = "Content-Length: " .. #body .. "\r\n"
  end
  lines[#lines + 1] = "\r\n"
  return table.concat(lines), close
end

local function check_params(params)
  if type(params) ~= "table" then error("http.request: parameters must be a table", 3) end
  local method = params.method or "GET"
  if type(method) ~= "string" or not method:find(TOKEN) then
    error("http.request: method must be a token such as \"GET\"", 3)
  end
  method = method:upper()
  local body = params.body
  if body == nil then body = "" elseif type(body) == "number" then body = tostring(body) end
  if type(body) ~= "string" then error("http.request: body must be a string, not a " .. type(body), 3) end
  local headers = params.headers or {}
  if type(headers) ~= "table" then error("http.request: headers must be a table", 3) end
  local timeout = params.timeout
  if timeout ~= nil and (type(timeout) ~= "number" or timeout <= 0 or timeout ~= timeout) then
    error("http.request: timeout must be a number of seconds above 0", 3)
  end
  local max_body = params.max_body or M.MAX_BODY
  if math.type(max_body) ~= "integer" or max_body < 0 then
    error("http.request: max_body must be a whole number of bytes", 3)
  end
  return method, body, headers, timeout, max_body
end

---------------------------------------------------------------------------
-- Connections: a protocol for pulsar's transports (docs/API.md §2,
-- Networking), one response parser each, an exchange at a time.

local pools = {} -- "host:port" -> idle connections, the most recent last

local Conn = {}
Conn.__index = Conn
Conn.__name = "pulsar.httpclient.Connection"

local function forget(conn)
  local pool = pools[conn.key]
  if not pool then return end
  for i = #pool, 1, -1 do
    if pool[i] == conn then table.remove(pool, i) end
  end
  if #pool == 0 then pools[conn.key] = nil end
end

-- The exchange in progress ends, with a response or an error.
function Conn:_finish(response)
  local f = self.exchange
  self.exchange = nil
  if f then f:set_result(response) end
end

function Conn:_fail(why)
  local f = self.exchange
  self.exchange = nil
  self.broken = true
  if f then f:set_exception(why) end
end

function Conn:data_received(data)
  if not self.exchange then -- idle: a server does not speak unasked
    self.broken = true
    forget(self)
    return self.transport:abort()
  end
  self.received = self.received + #data
  local response, why = self.parser:feed(data)
  if response then
    if why or self.parser:next() then self.broken = true end -- more than was asked
    return self:_finish(response)
  end
  if why then
    self:_fail("bad response: " .. why)
    self.transport:abort()
  end
end

function Conn:eof_received()
  self.eof = true
  forget(self)
  if not self.exchange then return false end
  local response, why = self.parser:eof()
  if response then
    self:_finish(response)
  elseif why then
    self:_fail("bad response: " .. why)
  else
    self:_fail("the server closed the connection without answering")
  end
  return false
end

function Conn:connection_lost(err)
  self.lost = true
  forget(self)
  if self.exchange then
    self:_fail(err and tostring(err) or "the connection closed before the response was complete")
  end
end

-- A big request body: the transport queues it whole; reading must go on
-- meanwhile (a server may answer, 413 say, before reading it all).
function Conn:pause_writing() end
function Conn:resume_writing() end

function Conn:usable()
  return not (self.broken or self.eof or self.lost or self.transport:is_closing())
end

-- Sends one request; a Future of its response. Each exchange has a parser
-- of its own, with the request's limits.
function Conn:send(req)
  self.received = 0
  self.parser = core.http_response_parser(req.limits)
  self.parser:expect_head(req.method == "HEAD")
  local f = Future("the response to " .. req.label)
  self.exchange = f
  local ok, err
  if #req.body > 0 then ok, err = self.transport:write(req.head, req.body)
  else ok, err = self.transport:write(req.head) end
  if not ok then self:_fail(tostring(err)) end
  return f
end

-- Back to the pool, or closed when the pool of its host is full.
function Conn:release()
  local pool = pools[self.key] or {}
  if #pool >= M.POOL or not self:usable() then return self.transport:close() end
  pool[#pool + 1] = self
  pools[self.key] = pool
  self.transport:set_idle_timeout(M.IDLE)
end

local function take_idle(key)
  local pool = pools[key]
  while pool and #pool > 0 do
    local conn = table.remove(pool)
    if #pool == 0 then pools[key] = nil end
    if conn:usable() then
      conn.transport:set_idle_timeout(0)
      return conn
    end
    conn.transport:close()
  end
  return nil
end

-- The IP addresses of a host: a literal as it is, a name resolved.
local function addresses_of(host)
  if core.net_ip_family(host) then return {host} end
  local f = Future("resolving " .. host)
  core.net_getaddrinfo(host, function(list, err)
    if list and #list > 0 then f:set_result(list)
    else f:set_exception(err or ("cannot resolve '%s': no address"):format(host)) end
  end)
  local ok, list = pcall(f.wait, f)
  if not ok then error(("cannot resolve '%s': %s"):format(host, tostring(list)), 0) end
  return list
end

-- A connection to ip:port as a Conn, or nil and why. The protocol is set
-- inside net_connect's callback: a transport left without one by then is
-- closed.
local function connect_ip(req, ip, timeout)
  local f = Future(("connecting to %s:%d"):format(ip, req.url.port))
  core.net_connect({ip = ip, port = req.url.port}, function(transport, err)
    if not transport then return f:set_exception(err) end
    if req.abandoned then return transport:abort() end -- timed out meanwhile
    local conn = setmetatable({transport = transport, key = req.key, received = 0}, Conn)
    transport:set_protocol(conn)
    f:set_result(conn)
  end, timeout)
  local ok, conn = pcall(f.wait, f)
  if ok then return conn end
  return nil, conn
end

-- A fresh connection to req's host:port, trying each address.
local function connect(req, timeout)
  local first
  for _, ip in ipairs(addresses_of(req.url.host)) do
    local conn, err = connect_ip(req, ip, timeout)
    if conn then return conn end
    first = first or err
  end
  error(tostring(first), 0) -- "cannot connect to HOST:PORT: connection refused"
end

---------------------------------------------------------------------------
-- The exchange

local function exchange(req)
  for attempt = 1, 2 do
    local conn = take_idle(req.key)
    local reused = conn ~= nil
    if not conn then conn = connect(req, req.timeout) end
    req.conn = conn
    local ok, response = pcall(function() return conn:send(req):wait() end)
    req.conn = nil
    if ok then
      if response.keep_alive and not req.close then conn:release() else conn.transport:close() end
      response.keep_alive, response.chunked, response.until_eof = nil, nil, nil
      return response
    end
    conn.transport:close()
    local retry = reused and attempt == 1 and conn.received == 0 and IDEMPOTENT[req.method]
    if not retry then error(tostring(response), 0) end
  end
end

local function run(req)
  local ok, response = pcall(exchange, req)
  if ok then return response end
  error(("http: %s %s: %s"):format(req.method, req.url_text, tostring(response)), 0)
end

--- pulsar.http.request{method=, url=, headers=, body=, timeout=, max_body=}:
-- a Future of {status=, reason=, version=, headers=, body=}. method
-- defaults to GET; headers is a table name -> value (a list gives one
-- field each); body a string; timeout seconds for the whole exchange;
-- max_body the largest response body taken (64 MiB). Bad parameters raise
-- at once; what goes wrong on the wire fails the Future.
function M.request(params)
  local method, body, headers, timeout, max_body = check_params(params)
  local url = M.parse_url(params.url)
  local head, close = request_head(method, url, headers, body)
  local req = {method = method, url = url, url_text = params.url, head = head, body = body,
               close = close, timeout = timeout,
               limits = {max_body = max_body, max_header = M.MAX_HEADER},
               key = url.host .. ":" .. url.port, label = method .. " " .. params.url}
  local result = Future(req.label)
  local task = future.async(run, req)
  local timer
  if timeout then
    timer = core.timer(timeout, function()
      if result:done() then return end
      result:set_exception(("http: %s %s: no complete response within %g s"):format(
        method, params.url, timeout))
      req.abandoned = true
      local conn = req.conn
      if conn then conn.broken = true; conn.transport:abort("timed out") end
      task:cancel()
    end)
  end
  task:add_done_callback(function(t)
    if timer then timer:cancel() end
    if result:done() then return end
    if t:cancelled() then return end
    local err = t:exception()
    if err ~= nil then result:set_exception(err) else result:set_result(t:result()) end
  end)
  return result
end

--- pulsar.http.get(url [, opts]): request{method = "GET", url = url} with
-- opts' headers, timeout and max_body.
function M.get(url, opts)
  local params = {}
  for k, v in pairs(opts or {}) do params[k] = v end
  params.url, params.method = url, params.method or "GET"
  return M.request(params)
end

--- Closes every idle pooled connection (of this actor).
function M.close_idle()
  for key, pool in pairs(pools) do
    pools[key] = nil
    for _, conn in ipairs(pool) do conn.transport:close() end
  end
end

--- The idle connections pooled for host:port (for tests and info).
function M.idle_count(key)
  local pool = pools[key]
  return pool and #pool or 0
end

return M
