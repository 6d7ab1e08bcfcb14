-- pulsar.http.request / pulsar.http.get (lua/pulsar/httpclient.lua) as a
-- user meets them: against a pulsar HttpServer in this process, against
-- Python's http.server (a server nobody here wrote), and against a raw
-- socket server written below that sends what no polite server would
-- (chunked and close-delimited bodies, garbage, silence, a close instead
-- of an answer); from the arbiter, a thread actor and a process actor.
local support = require "support"
local http = require "pulsar.http"
local client = require "pulsar.httpclient"

local WAIT = 30 -- seconds; generous, for slow machines and sanitizers

local function fails_with(pattern, fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.matches(pattern, tostring(err))
  return tostring(err)
end

-- The pulsar server: one worker, so that its count of accepted
-- connections (server.processed) counts every connection made to it.
local function handler(request)
  local path = request.path
  if path == "/echo" then
    return 200, {["X-Method"] = request.method, ["X-Got"] = request.headers["x-mine"] or "-"},
           request.method .. " " .. #request.body .. " " .. request.body:sub(1, 20)
  elseif path == "/connections" then
    return tostring(pulsar.get_actor():info().server.processed)
  elseif path == "/big" then
    return string.rep("b", tonumber(request.query.n))
  elseif path == "/status" then
    return tonumber(request.query.s), {Location = "/elsewhere"}, ""
  elseif path == "/cookies" then
    return 200, {["Set-Cookie"] = {"a=1; Path=/", "b=2"}}, "ok"
  end
  return 404, "no route " .. path
end

-- The raw server: answers by the request's path (read up to the end of
-- its head; bodies are not sent to it).
local RAW = {
  ["/chunked"] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" ..
                 "5\r\nhello\r\n7;ext=1\r\n, chunk\r\n1\r\ns\r\n0\r\nX-Trailer: t\r\n\r\n",
  ["/until-close"] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the server closes",
  ["/garbage"] = "SSH-2.0-OpenSSH_9.2\r\n\r\n",
  ["/two-lengths"] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
  ["/cut"] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
  ["/interim"] = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
}
local CLOSE_AFTER = {["/until-close"] = true, ["/cut"] = true, ["/garbage"] = true}

