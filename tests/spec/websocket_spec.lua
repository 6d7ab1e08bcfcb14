-- pulsar.websocket (lua/pulsar/websocket.lua) as a user meets it: an
-- HttpServer in a pulsar-lua process of its own upgrading connections to
-- WebSocket, talked to by Debian's python3-websockets (tests/tools/
-- ws_client.py, with and without permessage-deflate), by pulsar's own
-- client, by curl for bad upgrades and by raw sockets for crafted frames.
local support = require "support"

local WAIT = 30 -- seconds; generous, for slow machines and sanitizers
local PYTHON = "/usr/bin/python3" -- Debian's, which has the websockets package
local CLIENT = "tests/tools/ws_client.py"

-- The server under test: an HttpServer whose settings come as NAME=VALUE
-- arguments; it prints its address once it serves. Routes:
--   /echo    greets with "hello ext=EXTENSIONS proto=SUBPROTOCOL", then
--            echoes each message with its kind; "close-me" makes it close
--            with 4001 "as you wish"; it logs how each connection closed
--   /flood   reads "wait|nowait COUNT SIZE", then sends COUNT messages of
--            SIZE bytes, waiting on each send's Future or not (max_queue
--            1 MiB there)
--   /log     what /echo and /flood logged, one line each
--   /info    the worker's HTTP counters
--   other    404
-- With router=1 the handler is a pulsar.http.Router with /echo and /log.
local SERVER = [[
local settings = {name = "wsspec", bind = "127.0.0.1:0"}
for _, a in ipairs(arg) do
  local k, v = a:match("^([%w_]+)=(.*)$")
  settings[k] = tonumber(v) or v
end

-- the worker's log, in one table whatever the upvalues copied into it
local function lines()
  local t = package.loaded["wsspec.lines"] or {}
  package.loaded["wsspec.lines"] = t
  return t
end
local function note(line) table.insert(lines(), line) end

local function echo(ws)
  ws:send(("hello ext=%s proto=%s"):format(ws.extensions or "none", ws.subprotocol or "none")):wait()
  while true do
    local message = ws:receive():wait()
    if message == nil then break end
    if message == "close-me" then ws:close(4001, "as you wish") break end
    ws:send(message, ws.last_kind):wait()
  end
  note(("echo closed %d %s"):format(ws.closed:wait(), ws.close_reason))
end

local function flood(ws)
  local how, count, size = ws:receive():wait():match("^(%a+) (%d+) (%d+)$")
  local chunk = string.rep("z", tonumber(size))
  for i = 1, tonumber(count) do
    local sent = ws:send(chunk, "binary")
    if how == "wait" then
      if not sent:done() then note("flood waits at " .. i) end
      local ok = pcall(sent.wait, sent)
      if not ok then break end
    elseif sent:done() and sent:failed() then
      note("flood refused at " .. i)
      break
    end
  end
  note(("flood closed %d %s"):format(ws.closed:wait(), ws.close_reason))
end

settings.handler = function(request)
  local websocket = require "pulsar.websocket"
  if request.path == "/echo" then
    return websocket.upgrade(request, echo, {protocols = {"chat", "superchat"}, close_timeout = 1})
  elseif request.path == "/flood" then
    return websocket.upgrade(request, flood, {max_queue = 1024 * 1024})
  elseif request.path == "/log" then
    return table.concat(lines(), "\n")
  elseif request.path == "/info" then
    local h = pulsar.get_actor():info().http
    return ("requests=%d websockets=%d write_queue_max=%d"):format(h.requests, h.websockets, h.write_queue_max)
  end
  return 404, "no route " .. request.path
end

if settings.router then -- the same /echo as a router's WebSocket route
  local router = pulsar.http.Router()
  router:websocket("/echo", echo, {protocols = {"chat", "superchat"}, close_timeout = 1})
  router:get("/log", function() return 200, {}, table.concat(lines(), "\n") end)
  settings.router, settings.handler = nil, router
end

local app = pulsar.apps.HttpServer(settings)
app:start():wait()
print("serving " .. app.address)
io.stdout:flush()
]]

local server_script = support.script(SERVER)

