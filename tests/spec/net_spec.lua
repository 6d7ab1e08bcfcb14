-- TCP and Unix sockets for Lua (docs/API.md §2 "Networking"; lua/pulsar/net.lua,
-- host/transport/net.c, host/bind/lnet.c): servers with protocols, client streams, flow
-- control, addresses and errors, over real sockets on 127.0.0.1 and in a
-- private directory.
local core = require "pulsar.core"
local support = require "support"

local WAIT = 20 -- seconds; generous, for slow machines and sanitizers
local VALGRIND = "valgrind -q --leak-check=full --show-leak-kinds=definite,indirect " ..
                 "--errors-for-leak-kinds=definite,indirect --error-exitcode=99"

local temp_dir = support.temp_dir

-- A protocol factory echoing what it reads; `log` (optional) records the
-- events of every connection it makes.
local function echo(log)
  return function()
    local p = {events = {}}
    if log then log[#log + 1] = p end
    function p.connection_made(self, transport) self.transport = transport end
    function p.data_received(self, data) self.transport:write(data) end
    function p.connection_lost(self, err)
      self.events[#self.events + 1] = {"lost", err}
    end
    return p
  end
end

local function serve(params)
  return pulsar.create_server(params):wait(WAIT)
end

local function wait_until(check) return require("support").wait_for(check, WAIT) and true or false end

-- Reads everything up to the end of the stream.
local function read_all(stream) return support.read_all(stream, WAIT) end

describe("create_server and open_connection", function()
  it("echo over TCP, with the real port in the address", function()
    local server = serve{host = "127.0.0.1", port = 0, protocol = echo()}
    assert.matches("^127%.0%.0%.1:%d+$", server.address)
    assert.is_true(server.port > 0)
    local stream = pulsar.open_connection("127.0.0.1", server.port):wait(WAIT)
    for i = 1, 20 do
      stream:write("ping " .. i .. "\n")
      assert.are.equal("ping " .. i, stream:readline():wait(WAIT))
    end
    assert.are.equal(server.address, stream.peername)
    stream:close()
    stream:wait_closed():wait(WAIT)
    server:close()
  end)

  it("echo over a Unix socket, whose file goes with the server", function()
    local dir = temp_dir()
    local path = dir .. "/echo.sock"
    local server = serve{path = path, protocol = echo()}
    assert.are.equal("unix:" .. path, server.address)
    local stream = pulsar.open_connection("unix:" .. path):wait(WAIT)
    stream:write("over unix\n")
    assert.are.equal("over unix", stream:readline():wait(WAIT))
    assert.matches("^unix:", stream:get_extra_info("peername"))
    stream:close()
    server:close()
    assert.is_nil(io.open(path))
    os.execute(("rm -rf '%s'"):format(dir))
  end)

  it("serves many connections at once", function()
    local server = serve{host = "127.0.0.1", port = 0, protocol = echo()}
    local tasks = {}
    for i = 1, 100 do
      tasks[i] = pulsar.async(function()
        local s = pulsar.open_connection(server.address):wait(WAIT)
        s:write(("client %d\n"):format(i))
        local line = s:readline():wait(WAIT)
        s:close()
        return line
      end)
    end
    local lines = pulsar.gather(table.unpack(tasks)):wait(WAIT * 2)
    for i = 1, 100 do assert.are.equal(("client %d"):format(i), lines[i]) end
    assert.is_true(wait_until(function() return server.open == 0 end))
    assert.are.equal(100, server.processed)
    server:close()
  end)

  it("carries several megabytes intact, both ways", function()
    local server = serve{host = "127.0.0.1", port = 0, protocol = echo()}
    local stream = pulsar.open_connection(server.address):wait(WAIT)
    local pieces = {}
    for i = 1, 50000 do pieces[i] = ("%07d;"):format(i * 7919 % 10000000) end
    local blob = table.concat(pieces) -- 400 KB of varied bytes
    blob = blob:rep(10)               -- 4 MB
    local reader = pulsar.async(function()
      local got, parts = 0, {}
      while got < #blob do
        local data = stream:read():wait(WAIT)
        assert.truthy(data, "the stream ended early")
        parts[#parts + 1] = data
        got = got + #data
      end
      return table.concat(parts)
    end)
    for i = 1, #blob, 100000 do
      stream:write(blob:sub(i, i + 99999))
      stream:drain():wait(WAIT)
    end
    local back = reader:wait(WAIT * 3)
    assert.are.equal(#blob, #back)
    assert.is_true(back == blob, "the bytes came back changed")
    stream:close()
    server:close()
  end)

  it("reads lines, refusing one longer than the limit", function()
    local server = serve{host = "127.0.0.1", port = 0, protocol = echo()}
    local stream = pulsar.open_connection{host = "127.0.0.1", port = server.port, limit = 1000}:wait(WAIT)
    stream:write("one\ntwo\r\n\nthree")
    assert.are.equal("one", stream:readline():wait(WAIT))
    assert.are.equal("two\r", stream:readline():wait(WAIT))
    assert.are.equal("", stream:readline():wait(WAIT))
    stream:write(" and more\n")
    assert.are.equal("three and more", stream:readline():wait(WAIT))
    stream:write(string.rep("x", 5000) .. "\n")
    local ok, err = pcall(function() return stream:readline():wait(WAIT) end)
    assert.is_false(ok)
    assert.matches("readline: line longer than 1000 bytes", err)
    -- the bytes stay for read(), and the stream goes on
    local rest = 0
    while rest < 5001 do rest = rest + #stream:read():wait(WAIT) end
    stream:write("after\n")
    assert.are.equal("after", stream:readline():wait(WAIT))
    stream:close()
    server:close()
  end)

  it("gives nil at the end of the stream, after the last bytes", function()
    local server = serve{host = "127.0.0.1", port = 0, protocol = function()
      return {connection_made = function(_, t) t:write("last words\nno newline") t:close() end}
    end}
    local stream = pulsar.open_connection(server.address):wait(WAIT)
    assert.are.equal("last words", stream:readline():wait(WAIT))
    assert.are.equal("no newline", stream:readline():wait(WAIT))
    assert.is_nil(stream:readline():wait(WAIT))
    assert.is_nil(stream:read():wait(WAIT))
    assert.is_nil(stream:read(10):wait(WAIT))
    assert.is_true(stream:at_eof())
    stream:close()
    server:close()
  end)

  it("keeps a connection half-open when eof_received returns true", function()
    local server = serve{host = "127.0.0.1", port = 0, protocol = function()
      local p = {got = {}}
      function p.connection_made(self, t) self.t = t end
      function p.data_received(self, data) self.got[#self.got + 1] = data end
      function p.eof_received(self)
        self.t:write("you sent " .. #table.concat(self.got) .. " bytes")
        self.t:close()
        return true
      end
      return p
    end}
    local stream = pulsar.open_connection(server.address):wait(WAIT)
    stream:write("12345")
    stream:write("678")
    stream:write_eof()
    assert.are.equal("you sent 8 bytes", read_all(stream))
    server:close()
  end)

  it("calls connection_lost once, with nil after a clean close", function()
    local log = {}
    local server = serve{host = "127.0.0.1", port = 0, protocol = echo(log)}
    local stream = pulsar.open_connection(server.address):wait(WAIT)
    stream:write("x")
    assert.are.equal("x", stream:read():wait(WAIT))
    stream:close()
    assert.is_true(wait_until(function() return log[1] and #log[1].events > 0 end))
    pulsar.sleep(0.2)
    assert.are.same({{"lost", nil}}, log[1].events)
    -- an abort by our side ends the peer's connection too
    stream = pulsar.open_connection(server.address):wait(WAIT)
    stream:write("y")
    assert.are.equal("y", stream:read():wait(WAIT))
    stream.transport:abort()
    assert.is_true(wait_until(function() return log[2] and #log[2].events > 0 end))
    assert.are.equal(1, #log[2].events)
    assert.is_nil(stream:read():wait(WAIT))
    server:close()
  end)

  it("tells a protocol of its end once: an abort before it returns, a close once written", function()
    local log = {}
    local server = serve{host = "127.0.0.1", port = 0, protocol = function()
      local p = echo(log)()
      function p.data_received(self, data)
        self.events[#self.events + 1] = {"data", data}
        if data == "abort" then
          self.transport:abort("by the protocol")
          self.events[#self.events + 1] = {"abort returned"}
        elseif data == "close" then
          self.transport:write("bye")
          self.transport:close()
          self.events[#self.events + 1] = {"close returned"}
        end
      end
      return p
    end}
    local a = pulsar.open_connection(server.address):wait(WAIT)
    a:write("abort")
    assert.is_nil(a:read():wait(WAIT))
    assert.is_true(wait_until(function() return log[1] and #log[1].events >= 3 end))
    assert.are.same({{"data", "abort"}, {"lost", "by the protocol"}, {"abort returned"}}, log[1].events)
    local c = pulsar.open_connection(server.address):wait(WAIT)
    c:write("close")
    assert.are.equal("bye", read_all(c))
    assert.is_true(wait_until(function() return log[2] and #log[2].events >= 3 end))
    pulsar.sleep(0.1)
    assert.are.same({{"data", "close"}, {"close returned"}, {"lost", nil}}, log[2].events)
    assert.are.equal(0, server.open)
    server:close()
  end)

  it("tells peername and sockname", function()
    local seen = {}
    local server = serve{host = "127.0.0.1", port = 0, protocol = function()
      return {connection_made = function(_, t)
        seen.peer, seen.sock = t:get_extra_info("peername"), t:get_extra_info("sockname")
        seen.other = t:get_extra_info("nothing")
      end}
    end}
    local stream = pulsar.open_connection(server.address):wait(WAIT)
    assert.is_true(wait_until(function() return seen.peer end))
    assert.are.equal(server.address, seen.sock)
    assert.are.equal(stream.sockname, seen.peer)
    assert.is_nil(seen.other)
    stream:close()
    server:close()
  end)

  it("binds a comma list of addresses, each serving", function()
    local dir = temp_dir()
    local server = serve{bind = "127.0.0.1:0, unix:" .. dir .. "/b.sock", protocol = echo()}
    assert.are.equal(2, #server.addresses)
    for _, address in ipairs(server.addresses) do
      local s = pulsar.open_connection(address):wait(WAIT)
      s:write("hi\n")
      assert.are.equal("hi", s:readline():wait(WAIT))
      s:close()
    end
    server:close()
    os.execute(("rm -rf '%s'"):format(dir))
  end)

  it("binds every interface with :PORT (IPv4 and IPv6), and resolves names", function()
    local server = serve{bind = ":0", protocol = echo()}
    assert.matches("^%[::%]:%d+$", server.address)
    for _, address in ipairs {"127.0.0.1:", "[::1]:", "localhost:"} do
      local s = pulsar.open_connection(address .. server.port):wait(WAIT)
      s:write("from " .. address .. "\n")
      assert.are.equal("from " .. address, s:readline():wait(WAIT))
      s:close()
    end
    server:close()
    local named = serve{host = "localhost", port = 0, protocol = echo()}
    -- whichever loopback the resolver lists first
    assert.truthy(named.address:match("^127%.0%.0%.1:%d+$") or named.address:match("^%[::1%]:%d+$"),
                  named.address)
    named:close()
  end)

  it("closes connections idle longer than keep_alive", function()
    local server = serve{host = "127.0.0.1", port = 0, keep_alive = 0.3, protocol = echo()}
    local stream = pulsar.open_connection(server.address):wait(WAIT)
    stream:write("still here\n")
    assert.are.equal("still here", stream:readline():wait(WAIT))
    local t0 = pulsar.time()
    assert.is_nil(stream:read():wait(WAIT))
    assert.is_true(pulsar.time() - t0 >= 0.2)
    server:close()
  end)
end)

describe("flow control", function()
  it("pauses a producer whose peer does not read, and resumes it", function()
    local chunk = string.rep("p", 16 * 1024)
    local state = {paused = 0, resumed = 0, max_queue = 0, sent = 0}
    local server = serve{host = "127.0.0.1", port = 0, protocol = function()
      local p = {}
      local function produce(self)
        while not self.paused and state.sent < 64 * 1024 * 1024 do
          self.t:write(chunk)
          state.sent = state.sent + #chunk
          state.max_queue = math.max(state.max_queue, self.t:get_write_buffer_size())
        end
      end
      function p.connection_made(self, t) self.t = t; produce(self) end
      function p.pause_writing(self) self.paused = true; state.paused = state.paused + 1 end
      function p.resume_writing(self)
        self.paused = false
        state.resumed = state.resumed + 1
        if state.resumed < 3 then produce(self) else self.t:close() end
      end
      return p
    end}
    local stream = pulsar.open_connection(server.address):wait(WAIT)
    assert.is_true(wait_until(function() return state.paused == 1 end))
    pulsar.sleep(0.3) -- nobody reads: nothing more is produced
    local sent = state.sent
    assert.are.equal(1, state.paused)
    assert.is_true(state.sent < 64 * 1024 * 1024, "the producer was never paused")
    assert.is_true(state.max_queue <= 64 * 1024 + #chunk,
                   "the queue grew to " .. state.max_queue .. " bytes")
    pulsar.sleep(0.2)
    assert.are.equal(sent, state.sent)
    -- reading lets it go on; every byte arrives
    local total = #read_all(stream)
    assert.are.equal(3, state.paused)
    assert.are.equal(3, state.resumed)
    assert.are.equal(state.sent, total)
    server:close()
  end)

  it("pauses reading for a protocol without pause_writing (an echo)", function()
    local transports = {}
    local max_queue = 0
    local server = serve{host = "127.0.0.1", port = 0, protocol = function()
      local p = {}
      function p.connection_made(self, t) self.t = t; transports[#transports + 1] = t end
      function p.data_received(self, data)
        self.t:write(data)
        max_queue = math.max(max_queue, self.t:get_write_buffer_size())
      end
      return p
    end}
    local stream = pulsar.open_connection(server.address):wait(WAIT)
    local total = 16 * 1024 * 1024
    local block = string.rep("e", 256 * 1024)
    for _ = 1, total // #block do stream:write(block) end -- queued here, unread
    pulsar.sleep(0.5)
    assert.is_true(max_queue <= 2 * 64 * 1024 + 64 * 1024,
                   "the echo queued " .. max_queue .. " bytes for a peer that does not read")
    local got = 0
    while got < total do got = got + #stream:read():wait(WAIT) end
    assert.are.equal(total, got)
    stream:close()
    server:close()
  end)

  it("pause_reading and resume_reading hold and release what arrives", function()
    local p = {got = {}}
    local server = serve{host = "127.0.0.1", port = 0, protocol = function()
      function p.connection_made(self, t) self.t = t; t:pause_reading() end
      function p.data_received(self, data) self.got[#self.got + 1] = data end
      return p
    end}
    local stream = pulsar.open_connection(server.address):wait(WAIT)
    stream:write("held back")
    pulsar.sleep(0.3)
    assert.are.same({}, p.got)
    p.t:resume_reading()
    assert.is_true(wait_until(function() return #p.got > 0 end))
    assert.are.equal("held back", table.concat(p.got))
    stream:close()
    server:close()
  end)

  it("a stream stops reading past its limit until the caller reads", function()
    local size = 4 * 1024 * 1024
    local server = serve{host = "127.0.0.1", port = 0, protocol = function()
      return {connection_made = function(_, t) t:write(string.rep("s", size)) t:close() end}
    end}
    local stream = pulsar.open_connection{host = "127.0.0.1", port = server.port, limit = 4096}:wait(WAIT)
    pulsar.sleep(0.3)
    assert.is_true(stream._size <= 4096 + 64 * 1024, "the stream buffered " .. stream._size .. " bytes")
    assert.are.equal(size, #read_all(stream))
    server:close()
  end)
end)

describe("errors", function()
  it("a refused connection names the address", function()
    local server = serve{host = "127.0.0.1", port = 0, protocol = echo()}
    local address = server.address
    server:close()
    local ok, err = pcall(function() return pulsar.open_connection(address):wait(WAIT) end)
    assert.is_false(ok)
    assert.matches("cannot connect to " .. address:gsub("%.", "%%.") .. ": connection refused", err)
    ok, err = pcall(function() return pulsar.open_connection("unix:/nonexistent/x.sock"):wait(WAIT) end)
    assert.is_false(ok)
    assert.matches("cannot connect to unix:/nonexistent/x.sock: no such file", err)
  end)

  it("gives up a connection nobody answers after its timeout", function()
    -- a listening socket nobody accepts on, its backlog full: the kernel
    -- drops further SYNs, and a connect would wait for minutes of retries
    local sock = assert(core.net_bind{ip = "127.0.0.1", port = 0, backlog = 1})
    local port = tonumber(sock.address:match(":(%d+)$"))
    local held, refused = {}, nil
    for _ = 1, 8 do
      local ok, s = pcall(function()
        return pulsar.open_connection{host = "127.0.0.1", port = port, timeout = 0.5}:wait(WAIT)
      end)
      if not ok then refused = s break end
      held[#held + 1] = s
    end
    assert.matches("cannot connect to 127%.0%.0%.1:" .. port .. ": no answer within 0%.5 s", refused)
    for _, s in ipairs(held) do s:close() end
    sock:close()
    assert.has_error(function() pulsar.open_connection{host = "127.0.0.1", port = port, timeout = -1} end,
                     "open_connection: timeout must be a number of seconds above 0")
  end)

  it("bad addresses and settings get clear messages", function()
    local function fails(pattern, fn)
      local ok, err = pcall(fn)
      assert.is_false(ok, "expected an error matching " .. pattern)
      assert.matches(pattern, tostring(err))
    end
    local p = echo()
    fails("'nonsense' is not an address %(HOST:PORT, :PORT or unix:PATH%)",
          function() pulsar.create_server{bind = "nonsense", protocol = p} end)
    fails("'127.0.0.1:99999' has no valid port", function() pulsar.create_server{bind = "127.0.0.1:99999", protocol = p} end)
    fails("'host:http' has no valid port", function() pulsar.create_server{bind = "host:http", protocol = p} end)
    fails("'unix:' names no socket path", function() pulsar.create_server{bind = "unix:", protocol = p} end)
    fails("'/tmp/x.sock' is not an address %(HOST:PORT, :PORT or unix:PATH%): write unix:/tmp/x.sock for a Unix socket",
          function() pulsar.create_server{bind = "/tmp/x.sock", protocol = p} end)
    fails("port must be a whole number from 0 to 65535", function() pulsar.create_server{port = -1, protocol = p} end)
    fails("protocol must be a function", function() pulsar.create_server{port = 0, protocol = {}} end)
    fails("keep_alive must be a number", function() pulsar.create_server{port = 0, protocol = p, keep_alive = "x"} end)
    fails("open_connection: port must be a whole number", function() pulsar.open_connection("127.0.0.1", "x") end)
    fails("cannot bind 10%.255%.255%.1:0: ", function()
      pulsar.create_server{host = "10.255.255.1", port = 0, protocol = p}:wait(WAIT)
    end)
    fails("Unix socket path is too long", function()
      pulsar.create_server{path = "/tmp/" .. string.rep("x", 200), protocol = p}:wait(WAIT)
    end)
    fails("cannot resolve 'no%-such%-host%.invalid'", function()
      pulsar.open_connection("no-such-host.invalid", 80):wait(WAIT)
    end)
    -- an address in use
    local server = serve{host = "127.0.0.1", port = 0, protocol = p}
    fails("cannot bind " .. server.address:gsub("%.", "%%.") .. ": .*EADDRINUSE", function()
      pulsar.create_server{bind = server.address, protocol = p}:wait(WAIT)
    end)
    server:close()
  end)

  it("a failing protocol costs only its own connection", function()
    local calls = 0
    local server = serve{host = "127.0.0.1", port = 0, protocol = function()
      calls = calls + 1
      if calls == 1 then error("factory broke") end
      return {
        connection_made = function(self, t) self.t = t end,
        data_received = function(self, data)
          if data == "boom" then error("handler broke") end
          self.t:write(data)
        end,
      }
    end}
    local first = pulsar.open_connection(server.address):wait(WAIT)
    assert.is_nil(first:read():wait(WAIT)) -- closed for want of a protocol
    local second = pulsar.open_connection(server.address):wait(WAIT)
    local third = pulsar.open_connection(server.address):wait(WAIT)
    second:write("boom")
    assert.is_nil(second:read():wait(WAIT)) -- closed: its protocol is in no known state
    third:write("fine\n")
    assert.are.equal("fine", third:readline():wait(WAIT))
    third:close()
    server:close()
  end)

  it("write on a closed transport reports it, and a stream raises", function()
    local server = serve{host = "127.0.0.1", port = 0, protocol = echo()}
    local stream = pulsar.open_connection(server.address):wait(WAIT)
    stream:close()
    stream:wait_closed():wait(WAIT)
    local ok, err = stream.transport:write("late")
    assert.is_nil(ok)
    assert.are.equal("the transport is closed", err)
    assert.has_error(function() stream:write("late") end, "write: the transport is closed")
    server:close()
  end)
end)

describe("networking under valgrind", function()
  -- valgrind cannot run a sanitizer build, however it is named
  local skip = os.getenv("PULSAR_BUILD") == "asan"
               or os.execute(("ldd %s 2>/dev/null | grep -q libasan"):format(support.quote(support.exe)))
               or not os.execute("command -v valgrind >/dev/null 2>&1")

  it("leaks nothing and touches nothing freed, with connections open at exit", function()
    if skip then return pending("valgrind runs on the release build only") end
    local s = support.script([[
      local function echo() return {
        connection_made = function(self, t) self.t = t end,
        data_received = function(self, data) self.t:write(data) end,
      } end
      local app = pulsar.apps.SocketServer{name = "v", workers = 0, bind = "127.0.0.1:0", protocol = echo}
      app:start():wait()
      local server = pulsar.create_server{host = "127.0.0.1", port = 0, keep_alive = 30, protocol = echo}:wait()
      local a = pulsar.open_connection(app.address):wait()
      a:write("to the monitor\n")
      assert(a:readline():wait() == "to the monitor")
      local b = pulsar.open_connection(server.address):wait()
      b:write(string.rep("z", 3 * 1024 * 1024)) -- most of it still queued at exit
      local c = pulsar.open_connection(server.address):wait()
      c:close()
      print("ok") io.stdout:flush()
      pulsar.arbiter():stop()
    ]])
    local h = support.start("--exit-timeout 0.2 " .. support.quote(s), VALGRIND)
    assert.are.equal(0, h.wait(180), h.err())
    assert.are.equal("ok\n", h.out())
  end)
end)