local function raw_protocol(raw_stats)
  local buffered, served = "", 0
  return {
    connection_made = function(self, transport) self.transport = transport end,
    data_received = function(self, data)
      buffered = buffered .. data
      while true do
        local head_end = buffered:find("\r\n\r\n", 1, true)
        if not head_end then return end
        local path = buffered:match("^%u+ (%S+)")
        buffered = buffered:sub(head_end + 4)
        served = served + 1
        raw_stats.requests = raw_stats.requests + 1
        if path == "/silent" then return end
        if path == "/idle-close" then -- keep-alive, then closed while idle
          self.transport:write("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nidle")
          local transport = self.transport
          require("pulsar.core").timer(0.05, function() transport:close() end)
          return
        end
        if path == "/once" then -- a keep-alive answer, then a close for the next request
          if served > 1 then return self.transport:close() end
          self.transport:write("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nonce")
        else
          self.transport:write(RAW[path] or "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
          if CLOSE_AFTER[path] then return self.transport:close() end
        end
      end
    end,
  }
end

local app, monitor, base, raw, raw_base, raw_stats

local function connections()
  return tonumber(http.get(base .. "/connections"):wait(WAIT).body)
end

setup(function()
  app = pulsar.apps.HttpServer{name = "client-spec", bind = "127.0.0.1:0", workers = 1,
                               handler = handler}
  monitor = app:start():wait(WAIT)
  base = "http://" .. app.address
  raw_stats = {requests = 0, connections = 0}
  raw = pulsar.create_server{host = "127.0.0.1", port = 0, protocol = function()
    raw_stats.connections = raw_stats.connections + 1
    return raw_protocol(raw_stats)
  end}:wait(WAIT)
  raw_base = "http://127.0.0.1:" .. raw.port
end)

teardown(function()
  client.close_idle()
  if raw then raw:close() end
  if monitor then pulsar.send(monitor, "stop"):wait(WAIT) end
end)

describe("pulsar.http against a pulsar HttpServer", function()
  it("GETs and POSTs with bodies and headers", function()
    local r = http.get(base .. "/echo", {headers = {["X-Mine"] = "yes"}}):wait(WAIT)
    assert.are.equal(200, r.status)
    assert.are.equal("OK", r.reason)
    assert.are.equal("HTTP/1.1", r.version)
    assert.are.equal("GET 0 ", r.body)
    assert.are.equal("yes", r.headers["x-got"])
    assert.are.equal("GET", r.headers["x-method"])
    r = http.request{method = "post", url = base .. "/echo", body = "name=ann"}:wait(WAIT)
    assert.are.equal("POST 8 name=ann", r.body)
    r = http.request{method = "PUT", url = base .. "/echo"}:wait(WAIT)
    assert.are.equal("PUT 0 ", r.body)
    r = http.get(base .. "/nowhere"):wait(WAIT)
    assert.are.equal(404, r.status)
    assert.are.equal("no route /nowhere", r.body)
  end)

  it("reuses a kept-alive connection for the next requests", function()
    local before = connections()
    for _ = 1, 5 do assert.are.equal(200, http.get(base .. "/echo"):wait(WAIT).status) end
    assert.are.equal(before, connections())
    assert.are.equal(1, client.idle_count("127.0.0.1:" .. app.address:match(":(%d+)$")))
  end)

  it("pools one connection per request in flight, and reuses them", function()
    client.close_idle()
    local before = connections() -- one new connection, pooled
    local futures = {}
    for i = 1, 3 do futures[i] = http.get(base .. "/echo") end
    for i = 1, 3 do assert.are.equal(200, futures[i]:wait(WAIT).status) end
    local after = connections()
    assert.are.equal(before + 2, after) -- the pooled one, and two more at once
    for i = 1, 3 do futures[i] = http.get(base .. "/echo") end
    for i = 1, 3 do futures[i]:wait(WAIT) end
    assert.are.equal(after, connections())
  end)

  it("answers HEAD without waiting for a body", function()
    local r = http.request{method = "HEAD", url = base .. "/big?n=5000", timeout = WAIT}:wait(WAIT)
    assert.are.equal(200, r.status)
    assert.are.equal("5000", r.headers["content-length"])
    assert.are.equal("", r.body)
    -- the connection is still in step: the next answer is its own
    assert.are.equal("GET 0 ", http.get(base .. "/echo"):wait(WAIT).body)
  end)

  it("carries bodies of megabytes both ways", function()
    local n = 6 * 1024 * 1024
    local r = http.get(base .. "/big?n=" .. n):wait(WAIT)
    assert.are.equal(n, #r.body)
    assert.are.equal(string.rep("b", n), r.body)
    local sent = string.rep("p", 3 * 1024 * 1024)
    r = http.request{method = "POST", url = base .. "/echo", body = sent}:wait(WAIT)
    assert.are.equal("POST " .. #sent .. " " .. string.rep("p", 20), r.body)
  end)

  it("refuses a body past max_body, naming the limit", function()
    fails_with("http: GET .*/big%?n=2000: bad response: Content%-Length 2000 exceeds the body limit of 1000 bytes",
               function() http.get(base .. "/big?n=2000", {max_body = 1000}):wait(WAIT) end)
  end)

  it("gives redirects as they are, and repeated Set-Cookie as a list", function()
    local r = http.get(base .. "/status?s=302"):wait(WAIT)
    assert.are.equal(302, r.status)
    assert.are.equal("/elsewhere", r.headers.location)
    r = http.get(base .. "/cookies"):wait(WAIT)
    table.sort(r.headers["set-cookie"])
    assert.are.same({"a=1; Path=/", "b=2"}, r.headers["set-cookie"])
    r = http.get(base .. "/status?s=204"):wait(WAIT)
    assert.are.equal(204, r.status)
    assert.are.equal("", r.body)
  end)
end)

describe("pulsar.http against servers it did not write", function()
  it("reads Python's http.server (HTTP/1.0, a new connection each time)", function()
    local dir = support.temp_dir()
    support.write_file(dir .. "/hello.txt", "hello from python\n")
    local pid_file = support.tmpname(".pid")
    local line = ("echo $$ > %s; exec /usr/bin/python3 -u -m http.server 0 --bind 127.0.0.1 --directory %s")
      :format(support.quote(pid_file), support.quote(dir))
    local py = support.start("", nil, "sh -c " .. support.quote(line))
    local port = py.wait_output("port (%d+)", WAIT)
    assert(port, "python's http.server did not start: " .. py.err())
    local ok, err = pcall(function()
      local url = "http://127.0.0.1:" .. port
      for _ = 1, 2 do
        local r = http.get(url .. "/hello.txt", {timeout = WAIT}):wait(WAIT)
        assert.are.equal(200, r.status)
        assert.are.equal("hello from python\n", r.body)
        assert.are.equal("18", r.headers["content-length"])
      end
      assert.are.equal(404, http.get(url .. "/missing"):wait(WAIT).status)
      assert.are.equal(0, client.idle_count("127.0.0.1:" .. port)) -- HTTP/1.0: not kept
    end)
    os.execute("kill " .. tonumber(support.read_file(pid_file)))
    assert(ok, err)
  end)

  it("reads a chunked body, with extensions and trailers", function()
    local r = http.get(raw_base .. "/chunked"):wait(WAIT)
    assert.are.equal("hello, chunks", r.body)
    assert.are.equal("chunked", r.headers["transfer-encoding"])
  end)

  it("reads a body that ends when the server closes", function()
    local r = http.get(raw_base .. "/until-close"):wait(WAIT)
    assert.are.equal("until the server closes", r.body)
  end)

  it("skips an interim 100 Continue", function()
    assert.are.equal("final", http.get(raw_base .. "/interim"):wait(WAIT).body)
  end)

  it("fails on a malformed response, naming what was wrong", function()
    fails_with("http: GET " .. raw_base .. "/garbage: bad response: malformed response",
               function() http.get(raw_base .. "/garbage"):wait(WAIT) end)
    fails_with("bad response: .*content%-length",
               function() http.get(raw_base .. "/two-lengths"):wait(WAIT) end)
    fails_with("bad response: the connection closed in the middle of the response body",
               function() http.get(raw_base .. "/cut"):wait(WAIT) end)
  end)

  it("times out the whole exchange, naming the URL and the time", function()
    local url = raw_base .. "/silent"
    fails_with("http: GET " .. url:gsub("%p", "%%%0") .. ": no complete response within 0.5 s",
               function() http.get(url, {timeout = 0.5}):wait(WAIT) end)
    -- the timed-out connection is not pooled
    assert.are.equal(0, client.idle_count("127.0.0.1:" .. raw.port))
  end)

  it("fails on a refused connection", function()
    local s = pulsar.create_server{host = "127.0.0.1", port = 0, protocol = function() return {} end}:wait(WAIT)
    local port = s.port
    s:close()
    fails_with("http: GET http://127.0.0.1:" .. port .. "/: cannot connect to 127.0.0.1:" .. port .. ": connection refused",
               function() http.get("http://127.0.0.1:" .. port .. "/"):wait(WAIT) end)
  end)

  it("retries an idempotent request once when a pooled connection was closed", function()
    local before = raw_stats.connections
    assert.are.equal("once", http.get(raw_base .. "/once"):wait(WAIT).body)
    -- the pooled connection closes on the next request: a GET is sent again
    assert.are.equal("once", http.get(raw_base .. "/once"):wait(WAIT).body)
    assert.are.equal(before + 2, raw_stats.connections)
    -- a POST is not: it might have been acted on
    fails_with("http: POST .*/once: the server closed the connection without answering",
               function() http.request{method = "POST", url = raw_base .. "/once", body = "x"}:wait(WAIT) end)
  end)

  it("drops a pooled connection the server closed while idle", function()
    local key = "127.0.0.1:" .. raw.port
    local before = raw_stats.connections
    assert.are.equal("idle", http.get(raw_base .. "/idle-close"):wait(WAIT).body)
    assert.are.equal(1, client.idle_count(key))
    assert.is_truthy(support.wait_for(function() return client.idle_count(key) == 0 end, WAIT))
    assert.are.equal("idle", http.request{method = "POST", url = raw_base .. "/idle-close"}:wait(WAIT).body)
    assert.are.equal(before + 2, raw_stats.connections)
  end)

  it("refuses what it cannot do with a clear error, at once", function()
    fails_with("https: not supported until TLS", function() http.get("https://127.0.0.1/") end)
    fails_with("only http:// URLs are supported, not ftp://", function() http.get("ftp://x/") end)
    fails_with("not an absolute http:// URL", function() http.get("/relative") end)
    fails_with("body must be a string, not a table",
               function() http.request{url = base, method = "POST", body = {"a"}} end)
    fails_with("value holds CR, LF or NUL",
               function() http.request{url = base, headers = {X = "a\r\nInjected: 1"}} end)
  end)
end)

describe("pulsar.http from actors", function()
  for _, kind in ipairs {"thread", "process"} do
    it("works from a " .. kind .. " actor, keeping its connection alive", function()
      local a = pulsar.spawn{name = "client-" .. kind, concurrency = kind}:wait(WAIT)
      local got = pulsar.send(a, "run", function(_, url)
        local h = require "pulsar.http"
        local first = h.get(url .. "/connections"):wait(30).body
        local r = h.request{method = "POST", url = url .. "/echo", body = "from an actor"}:wait(30)
        local last = h.get(url .. "/connections"):wait(30).body
        return {r.status, r.body, first == last}
      end, base):wait(WAIT)
      pulsar.send(a, "stop")
      assert.are.same({200, "POST 13 from an actor", true}, got)
    end)
  end
end)