local function start_server(settings)
  local pid_file = support.tmpname(".pid")
  local args = {"--pid-file", support.quote(pid_file), support.quote(server_script)}
  for k, v in pairs(settings) do args[#args + 1] = support.quote(k .. "=" .. tostring(v)) end
  local h = support.start(table.concat(args, " "))
  h.address = h.wait_output("serving (%S+)\n", WAIT)
  assert(h.address, "the server did not start: " .. h.err())
  h.url = "http://" .. h.address
  h.ws = "ws://" .. h.address
  h.pid = tonumber(support.read_file(pid_file))
  function h.stop()
    h.kill("TERM", h.pid)
    return h.wait(WAIT)
  end
  return h
end

-- Runs a shell command in the background (the loop goes on meanwhile);
-- the handle reads its output so far and waits for its exit status.
local function background(command)
  local base = support.tmpname()
  os.execute(("(%s > %s 2> %s; echo $? > %s) < /dev/null &"):format(command,
    support.quote(base .. ".out"), support.quote(base .. ".err"), support.quote(base .. ".status")))
  local h = {}
  function h.out() return support.read_file(base .. ".out") or "" end
  function h.wait()
    local status = support.wait_for(function()
      local s = support.read_file(base .. ".status")
      return s and s:match("%d+")
    end, WAIT + 5)
    return {code = tonumber(status), out = h.out(), err = support.read_file(base .. ".err") or ""}
  end
  return h
end

local function python(args) return background(PYTHON .. " " .. CLIENT .. " " .. args) end

local function curl(args) return background("curl -sS --max-time " .. WAIT .. " " .. args).wait() end

local function get(server, path) return curl(support.quote(server.url .. path)).out end

local function info(server)
  local t = {}
  for k, v in get(server, "/info"):gmatch("([%w_]+)=(%d+)") do t[k] = tonumber(v) end
  return t
end

local function wait_until(check) return support.wait_for(check, WAIT) and true or false end

-- Raw sockets: a hand-written handshake, and frames made byte by byte.
local HANDSHAKE = "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n"

-- A connection upgraded by hand (`headers`: more header lines): the
-- stream, the 101's head, and what came after it.
local function raw_open(server, path, headers)
  local stream = pulsar.open_connection(server.address):wait(WAIT)
  stream:write(HANDSHAKE:format(path or "/echo", headers or ""))
  local buffer = ""
  repeat
    local data = stream:read():wait(WAIT)
    assert(data, "no answer to the handshake")
    buffer = buffer .. data
  until buffer:find("\r\n\r\n", 1, true)
  local e = buffer:find("\r\n\r\n", 1, true)
  return stream, buffer:sub(1, e + 3), {buffer = buffer:sub(e + 4)}
end

-- One frame, FIN set, a payload under 126 bytes; masked with a zero key
-- (a masked frame whose bytes read as they are).
local function frame(opcode, payload, masked)
  return string.char(0x80 | opcode, (masked and 0x80 or 0) | #payload) ..
         (masked and "\0\0\0\0" or "") .. payload
end

-- The next frame from the server (unmasked): opcode, payload.
local function read_frame(stream, state)
  local function need(n)
    while #state.buffer < n do
      local data = stream:read():wait(WAIT)
      if not data then return false end
      state.buffer = state.buffer .. data
    end
    return true
  end
  if not need(2) then return nil end
  local b1, b2 = state.buffer:byte(1, 2)
  local len, pos = b2 & 0x7f, 3
  if len == 126 then need(4) len, pos = string.unpack(">I2", state.buffer, 3) end
  if len == 127 then need(10) len, pos = string.unpack(">I8", state.buffer, 3) end
  assert(need(pos + len - 1), "the stream ended inside a frame")
  local payload = state.buffer:sub(pos, pos + len - 1)
  state.buffer = state.buffer:sub(pos + len)
  return b1 & 0x0f, payload
end

-- Reads frames up to the server's close: its code and reason.
local function read_close(stream, state)
  while true do
    local opcode, payload = read_frame(stream, state)
    if opcode == nil then return nil, "no close frame" end
    if opcode == 8 then return string.unpack(">I2", payload), payload:sub(3) end
  end
end

describe("WebSocket", function()
  local websocket = require "pulsar.websocket"
  local server
  setup(function()
    server = start_server{workers = 1, concurrency = "thread", ws_max_message = 262144}
  end)
  teardown(function() if server then server.stop() end end)

  describe("with python3-websockets", function()
    for _, deflate in ipairs {true, false} do
      local flag = deflate and "" or " --no-deflate"
      local ext = deflate and "permessage%-deflate" or "none"

      it("echoes text, binary, fragmented and large messages, answers pings, closes with a code" ..
         (deflate and " (permessage-deflate)" or " (uncompressed)"), function()
        local r = python("echo " .. server.ws .. "/echo" .. flag).wait()
        assert.are.equal(0, r.code, r.out .. r.err)
        local out = r.out
        assert.matches("extensions " .. ext .. "\n", out)
        assert.matches("text hello ext=" .. ext, out)
        assert.matches("\ntext héllo wörld\n", out, 1, true)
        assert.matches("\nbinary 0001ff\n", out, 1, true)
        assert.matches("\ntext fragmented\n", out, 1, true)
        assert.matches("\nbig ok\n", out, 1, true)
        assert.matches("\npong\n", out, 1, true)
        assert.matches("\nclosed 4000 bye\n", out, 1, true)
        assert.is_true(wait_until(function() return get(server, "/log"):find("echo closed 4000 bye", 1, true) end))
      end)

      it("sees the server's close code and reason" .. (deflate and " (permessage-deflate)" or ""), function()
        local r = python("closeme " .. server.ws .. "/echo" .. flag).wait()
        assert.are.equal(0, r.code, r.out .. r.err)
        assert.matches("\nclosed 4001 as you wish\n", r.out, 1, true)
      end)

      it("closes with 1009 a message over ws_max_message" .. (deflate and " (inflated)" or ""), function()
        local r = python("big " .. server.ws .. "/echo --size 300000" .. flag).wait()
        assert.are.equal(0, r.code, r.out .. r.err)
        assert.matches("\nclosed 1009 ", r.out, 1, true)
        -- a message within the bound still goes through
        r = python("big " .. server.ws .. "/echo --size 200000" .. flag).wait()
        assert.matches("\nreply 200000\nclosed 1000 \n", r.out, 1, true)
      end)
    end

    it("agrees on a subprotocol, the server's first choice among the client's", function()
      local r = python("subprotocol " .. server.ws .. "/echo --protocol superchat --protocol chat").wait()
      assert.are.equal(0, r.code, r.out .. r.err)
      assert.matches("subprotocol chat\n", r.out, 1, true)
    end)
  end)

  describe("the handshake", function()
    local function extensions(offer)
      local stream, head = raw_open(server, "/echo", "Sec-WebSocket-Extensions: " .. offer .. "\r\n")
      stream:close()
      assert.matches("^HTTP/1%.1 101 ", head)
      return head:match("\r\nSec%-WebSocket%-Extensions: ([^\r]*)\r\n")
    end

    it("accepts permessage-deflate with the client's parameters and answers them", function()
      assert.are.equal("permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
                       extensions("permessage-deflate; server_no_context_takeover; client_max_window_bits=10"))
      assert.are.equal("permessage-deflate; client_no_context_takeover; server_max_window_bits=12",
                       extensions('permessage-deflate; client_no_context_takeover; server_max_window_bits="12"'))
      assert.are.equal("permessage-deflate", extensions("permessage-deflate; client_max_window_bits"))
    end)

    it("declines an offer with bad parameters, taking the next good one", function()
      assert.is_nil(extensions("permessage-deflate; server_max_window_bits=99"))
      assert.is_nil(extensions("permessage-deflate; no_such_thing"))
      assert.is_nil(extensions("permessage-deflate; server_no_context_takeover; server_no_context_takeover"))
      assert.is_nil(extensions("x-webkit-deflate-frame"))
      assert.are.equal("permessage-deflate; server_max_window_bits=9",
                       extensions("permessage-deflate; server_max_window_bits=7, " ..
                                  "permessage-deflate; server_max_window_bits=9"))
    end)
  end)

  describe("bad input", function()
    it("closes with 1002 on an unmasked client frame, and the server goes on", function()
      local stream, head, state = raw_open(server)
      assert.matches("^HTTP/1%.1 101 Switching Protocols\r\n", head)
      assert.matches("\r\nSec%-WebSocket%-Accept: s3pPLMBiTxaQ9kYGzzhZRbK%+xOo=\r\n", head)
      local opcode, hello = read_frame(stream, state)
      assert.are.same({1, "hello ext=none proto=none"}, {opcode, hello})
      stream:write(frame(1, "not masked", false))
      local code, reason = read_close(stream, state)
      assert.are.equal(1002, code)
      assert.matches("mask", reason)
      stream:close()
      assert.matches("requests=", get(server, "/info"))
    end)

    it("closes with 1007 on invalid UTF-8 in a text message", function()
      local stream, _, state = raw_open(server)
      read_frame(stream, state)
      stream:write(frame(1, "ok so far \xff\xfe", true))
      local code = read_close(stream, state)
      assert.are.equal(1007, code)
      stream:close()
    end)

    it("echoes a masked frame written by hand", function()
      local stream, _, state = raw_open(server)
      read_frame(stream, state)
      stream:write(frame(1, "by hand", true))
      assert.are.same({1, "by hand"}, {read_frame(stream, state)})
      stream:write(frame(9, "ping!", true))
      assert.are.same({10, "ping!"}, {read_frame(stream, state)})
      stream:write(frame(8, string.pack(">I2", 1000), true))
      assert.are.same({1000, ""}, {read_close(stream, state)})
      assert.is_nil(stream:read():wait(WAIT)) -- the server closes the TCP connection
      stream:close()
    end)

    it("ends a close the client never answers within close_timeout", function()
      local stream, _, state = raw_open(server)
      read_frame(stream, state)
      stream:write(frame(1, "close-me", true))
      assert.are.same({4001, "as you wish"}, {read_close(stream, state)})
      assert.is_true(wait_until(function()
        return get(server, "/log"):find("echo closed 1006 the close did not end within 1 s", 1, true)
      end))
      assert.is_nil(stream:read():wait(WAIT))
      stream:close()
    end)

    it("answers a bad upgrade request with 400 naming the reason, 426 without Upgrade", function()
      local up = "-i -H 'Connection: Upgrade' -H 'Upgrade: websocket' "
      local r = curl(up .. "-H 'Sec-WebSocket-Version: 13' " .. server.url .. "/echo")
      assert.matches("^HTTP/1%.1 400 Bad Request\r\n", r.out)
      assert.matches("bad WebSocket upgrade: no Sec%-WebSocket%-Key", r.out)
      r = curl(up .. "-H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: short' " .. server.url .. "/echo")
      assert.matches("bad WebSocket upgrade: Sec%-WebSocket%-Key is not 16 bytes in base64", r.out)
      r = curl(up .. "-H 'Sec-WebSocket-Version: 8' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' " ..
               server.url .. "/echo")
      assert.matches("^HTTP/1%.1 426 Upgrade Required\r\n", r.out)
      assert.matches("\r\nSec%-WebSocket%-Version: 13\r\n", r.out)
      r = curl("-i -X POST " .. up .. "-H 'Sec-WebSocket-Version: 13' " ..
               "-H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' " .. server.url .. "/echo")
      assert.matches("bad WebSocket upgrade: the method must be GET, not POST", r.out)
      r = curl("-i " .. server.url .. "/echo")
      assert.matches("^HTTP/1%.1 426 Upgrade Required\r\n", r.out)
      assert.matches("\r\nUpgrade: websocket\r\n", r.out)
      assert.matches("bad WebSocket upgrade: the request does not ask for one", r.out)
      -- the server still upgrades afterwards
      local stream, head = raw_open(server)
      assert.matches("^HTTP/1%.1 101 ", head)
      stream:close()
    end)
  end)

  describe("flow control", function()
    it("makes a sender that waits on send wait for a client that does not read", function()
      local stream, _, state = raw_open(server, "/flood")
      stream:write(frame(1, "wait 2000 65536", true))
      assert.is_true(wait_until(function() return get(server, "/log"):find("flood waits at", 1, true) end))
      -- throttled: the queue stays near the high-water mark, far below 2000 x 64 KiB
      local before = get(server, "/log"):match("flood waits at (%d+)")
      local i = info(server)
      assert.is_true(i.write_queue_max <= 4 * 65536, "write queue " .. i.write_queue_max)
      assert.is_true(tonumber(before) < 2000)
      -- reading lets it go on
      local got = #state.buffer
      while got < 200 * 65536 do got = got + #stream:read():wait(WAIT) end
      assert.is_true(wait_until(function()
        local n = 0
        for _ in get(server, "/log"):gmatch("flood waits at") do n = n + 1 end
        return n > 1
      end))
      stream:close()
      assert.is_true(wait_until(function() return info(server).websockets == 0 end))
    end)

    it("closes with 1008 a connection whose queue passes max_queue when nobody waits", function()
      local stream = raw_open(server, "/flood")
      stream:write(frame(1, "nowait 2000 65536", true))
      assert.is_true(wait_until(function() return get(server, "/log"):find("flood closed 1008", 1, true) end))
      assert.matches("flood refused at %d+", get(server, "/log"))
      stream:close()
      assert.is_true(wait_until(function() return server.err():find("closed (1008)", 1, true) end))
      assert.are.equal(0, info(server).websockets)
    end)
  end)

  describe("pulsar's client", function()

    for _, deflate in ipairs {true, false} do
      it("talks to the server" .. (deflate and " with permessage-deflate" or " uncompressed"), function()
        local ws = websocket.connect(server.ws .. "/echo", {timeout = WAIT, deflate = deflate,
                                                            protocols = {"superchat", "chat"}}):wait()
        assert.are.equal("chat", ws.subprotocol)
        local hello = ws:receive():wait(WAIT)
        assert.are.equal(("hello ext=%s proto=chat"):format(deflate and "permessage-deflate" or "none"), hello)
        assert.are.equal("text", ws.last_kind)
        ws:send("héllo"):wait(WAIT)
        assert.are.equal("héllo", ws:receive():wait(WAIT))
        local bytes = string.rep("\0\1\2\255", 50000)
        ws:send(bytes, "binary"):wait(WAIT)
        assert.are.equal(bytes, ws:receive():wait(WAIT))
        assert.are.equal("binary", ws.last_kind)
        assert.are.equal(4000, ws:close(4000, "done"):wait(WAIT))
        assert.are.equal("done", ws.close_reason)
        assert.is_nil(ws:receive():wait(WAIT))
        assert.is_true(wait_until(function() return get(server, "/log"):find("echo closed 4000 done", 1, true) end))
      end)
    end

    it("sees the server close, then receive gives nil", function()
      local ws = websocket.connect(server.ws .. "/echo", {timeout = WAIT}):wait()
      ws:receive():wait(WAIT)
      ws:send("close-me")
      assert.is_nil(ws:receive():wait(WAIT))
      assert.are.equal(4001, ws.closed:wait(WAIT))
      assert.are.equal("as you wish", ws.close_reason)
      assert.has_error(function() ws:send("late"):wait() end)
    end)

    it("says clearly what went wrong", function()
      local function failure(url, opts)
        local ok, err = pcall(function() return websocket.connect(url, opts):wait(WAIT) end)
        assert.is_false(ok)
        return tostring(err)
      end
      -- nothing listens
      local closed = pulsar.create_server{host = "127.0.0.1", port = 0, protocol = function() return {} end}:wait()
      local port = closed.port
      closed:close()
      local err = failure("ws://127.0.0.1:" .. port .. "/x")
      assert.matches("websocket.connect ws://127.0.0.1:" .. port .. "/x: ", err, 1, true)
      assert.matches("refused", err)
      -- an HTTP server that does not upgrade
      err = failure(server.ws .. "/nowhere")
      assert.matches("websocket.connect " .. server.ws .. "/nowhere: not a WebSocket server: it answered 404 Not Found", err, 1, true)
      -- a server that never answers
      local mute = pulsar.create_server{host = "127.0.0.1", port = 0, protocol = function() return {} end}:wait()
      err = failure("ws://" .. mute.address .. "/", {timeout = 0.5})
      assert.matches("timed out after 0.5 s", err, 1, true)
      mute:close()
      -- wss and other URLs: at once
      local ok
      ok, err = pcall(websocket.connect, "wss://example.com/")
      assert.is_false(ok)
      assert.matches("websocket.connect wss://example.com/: wss: not supported until TLS", err, 1, true)
      ok, err = pcall(websocket.connect, "http://example.com/")
      assert.matches("websocket.connect http://example.com/: the URL must begin with ws://", err, 1, true)
    end)
  end)

  it("closes every WebSocket with 1001 on a graceful stop (a router's route, process workers)", function()
    local other = start_server{workers = 2, router = 1}
    local stopped = false
    finally(function() if not stopped then other.stop() end end)
    local client = python("wait " .. other.ws .. "/echo")
    local mine = websocket.connect(other.ws .. "/echo", {timeout = WAIT}):wait()
    assert.matches("^hello ext=permessage%-deflate", mine:receive():wait(WAIT))
    assert.is_true(wait_until(function() return client.out():find("\n[oe][pr][er][no]", 1) end))
    assert.matches("\nopen\n", client.out(), 1, true)
    stopped = true
    assert.are.equal(15, other.stop()) -- SIGTERM's number, after a graceful stop
    local r = client.wait()
    assert.matches("\nclosed 1001 going away\n", r.out, 1, true)
    assert.are.equal(1001, mine.closed:wait(WAIT))
    assert.are.equal("going away", mine.close_reason)
    assert.is_nil(mine:receive():wait(WAIT))
  end)
end)
