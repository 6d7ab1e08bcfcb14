--- pulsar.wshandshake: WebSocket's opening handshakes (RFC 6455 §4), both
-- sides, and the negotiation of permessage-deflate (RFC 7692 §7.1); the
-- connection they open is pulsar.websocket's (lua/pulsar/websocket.lua),
-- which is also the module users require.
--
--   * the server's side: the checks of an upgrade request (§4.2.1), the
--     choice of a subprotocol and of permessage-deflate's parameters, and
--     the 101 that says so (`answer`);
--   * the client's side: its URL (`parse_url`), its request
--     (`client_request`), and the checks of the server's answer, read
--     within MAX_HEAD bytes (`open`, then `exchange`).
--
-- It is all decisions on a few header values and no byte loops, so it is
-- Lua; the frames that follow are the C codec's (core.ws_codec). The
-- handshake answers with values, not objects: the codec's deflate table,
-- the subprotocol, the extension text, which websocket.lua turns into a
-- connection. A refused upgrade is a handler's answer (400 or 426, and
-- "bad WebSocket upgrade: REASON"); a client's failure raises a short text
-- that websocket.connect prefixes with the URL.
local core = require "pulsar.core"
local http = require "pulsar.http"
local log = require "pulsar.log"

local M = {
  MAX_HEAD = 64 * 1024, -- bytes of the 101 a client reads
}

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

--- A token (RFC 9110 §5.6.2): header names, subprotocols, extensions.
M.TOKEN = "^[!#$%%&'*+%-.^_`|~%w]+$"
local TOKEN = M.TOKEN

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

