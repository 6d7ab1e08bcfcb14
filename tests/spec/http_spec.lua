-- HTTP/1.1: the request parser as Lua sees it (core.http_parser,
-- host/bind/lhttp.c) and pulsar.http's pure functions: query parsing, response
-- serialisation, dates, HEAD. The C unit tests (tests/c/test_http.c) cover
-- the parser byte by byte and at every split; the fuzz target covers it with
-- garbage.
--
-- The last block drives http.protocol with a plain Lua table standing in for
-- the transport: these are UNIT TESTS OF THE PROTOCOL LOGIC (ordering,
-- errors, flow control), not of a server. The HttpServer specs with real
-- sockets and curl come with the networking layer.
local core = require "pulsar.core"
local http = require "pulsar.http"
local support = require "support"

local function feed_all(parser, ...)
  local all = {}
  for _, chunk in ipairs {...} do
    local reqs, status, reason = parser:feed(chunk)
    for _, r in ipairs(reqs) do all[#all + 1] = r end
    if status then return all, status, reason end
  end
  return all
end

describe("core.http_parser", function()
  it("gives each request as a table", function()
    local p = core.http_parser()
    local reqs = p:feed("POST /a%20b/c?x=1&y=%41+z HTTP/1.1\r\nHost: h\r\n" ..
                        "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
    assert.are.equal(1, #reqs)
    local r = reqs[1]
    assert.are.equal("POST", r.method)
    assert.are.equal("/a%20b/c?x=1&y=%41+z", r.target)
    assert.are.equal("/a%20b/c", r.path)
    assert.are.equal("x=1&y=%41+z", r.query_string)
    assert.are.equal("HTTP/1.1", r.version)
    assert.are.same({host = "h", ["content-type"] = "text/plain", ["content-length"] = "5"},
                    r.headers)
    assert.are.equal("hello", r.body)
    assert.is_true(r.keep_alive)
    assert.is_false(r.expect_continue)
    assert.is_false(p:in_request())
    assert.is_nil(p:feed("GET / HTTP/1.1\r\nHost: h\r\n\r\n")[1].query_string)
  end)

  it("lower-cases names and joins repeated fields (cookies with ';')", function()
    local r = core.http_parser():feed("GET / HTTP/1.1\r\nHost: h\r\nX-Thing: A\r\nx-thing: B\r\n" ..
                                      "Cookie: a=1\r\nCOOKIE: b=2\r\n\r\n")[1]
    assert.are.same({host = "h", ["x-thing"] = "A, B", cookie = "a=1; b=2"}, r.headers)
  end)

  it("keeps pipelined requests in order, however the bytes are split", function()
    local stream = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" ..
                   "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET /3 HTTP/1.1\r\nHost: h\r\n\r\n"
    for _, size in ipairs {#stream, 1, 7, 20} do
      local p, chunks = core.http_parser(), {}
      for i = 1, #stream, size do chunks[#chunks + 1] = stream:sub(i, i + size - 1) end
      local reqs = feed_all(p, table.unpack(chunks))
      assert.are.same({"/1", "/2", "/3"}, {reqs[1].target, reqs[2].target, reqs[3].target})
      assert.are.equal("abcde", reqs[2].body)
    end
  end)

  it("answers bad input with a status and a reason, then nothing more", function()
    local reqs, status, reason = core.http_parser():feed("GET /ok HTTP/1.1\r\nHost: h\r\n\r\nBLAH\1\2\r\n\r\n")
    assert.are.equal(1, #reqs)
    assert.are.equal(400, status)
    assert.matches("malformed request", reason)

    local p = core.http_parser()
    local _, s1 = p:feed("GET /" .. string.rep("a", 1024 * 1024) .. " HTTP/1.1\r\nHost: h\r\n\r\n")
    assert.are.equal(414, s1)
    local again, s2, why = p:feed("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert.are.same({}, again)
    assert.are.equal(414, s2)
    assert.matches("request line longer than 65536 bytes", why)
  end)

  it("bounds the head, the fields and the body", function()
    local p = core.http_parser()
    local _, status = feed_all(p, "GET / HTTP/1.1\r\nHost: h\r\n", string.rep("X-A: b\r\n", 20000))
    assert.are.equal(431, status)
    local _, s, reason = core.http_parser():feed("GET / HTTP/1.1\r\nHost: h\r\n" ..
                                                 string.rep("A: b\r\n", 101) .. "\r\n")
    assert.are.equal(431, s)
    assert.matches("more than 100 header fields", reason)
    p = core.http_parser{max_body = 4, max_header = 100, max_headers = 3}
    _, s, reason = p:feed("PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n")
    assert.are.equal(413, s)
    assert.matches("exceeds the body limit of 4 bytes", reason)
    _, s = core.http_parser{max_header = 20}:feed("GET /0123456789 HTTP/1.1\r\nHost: h\r\n")
    assert.are.equal(414, s)
    assert.has_error(function() core.http_parser{max_body = -1} end,
                     "http_parser: max_body must be an integer from 0")
    assert.has_error(function() core.http_parser{max_header = "big"} end)
  end)

  it("says when a request waits for 100 Continue", function()
    local p = core.http_parser()
    assert.are.same({}, p:feed("PUT /f HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"))
    assert.is_true(p:in_request())
    assert.is_true(p:take_continue())
    assert.is_false(p:take_continue())
    local r = p:feed("abc")[1]
    assert.is_true(r.expect_continue)
    assert.are.equal("abc", r.body)
  end)

  it("follows HTTP/1.0 and Connection: close", function()
    local p = core.http_parser()
    local reqs = p:feed("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\nGET /c HTTP/1.0\r\n\r\n")
    assert.are.equal(2, #reqs)
    assert.are.same({true, false}, {reqs[1].keep_alive, reqs[2].keep_alive})
    assert.is_true(p:closed())
    p = core.http_parser()
    reqs = p:feed("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /ignored HTTP/1.1\r\nHost: h\r\n\r\n")
    assert.are.equal(1, #reqs)
    assert.is_false(reqs[1].keep_alive)
  end)
end)

describe("pulsar.http functions", function()
  it("parses query strings", function()
    assert.are.same({}, http.parse_query(nil))
    assert.are.same({}, http.parse_query(""))
    assert.are.same({a = "1", b = "two words", c = "", d = "x=y", ["k y"] = "+&"},
                    http.parse_query("a=1&b=two+words&c&d=x%3Dy&k+y=%2B%26"))
    -- repeated names give the list of their values, in order
    assert.are.same({x = {"1", "2", "3"}, y = "only"}, http.parse_query("x=1&y=only&x=2&x=3"))
    assert.are.same({a = "1"}, http.parse_query("&&a=1&&=dropped&"))
    assert.are.same({bad = "%zz%4"}, http.parse_query("bad=%zz%4"))
  end)

  it("decodes the path but not '+' in it", function()
    assert.are.equal("/a b/c+d/é", http.unescape("/a%20b/c+d/%C3%A9"))
    local req = http.incoming(core.http_parser():feed("GET /x%2Fy?q=a+b HTTP/1.1\r\nHost: h\r\n\r\n")[1])
    assert.are.equal("/x/y", req.path)
    assert.are.same({q = "a b"}, req.query)
    assert.are.equal("/x%2Fy?q=a+b", req.target)
  end)

  it("formats dates as IMF-fixdate in English, whatever the locale", function()
    assert.are.equal("Sun, 06 Nov 1994 08:49:37 GMT", http.date(784111777))
    assert.are.equal("Thu, 01 Jan 1970 00:00:00 GMT", http.date(0))
    assert.are.equal("Mon, 29 Feb 2016 23:59:59 GMT", http.date(1456790399))
    assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$", http.date())
  end)

  it("knows the reason phrases", function()
    assert.are.equal("OK", http.reason(200))
    assert.are.equal("Request Header Fields Too Large", http.reason(431))
    assert.are.equal("Unknown", http.reason(599))
  end)

  local function parse(response)
    local head, body = response:match("^(.-)\r\n\r\n(.*)$")
    local status_line, rest = head:match("^([^\r]*)\r\n(.*)$")
    local headers = {}
    for name, value in (rest .. "\r\n"):gmatch("([^:\r\n]+): ([^\r\n]*)\r\n") do
      headers[name:lower()] = value
    end
    return status_line, headers, body
  end

  it("serialises a response with its framing headers", function()
    local text, keep = http.response(200, {["X-Custom"] = "yes"}, "Hello World!")
    assert.is_true(keep)
    local line, headers, body = parse(text)
    assert.are.equal("HTTP/1.1 200 OK", line)
    assert.are.equal("Hello World!", body)
    assert.are.equal("12", headers["content-length"])
    assert.are.equal("yes", headers["x-custom"])
    assert.are.equal("keep-alive", headers.connection)
    assert.are.equal("text/plain; charset=utf-8", headers["content-type"])
    assert.are.equal("pulsar-lua/" .. pulsar.VERSION, headers.server)
    assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$", headers.date)
  end)

  it("lets the handler set its own headers, repeated ones and Connection: close", function()
    local text, keep = http.response(201, {["Content-Type"] = "application/json",
                                           ["Set-Cookie"] = {"a=1", "b=2"},
                                           Connection = "close", Server = "mine",
                                           ["Content-Length"] = 999}, {"[1,", "2]"})
    assert.is_false(keep)
    local line, headers, body = parse(text)
    assert.are.equal("HTTP/1.1 201 Created", line)
    assert.are.equal("[1,2]", body)
    assert.are.equal("5", headers["content-length"]) -- the body decides
    assert.are.equal("application/json", headers["content-type"])
    assert.are.equal("mine", headers.server)
    assert.are.equal("close", headers.connection)
    local _, count = text:gsub("Set%-Cookie: ", "")
    assert.are.equal(2, count)
    local _, connections = text:gsub("\r\nConnection: ", "")
    assert.are.equal(1, connections)
  end)

  it("answers HEAD with the same Content-Length and no body", function()
    local get = http.response(200, nil, "twelve bytes")
    local head = http.response(200, nil, "twelve bytes", {head = true})
    assert.are.equal(get:sub(1, #head), head)
    local _, headers, body = parse(head)
    assert.are.equal("12", headers["content-length"])
    assert.are.equal("", body)
    -- a HEAD handler may announce a length without making the body
    _, headers = parse(http.response(200, {["Content-Length"] = 4096}, nil, {head = true}))
    assert.are.equal("4096", headers["content-length"])
  end)

  it("sends no body nor length for 1xx, 204 and 304, and closes when told", function()
    local _, headers, body = parse(http.response(204, nil, "ignored"))
    assert.is_nil(headers["content-length"])
    assert.are.equal("", body)
    local text, keep = http.response(404, nil, nil, {keep_alive = false})
    assert.is_false(keep)
    _, headers = parse(text)
    assert.are.equal("close", headers.connection)
    assert.are.equal("0", headers["content-length"])
  end)

  it("refuses what would break the response", function()
    assert.has_error(function() http.response(20, nil, "") end, "invalid HTTP status 20")
    assert.has_error(function() http.response(200.5, nil, "") end)
    assert.has_error(function() http.response(200, {["X-A"] = "a\r\nInjected: 1"}, "") end,
                     "header 'X-A': value holds CR, LF or NUL")
    assert.has_error(function() http.response(200, {["Bad Name"] = "v"}, "") end)
    assert.has_error(function() http.response(200, {["X-A"] = true}, "") end)
    assert.has_error(function() http.response(200, nil, true) end)
  end)
end)

-- UNIT TESTS OF THE PROTOCOL LOGIC: a plain table stands in for the
-- transport (write appends to a list). The same behaviour over real sockets
-- is specified with HttpServer once the networking layer is merged.
describe("http.protocol (unit tests with a stand-in transport)", function()
  local function fake_transport()
    local t = {writes = {}, closed = false, reading = true, pauses = 0}
    function t:write(data) assert(not self.closed, "write after close"); self.writes[#self.writes + 1] = data end
    function t:close() self.closed = true end
    -- a lingering close shuts our side first: for these tests, the end
    function t:write_eof() self.closed = true end
    function t:pause_reading() self.reading = false; self.pauses = self.pauses + 1 end
    function t:resume_reading() self.reading = true end
    function t:get_extra_info(name) if name == "peername" then return "127.0.0.1:1" end end
    function t:output() return table.concat(self.writes) end
    return t
  end

  local function connect(handler, opts)
    local proto = http.protocol(handler, opts)()
    local t = fake_transport()
    proto:connection_made(t)
    return proto, t
  end

  local function responses(text)
    local out = {}
    for status in text:gmatch("HTTP/1%.1 (%d%d%d) ") do
      out[#out + 1] = tonumber(status)
    end
    return out
  end

  local function bodies(text)
    local out, pos = {}, 1
    while true do
      local s, e, len = text:find("Content%-Length: (%d+)\r\n.-\r\n\r\n", pos)
      if not s then return out end
      out[#out + 1] = text:sub(e + 1, e + tonumber(len))
      pos = e + tonumber(len) + 1
    end
  end

  it("answers a request with the handler's return", function()
    local seen
    local proto, t = connect(function(req)
      seen = req
      return 200, {["X-Path"] = req.path}, "hi " .. (req.query.name or "?")
    end)
    proto:data_received("GET /greet%21?name=bob HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal("GET", seen.method)
    assert.are.equal("/greet!", seen.path)
    assert.are.same({host = "x"}, seen.headers)
    assert.matches("^HTTP/1%.1 200 OK\r\n", t:output())
    assert.matches("X%-Path: /greet!\r\n", t:output())
    assert.are.same({"hi bob"}, bodies(t:output()))
    assert.is_false(t.closed)
  end)

  it("writes pipelined responses in request order, whatever finishes first", function()
    local proto, t = connect(function(req)
      if req.path == "/slow" then pulsar.sleep(0.1) end
      return req.path
    end)
    proto:data_received("GET /slow HTTP/1.1\r\nHost: h\r\n\r\nGET /fast HTTP/1.1\r\nHost: h\r\n\r\nGET /also HTTP/1.1\r\nHost: h\r\n\r\n")
    assert.are.equal("", t:output()) -- the fast ones wait for the slow one
    assert.truthy(support.wait_for(function() return #bodies(t:output()) == 3 end, 10))
    assert.are.same({"/slow", "/fast", "/also"}, bodies(t:output()))
  end)

  -- the errors below are logged (the next spec checks the log); keep the
  -- spec's output clean
  local function quietly(fn)
    core.set_log_level("none")
    local ok, err = pcall(fn)
    core.set_log_level(pulsar.cfg.log_level or "info")
    if not ok then error(err, 0) end
  end

  it("answers 500 to a handler error and keeps serving", function()
    local proto, t = connect(function(req)
      if req.path == "/boom" then error("handler broke") end
      return "fine"
    end)
    quietly(function()
      proto:data_received("GET /boom HTTP/1.1\r\nHost: h\r\n\r\nGET /ok HTTP/1.1\r\nHost: h\r\n\r\n")
    end)
    assert.are.same({500, 200}, responses(t:output()))
    assert.are.same({"Internal Server Error\n", "fine"}, bodies(t:output()))
    assert.is_false(t.closed)
  end)

  it("logs the traceback of a failing handler", function()
    local r = support.run(support.quote(support.script([[
      local http = require "pulsar.http"
      local function inner(req) error("deep trouble in " .. req.path) end
      local proto = http.protocol(function(req) local r = inner(req) return r end)()
      local out = {}
      proto:connection_made{write = function(_, d) out[#out + 1] = d end, close = function() end,
                            pause_reading = function() end, resume_reading = function() end,
                            get_extra_info = function() end}
      proto:data_received("GET /here HTTP/1.1\r\nHost: h\r\n\r\n")
      print(table.concat(out):match("^HTTP/1.1 (%d+)"))
    ]])))
    assert.are.equal(0, r.code)
    assert.matches("500", r.out)
    assert.matches("deep trouble in /here", r.err)
    assert.matches("stack traceback", r.err)
    assert.matches("in upvalue 'inner'", r.err)
  end)

  it("answers 500 when the handler returns something that is not a response", function()
    local proto, t = connect(function() return 200, {["X-A"] = "bad\r\nvalue"}, "" end)
    quietly(function() proto:data_received("GET / HTTP/1.1\r\nHost: h\r\n\r\n") end)
    assert.are.same({500}, responses(t:output()))
  end)

  it("takes a body string alone, a status with a body, or nothing", function()
    local results = {
      ["/a"] = function() return "just a body" end,
      ["/b"] = function() return 404, "not here" end,
      ["/c"] = function() end,
      ["/d"] = function() return 302, {Location = "/a"} end,
    }
    local proto, t = connect(function(req) return results[req.path]() end)
    proto:data_received("GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n" ..
                        "GET /d HTTP/1.1\r\nHost: h\r\n\r\n")
    assert.are.same({200, 404, 200, 302}, responses(t:output()))
    assert.are.same({"just a body", "not here", "", ""}, bodies(t:output()))
    assert.matches("Location: /a\r\n", t:output())
  end)

  it("answers HEAD without the body", function()
    local proto, t = connect(function() return "0123456789" end)
    proto:data_received("HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
    local out = t:output()
    local head = out:match("^(.-\r\n\r\n)HTTP/1.1")
    assert.truthy(head)
    assert.matches("Content%-Length: 10\r\n", head)
    assert.are.same({"0123456789"}, bodies(out:sub(#head + 1)))
  end)

  it("answers malformed input with 400 and Connection: close, then closes", function()
    local calls = 0
    local proto, t = connect(function() calls = calls + 1 return "x" end)
    proto:data_received("GET /first HTTP/1.1\r\nHost: h\r\n\r\n\0\1\2 garbage\r\n\r\n")
    local out = t:output()
    assert.are.same({200, 400}, responses(out))
    assert.matches("HTTP/1%.1 400 Bad Request\r\n.-Connection: close\r\n", out)
    assert.is_true(t.closed)
    assert.are.equal(1, calls)
    proto:data_received("GET / HTTP/1.1\r\nHost: h\r\n\r\n") -- ignored once closing
    assert.are.equal(1, calls)
  end)

  it("answers a body over max_body with 413 before reading it, then closes", function()
    local proto, t = connect(function() return "x" end, {max_body = 10})
    proto:data_received("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n")
    assert.are.same({413}, responses(t:output()))
    assert.matches("Connection: close\r\n", t:output())
    assert.is_true(t.closed)
  end)

  it("answers a request line of 1 MB with 414 and headers without end with 431", function()
    local proto, t = connect(function() return "x" end)
    local line = "GET /" .. string.rep("a", 1024 * 1024)
    for i = 1, #line, 65536 do proto:data_received(line:sub(i, i + 65535)) end
    assert.are.same({414}, responses(t:output()))
    assert.is_true(t.closed)
    proto, t = connect(function() return "x" end)
    proto:data_received("GET / HTTP/1.1\r\nHost: h\r\n")
    for _ = 1, 100 do proto:data_received(string.rep("X-Endless: yes\r\n", 100)) end
    assert.are.same({431}, responses(t:output()))
    assert.is_true(t.closed)
  end)

  it("sends 100 Continue before the body is read", function()
    local proto, t = connect(function(req) return "got " .. req.body end)
    proto:data_received("PUT /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    assert.are.equal("HTTP/1.1 100 Continue\r\n\r\n", t:output())
    proto:data_received("data")
    assert.are.same({100, 200}, responses(t:output()))
    assert.are.same({"got data"}, bodies(t:output()))
  end)

  it("honours Connection: close from the client and from the handler", function()
    local calls = 0
    local proto, t = connect(function() calls = calls + 1 return "x" end)
    proto:data_received("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\nHost: h\r\n\r\n")
    assert.are.equal(1, calls)
    assert.matches("Connection: close\r\n", t:output())
    assert.is_true(t.closed)

    proto, t = connect(function(req)
      if req.path == "/bye" then return 200, {Connection = "close"}, "bye" end
      return "x"
    end)
    proto:data_received("GET /bye HTTP/1.1\r\nHost: h\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n")
    assert.are.same({"bye"}, bodies(t:output()))
    assert.is_true(t.closed)
  end)

  it("keeps an HTTP/1.0 connection only with Connection: keep-alive", function()
    local proto, t = connect(function() return "x" end)
    proto:data_received("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert.matches("Connection: keep%-alive\r\n", t:output())
    assert.is_false(t.closed)
    proto:data_received("GET / HTTP/1.0\r\n\r\n")
    assert.matches("Connection: close\r\n", t:output())
    assert.is_true(t.closed)
  end)

  it("stops reading while the peer does not read or too much is in flight", function()
    local release = pulsar.Future()
    local proto, t = connect(function() release:wait() return "x" end, {pipeline = 4})
    proto:pause_writing()
    assert.is_false(t.reading)
    proto:resume_writing()
    assert.is_true(t.reading)
    proto:data_received(string.rep("GET / HTTP/1.1\r\nHost: h\r\n\r\n", 4))
    assert.is_false(t.reading) -- four in flight
    release:set_result(true)
    assert.truthy(support.wait_for(function() return #responses(t:output()) == 4 end, 10))
    assert.is_true(t.reading)
  end)

  it("answers 408 to a request that does not arrive within the timeout", function()
    local proto, t = connect(function() return "x" end, {timeout = 0.2})
    proto:data_received("GET / HTTP/1.1\r\nHost: slow")
    assert.truthy(support.wait_for(function() return t.closed end, 10))
    assert.are.same({408}, responses(t:output()))
    -- a request that completes in time is answered, and the timer stops
    proto, t = connect(function() return "x" end, {timeout = 0.2})
    proto:data_received("GET / HTTP/1.1\r\nHost: h\r\n")
    proto:data_received("\r\n")
    pulsar.sleep(0.4)
    assert.are.same({200}, responses(t:output()))
    assert.is_false(t.closed)
  end)

  it("finishes what is in flight after the peer's EOF, then closes", function()
    local proto, t = connect(function() pulsar.sleep(0.05) return "late" end)
    proto:data_received("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert.is_true(proto:eof_received())
    assert.is_false(t.closed)
    assert.truthy(support.wait_for(function() return t.closed end, 10))
    assert.are.same({"late"}, bodies(t:output()))
  end)

  it("finishes the requests in flight before closing for a graceful stop", function()
    local proto, t = connect(function() pulsar.sleep(0.05) return "done" end)
    assert.is_false(proto:busy())
    proto:data_received("GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert.is_true(proto:busy())
    proto:close_when_idle()
    proto:data_received("GET /3 HTTP/1.1\r\nHost: h\r\n\r\n") -- not read any more
    assert.is_false(t.closed)
    assert.truthy(support.wait_for(function() return t.closed end, 10))
    assert.are.same({"done", "done"}, bodies(t:output()))
    local out = t:output()
    local at = out:find("HTTP/1.1 200", 2, true)
    local first, second = out:sub(1, at - 1), out:sub(at)
    assert.matches("Connection: keep%-alive\r\n", first)
    assert.matches("Connection: close\r\n", second) -- only the last one
    assert.is_false(proto:busy())
    -- an idle connection closes at once
    proto, t = connect(function() return "x" end)
    proto:close_when_idle()
    assert.is_true(t.closed)
  end)

  it("drops answers for a connection that is gone", function()
    local proto, t = connect(function() pulsar.sleep(0.05) return "late" end)
    proto:data_received("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    t.closed = true -- write would now raise
    proto:connection_lost("reset by peer")
    pulsar.sleep(0.15)
    assert.are.equal("", t:output())
  end)

  it("refuses bad options at once", function()
    assert.has_error(function() http.protocol("not a function") end)
    assert.has_error(function() http.protocol(print, {max_body = -1}) end)
    assert.has_error(function() http.protocol(print, {pipeline = 0}) end)
    assert.has_error(function() http.protocol(print, {timeout = 0}) end)
  end)
end)