-- The text of the server's answer accepting parameters p.
local function deflate_answer(p)
  local answer = {"permessage-deflate"}
  for _, key in ipairs(NO_TAKEOVER) do
    if p[key] then answer[#answer + 1] = key end
  end
  for _, key in ipairs(WINDOW_BITS) do
    if math.type(p[key]) == "integer" then answer[#answer + 1] = key .. "=" .. p[key] end
  end
  return table.concat(answer, "; ")
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
      if p then return codec_deflate(p), deflate_answer(p) end
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
-- The server's side (RFC 6455 §4.2)

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

--- The server's answer to an upgrade request, with websocket.upgrade's
-- opts (protocols, deflate): for a valid opening handshake
-- {response= (the 101), protocol=, deflate= (the codec's table or nil),
-- extensions= (the agreed text or nil)}; for a bad one nil, then the
-- handler's answer: 400 (426 without Upgrade: websocket, or for another
-- version), headers, "bad WebSocket upgrade: REASON".
function M.answer(request, opts)
  local status, why, headers = handshake_problem(request)
  if status then
    log.debug("WebSocket upgrade of %s refused (%d): %s", request.path, status, why)
    return nil, refuse(status, why, headers)
  end
  local h = request.headers
  local protocol = choose_protocol(h["sec-websocket-protocol"], opts.protocols)
  local deflate, extensions
  if opts.deflate ~= false then deflate, extensions = accept_deflate(h["sec-websocket-extensions"]) end
  return {
    response = switching_response(core.ws_accept(trim(h["sec-websocket-key"])), protocol, extensions),
    protocol = protocol, deflate = deflate, extensions = extensions,
  }
end

---------------------------------------------------------------------------
-- The client's side (RFC 6455 §4.1)

local WS_PORTS = {ws = 80} -- the schemes taken, and their default port

-- What http.split_url found wrong, as the caller of websocket.connect reads it.
local URL_ERRORS = {
  target = "the path holds spaces or control characters",
  userinfo = "no host and port in the URL",
  host = "no host and port in the URL",
  port = "no host and port in the URL",
}

--- {host=, port=, target=, authority=} of a ws:// URL (http.split_url);
-- raises "websocket.connect URL: WHAT" for another. Called by
-- websocket.connect, whose caller the errors blame.
function M.parse_url(url)
  if type(url) ~= "string" then fail("websocket.connect: url must be a string", 3) end
  local parts, wrong, scheme = http.split_url(url, WS_PORTS)
  if parts then return parts end
  local why = URL_ERRORS[wrong]
  if wrong == "scheme" then
    why = scheme == "wss" and "wss: not supported until TLS" or "the URL must begin with ws://"
  end
  fail(("websocket.connect %s: %s"):format(url, why), 3)
end

-- Headers the handshake writes itself.
local OWN_HEADERS = {host = true, upgrade = true, connection = true, ["sec-websocket-key"] = true,
                     ["sec-websocket-version"] = true, ["sec-websocket-extensions"] = true,
                     ["sec-websocket-protocol"] = true}

-- The caller's headers, as lines added to `parts`; raises for a bad one
-- or one the handshake writes itself, blaming websocket.connect's caller.
local function add_headers(parts, headers)
  local level = 4 -- add_headers, client_request, websocket.connect, its caller
  for name, value in pairs(headers) do
    if type(name) ~= "string" or not name:find(TOKEN) then
      fail(("websocket.connect: header name %q is not a token"):format(tostring(name)), level)
    end
    if OWN_HEADERS[name:lower()] then
      fail(("websocket.connect: header %s is the handshake's own"):format(name), level)
    end
    value = tostring(value)
    if value:find("[\r\n%z]") then
      fail(("websocket.connect: header %s holds CR, LF or NUL"):format(name), level)
    end
    parts[#parts + 1] = name .. ": " .. value .. "\r\n"
  end
end

--- The client's request to `target` (parse_url's) with the key
-- (core.ws_key) and websocket.connect's opts (headers, protocols,
-- deflate); raises for a bad header. Called by websocket.connect.
function M.client_request(target, key, opts)
  local parts = {"GET ", target.target, " HTTP/1.1\r\nHost: ", target.authority,
                 "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ", key,
                 "\r\nSec-WebSocket-Version: 13\r\n"}
  if opts.deflate ~= false then parts[#parts + 1] = "Sec-WebSocket-Extensions: " .. CLIENT_OFFER .. "\r\n" end
  if opts.protocols and #opts.protocols > 0 then
    parts[#parts + 1] = "Sec-WebSocket-Protocol: " .. table.concat(opts.protocols, ", ") .. "\r\n"
  end
  add_headers(parts, opts.headers or {})
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

-- The answer's extension: the codec's deflate table, or nil.
local function answer_deflate(header, opts)
  if not header then return nil end
  if opts.deflate == false then
    error(("the server answered with extensions not offered: %q"):format(header), 0)
  end
  return agreed_deflate(header)
end

-- The answer's subprotocol, which must be one the client offered.
local function answer_protocol(protocol, opts)
  if not protocol then return nil end
  for _, p in ipairs(opts.protocols or {}) do
    if p == protocol then return protocol end
  end
  error(("the server chose a subprotocol not offered: %q"):format(protocol), 0)
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
  return answer_deflate(headers["sec-websocket-extensions"], opts),
         answer_protocol(headers["sec-websocket-protocol"], opts)
end

--- A stream (pulsar.net) to target, and the deadline of the whole
-- handshake (core.hrtime() seconds; nil without opts.timeout). Raises
-- "timed out after N s connecting" or the connection's error.
function M.open(target, opts)
  local timeout = opts.timeout
  local deadline = timeout and core.hrtime() + timeout
  local stream = wait_until(require("pulsar.net").open_connection{
    host = target.host, port = target.port, timeout = timeout, limit = M.MAX_HEAD},
    deadline, timeout, "connecting")
  return stream, deadline
end

--- The handshake on `stream` (M.open's): writes `request` (client_request's,
-- with `key`), reads and checks the answer before the deadline. Returns
-- {status=, headers=, deflate= (the codec's table or nil), protocol=,
-- rest= (the bytes read past the 101)}; raises naming what was wrong. The
-- caller closes the stream on failure.
function M.exchange(stream, key, request, opts, deadline)
  stream:write(request)
  local head, rest = read_head(stream, deadline, opts.timeout)
  local status, reason, headers = parse_head(head)
  local deflate, protocol = check_answer(status, reason, headers, key, opts)
  return {status = status, headers = headers, deflate = deflate, protocol = protocol, rest = rest}
end

return M
