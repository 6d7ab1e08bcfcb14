-- router:static (lua/pulsar/static.lua) and the transport's sendfile
-- (host/transport/net.c) as a user meets them: an HttpServer serving a
-- directory made here, asked with curl and, for pipelining, with pulsar's
-- own socket; every way out of the tree must give 404 while it keeps
-- serving.
local support = require "support"

local WAIT = 30 -- seconds; generous, for slow machines and sanitizers
local BIG = 4 * 1024 * 1024 + 12345 -- bytes: many sendfile rounds and chunks

local SERVER = [[
local root = arg[1]
local router = pulsar.http.Router()
router:static("/static", root .. "/www", {index = "index.html", max_age = 60})
router:static("/plain", root .. "/www")
router:get("/alive", function() return "alive" end)
local app = pulsar.apps.HttpServer{name = "static", bind = "127.0.0.1:0", workers = 1,
                                   handler = router}
app:start():wait()
print("serving " .. app.address)
io.stdout:flush()
]]

local function sh(command) assert(os.execute(command), command) end

-- Runs curl in the background (the loop goes on meanwhile); {code=, out=, err=}.
local function curl(args)
  local base = support.tmpname()
  os.execute(("(curl -sS --max-time %d %s > %s 2> %s; echo $? > %s) < /dev/null &"):format(
    WAIT, args, support.quote(base .. ".out"), support.quote(base .. ".err"),
    support.quote(base .. ".status")))
  local status = support.wait_for(function()
    local s = support.read_file(base .. ".status")
    return s and s:match("%d+")
  end, WAIT + 5)
  local r = {code = tonumber(status), out = support.read_file(base .. ".out") or "",
             err = support.read_file(base .. ".err") or ""}
  for _, ext in ipairs {".out", ".err", ".status"} do os.remove(base .. ext) end
  return r
end

-- curl -i: {status=, headers = {lower name = value}, body=}
local function get(url, args)
  local r = curl("-i --path-as-is " .. (args or "") .. " " .. support.quote(url))
  assert.are.equal(0, r.code, r.err)
  local head, body = r.out:match("^(.-\r\n)\r\n(.*)$")
  local res = {status = tonumber(head:match("^HTTP/1%.1 (%d%d%d)")), headers = {}, body = body}
  for name, value in head:gmatch("\r\n([^:\r\n]+): ([^\r\n]*)") do res.headers[name:lower()] = value end
  return res
end

local function sha256(path)
  local p = io.popen("sha256sum " .. support.quote(path))
  local sum = p:read("a"):match("^(%x+)")
  p:close()
  return sum
end

describe("router:static", function()
  local root, server, url
  setup(function()
    root = support.temp_dir()
    local www = root .. "/www"
    sh(("mkdir -p %s/sub %s/nested/deeper %s/outside"):format(www, www, root))
    support.write_file(www .. "/index.html", "<h1>home</h1>\n")
    support.write_file(www .. "/style.css", "body { color: red }\n")
    support.write_file(www .. "/app.js", "console.log(1)\n")
    support.write_file(www .. "/data.json", '{"a": 1}\n')
    support.write_file(www .. "/Picture.PNG", "\137PNG\r\n\26\n")
    support.write_file(www .. "/noext", "no extension\n")
    support.write_file(www .. "/empty.txt", "")
    support.write_file(www .. "/digits.txt", "0123456789")
    support.write_file(www .. "/sub/index.html", "<p>sub</p>\n")
    support.write_file(www .. "/nested/deeper/file.txt", "deep\n")
    support.write_file(root .. "/outside/secret.txt", "SECRET\n")
    support.write_file(root .. "/secret.txt", "SECRET\n")
    sh(("head -c %d /dev/urandom > %s/big.bin"):format(BIG, www))
    sh(("ln -s style.css %s/link-in.css"):format(www))
    sh(("ln -s ../outside/secret.txt %s/link-out.txt"):format(www))
    sh(("ln -s %s/outside %s/dir-out"):format(root, www))
    local pid_file = support.tmpname(".pid")
    server = support.start("--pid-file " .. support.quote(pid_file) .. " " ..
                           support.quote(support.script(SERVER)) .. " " .. support.quote(root))
    local address = server.wait_output("serving (%S+)\n", WAIT)
    assert(address, "the server did not start: " .. server.err())
    url = "http://" .. address
    server.pid = tonumber(support.read_file(pid_file))
  end)
  teardown(function()
    if server and server.pid then
      server.kill("TERM", server.pid)
      server.wait(WAIT)
    end
    if root then os.execute("rm -rf " .. support.quote(root)) end
  end)

  it("serves files with the content type of their extension", function()
    local cases = {
      {"/static/style.css", "text/css; charset=utf-8", "body { color: red }\n"},
      {"/static/app.js", "text/javascript; charset=utf-8", "console.log(1)\n"},
      {"/static/data.json", "application/json", '{"a": 1}\n'},
      {"/static/Picture.PNG", "image/png", "\137PNG\r\n\26\n"},
      {"/static/noext", "application/octet-stream", "no extension\n"},
      {"/static/nested/deeper/file.txt", "text/plain; charset=utf-8", "deep\n"},
    }
    for _, case in ipairs(cases) do
      local r = get(url .. case[1])
      assert.are.same({200, case[2], case[3], tostring(#case[3])},
                      {r.status, r.headers["content-type"], r.body, r.headers["content-length"]})
      assert.are.equal("max-age=60", r.headers["cache-control"])
      assert.are.equal("bytes", r.headers["accept-ranges"])
    end
    local r = get(url .. "/static/style.css?v=2&x=%2e%2e")
    assert.are.same({200, "body { color: red }\n"}, {r.status, r.body})
    r = get(url .. "/static/empty.txt")
    assert.are.same({200, "0", ""}, {r.status, r.headers["content-length"], r.body})
  end)

  it("answers If-None-Match with the ETag 304", function()
    local r = get(url .. "/static/style.css")
    local etag = r.headers.etag
    assert.matches('^"[%x-]+"$', etag)
    r = get(url .. "/static/style.css", "-H " .. support.quote("If-None-Match: " .. etag))
    assert.are.same({304, etag, ""}, {r.status, r.headers.etag, r.body})
    r = get(url .. "/static/style.css", "-H " .. support.quote('If-None-Match: "other", ' .. etag))
    assert.are.equal(304, r.status)
    r = get(url .. "/static/style.css", [[-H 'If-None-Match: "other"']])
    assert.are.same({200, "body { color: red }\n"}, {r.status, r.body})
    assert.are.equal(304, get(url .. "/static/style.css", "-H 'If-None-Match: *'").status)
  end)

  it("answers If-Modified-Since at or after Last-Modified 304", function()
    local r = get(url .. "/static/app.js")
    local last = r.headers["last-modified"]
    assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$", last)
    r = get(url .. "/static/app.js", "-H " .. support.quote("If-Modified-Since: " .. last))
    assert.are.same({304, ""}, {r.status, r.body})
    r = get(url .. "/static/app.js", "-H 'If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT'")
    assert.are.same({200, "console.log(1)\n"}, {r.status, r.body})
  end)

  it("serves one Range with 206 and Content-Range, 416 past the end", function()
    local cases = {
      {"bytes=2-5", "2345", "bytes 2-5/10"},
      {"bytes=7-", "789", "bytes 7-9/10"},
      {"bytes=-3", "789", "bytes 7-9/10"},
      {"bytes=8-100", "89", "bytes 8-9/10"},
      {"bytes=-50", "0123456789", "bytes 0-9/10"},
    }
    for _, case in ipairs(cases) do
      local r = get(url .. "/static/digits.txt", "-H " .. support.quote("Range: " .. case[1]))
      assert.are.same({206, case[2], case[3], tostring(#case[2])},
                      {r.status, r.body, r.headers["content-range"], r.headers["content-length"]})
    end
    for _, range in ipairs {"bytes=10-", "bytes=10-20", "bytes=-0"} do
      local r = get(url .. "/static/digits.txt", "-H " .. support.quote("Range: " .. range))
      assert.are.same({416, "bytes */10"}, {r.status, r.headers["content-range"]})
    end
    -- several ranges, or nonsense: the whole file
    for _, range in ipairs {"bytes=0-1,4-5", "bytes=5-2", "items=1-2"} do
      local r = get(url .. "/static/digits.txt", "-H " .. support.quote("Range: " .. range))
      assert.are.same({200, "0123456789"}, {r.status, r.body})
    end
    -- If-Range with another version's validator: the whole file
    local r = get(url .. "/static/digits.txt", [[-H 'Range: bytes=0-1' -H 'If-Range: "old"']])
    assert.are.same({200, "0123456789"}, {r.status, r.body})
  end)

  it("answers HEAD with the headers of GET and no body", function()
    local r = curl("-sI " .. url .. "/static/big.bin")
    assert.matches("^HTTP/1%.1 200 OK\r\n", r.out)
    assert.matches("\r\nContent%-Length: " .. BIG .. "\r\n", r.out)
    assert.matches("\r\nContent%-Type: application/octet%-stream\r\n", r.out)
    assert.matches("\r\n\r\n$", r.out)
  end)

  it("serves a directory's index.html only when asked, redirecting /dir to /dir/", function()
    assert.are.same({200, "<h1>home</h1>\n"}, {get(url .. "/static/").status, get(url .. "/static/").body})
    local r = get(url .. "/static/sub?x=1")
    assert.are.same({301, "/static/sub/?x=1"}, {r.status, r.headers.location})
    r = get(url .. "/static")
    assert.are.same({301, "/static/"}, {r.status, r.headers.location})
    assert.are.equal("<p>sub</p>\n", get(url .. "/static/sub/").body)
    assert.are.equal(404, get(url .. "/static/nested/").status) -- no index.html there
    assert.are.equal(404, get(url .. "/plain/").status)
    assert.are.equal(404, get(url .. "/plain/sub").status)
    assert.are.equal(404, get(url .. "/plain/sub/").status)
    assert.are.equal("<h1>home</h1>\n", get(url .. "/plain/index.html").body)
    assert.are.equal(404, get(url .. "/static/style.css/").status)
    assert.are.equal(404, get(url .. "/static/missing.txt").status)
  end)

  it("sends a big file whole and intact through sendfile, fast and slow readers alike", function()
    local source = sha256(root .. "/www/big.bin")
    for _, args in ipairs {"", "--limit-rate 16M"} do
      local out = support.tmpname()
      local r = curl(args .. " -o " .. support.quote(out) .. " " .. url .. "/static/big.bin")
      assert.are.equal(0, r.code, r.err)
      assert.are.equal(source, sha256(out))
      os.remove(out)
    end
    local out = support.tmpname()
    local r = curl("-H 'Range: bytes=1000000-' -o " .. support.quote(out) .. " " .. url .. "/static/big.bin")
    assert.are.equal(0, r.code, r.err)
    local want = support.tmpname()
    sh(("tail -c +1000001 %s > %s"):format(support.quote(root .. "/www/big.bin"), support.quote(want)))
    assert.are.equal(sha256(want), sha256(out))
    os.remove(out) os.remove(want)
  end)

  it("keeps pipelined answers in order behind a file", function()
    local stream = pulsar.open_connection(url:match("//(.*)$")):wait(WAIT)
    stream:write("GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n" ..
                 "GET /static/digits.txt HTTP/1.1\r\nHost: x\r\n\r\n" ..
                 "GET /alive HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    local parts = {}
    while true do
      local data = stream:read():wait(WAIT)
      if not data then break end
      parts[#parts + 1] = data
    end
    local text = table.concat(parts)
    local _, head_end = text:find("\r\n\r\n", 1, true)
    assert.matches("^HTTP/1%.1 200 OK\r\n", text)
    local big = support.read_file(root .. "/www/big.bin")
    assert.is_true(text:sub(head_end + 1, head_end + BIG) == big, "the big file came back changed")
    local rest = text:sub(head_end + BIG + 1)
    assert.matches("^HTTP/1%.1 200 OK\r\n.-\r\n\r\n0123456789HTTP/1%.1 200 OK\r\n.-\r\n\r\nalive$", rest)
  end)

  it("costs only its connection when a reader leaves in the middle of a file", function()
    for _ = 1, 3 do
      local stream = pulsar.open_connection(url:match("//(.*)$")):wait(WAIT)
      stream:write("GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n" ..
                   "GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.matches("^HTTP/1%.1 200 OK\r\n", stream:read():wait(WAIT))
      stream:close()
    end
    assert.are.equal("alive", get(url .. "/alive").body)
    assert.are.equal("0123456789", get(url .. "/static/digits.txt").body)
  end)

  it("never serves anything outside the directory, and goes on serving", function()
    local attempts = {
      "/static/../secret.txt", "/static/../outside/secret.txt",
      "/static/%2e%2e/secret.txt", "/static/%2E%2E/outside/secret.txt",
      "/static/..%2fsecret.txt", "/static/..%2Foutside%2Fsecret.txt",
      "/static/sub/../../secret.txt", "/static/sub/%2e%2e/%2e%2e/secret.txt",
      "/static/./style.css", "/static//etc/passwd", "/static/%2fetc%2fpasswd",
      "/static/style.css%00.png", "/static/%00",
      "/static/link-out.txt", "/static/dir-out/secret.txt", "/static/dir-out/",
      "/static/..\\secret.txt", "/static/%5c..%5csecret.txt",
    }
    for _, path in ipairs(attempts) do
      local r = get(url .. path)
      assert.are.equal(404, r.status, path)
      assert.is_nil(r.body:find("SECRET", 1, true), path)
      assert.are.equal("alive", get(url .. "/alive").body)
    end
    -- a symlink inside the tree is followed
    assert.are.equal("body { color: red }\n", get(url .. "/static/link-in.css").body)
  end)

  it("answers 405 with Allow: GET, HEAD to other methods", function()
    local r = get(url .. "/static/style.css", "-X POST")
    assert.are.same({405, "GET, HEAD"}, {r.status, r.headers.allow})
    r = get(url .. "/elsewhere") -- and the router's own 404 beside them
    assert.are.same({404, "Not Found: /elsewhere\n"}, {r.status, r.body})
  end)
end)

describe("pulsar.static's parsers", function()
  local static = require "pulsar.static"

  it("reads single byte ranges and refuses the rest", function()
    assert.are.same({0, 9}, {static.parse_range("bytes=0-", 10)})
    assert.are.same({9, 9}, {static.parse_range("bytes=9-9", 10)})
    assert.are.same({"unsatisfiable"}, {static.parse_range("bytes=0-", 0)})
    assert.is_nil(static.parse_range("bytes=99999999999999999999-", 10))
    assert.is_nil(static.parse_range("bytes=-", 10))
    assert.is_nil(static.parse_range(nil, 10))
  end)

  it("reads IMF-fixdates", function()
    assert.are.equal(784111777, static.parse_date("Sun, 06 Nov 1994 08:49:37 GMT"))
    assert.are.equal(0, static.parse_date("Thu, 01 Jan 1970 00:00:00 GMT"))
    assert.are.equal(951782400, static.parse_date("Tue, 29 Feb 2000 00:00:00 GMT"))
    assert.is_nil(static.parse_date("Sunday, 06-Nov-94 08:49:37 GMT"))
  end)

  it("refuses bad settings where the router is made", function()
    local r = pulsar.http.Router()
    assert.has_error(function() r:static("static", "dir") end,
                     "Router: static: prefix must be a path starting with '/'")
    assert.has_error(function() r:static("/s", "dir", {index = "a/b"}) end,
                     'Router: static: index must be a file name ("index.html") or false')
    assert.has_error(function() r:static("/s", "dir", {max_age = -1}) end,
                     "Router: static: max_age must be an integer number of seconds from 0")
  end)
end)

describe("transport:sendfile", function()
  local dir, file, data
  setup(function()
    dir = support.temp_dir()
    file = dir .. "/data.bin"
    sh(("head -c %d /dev/urandom > %s"):format(BIG, support.quote(file)))
    data = support.read_file(file)
  end)
  teardown(function() if dir then os.execute("rm -rf " .. support.quote(dir)) end end)

  -- A server whose protocol runs `send(transport, self)` at connection_made
  -- and records the flow-control calls.
  local function serve(send)
    local seen = {}
    local server = pulsar.create_server{host = "127.0.0.1", port = 0, protocol = function()
      return {
        connection_made = function(self, transport) seen.transport = transport send(transport, self, seen) end,
        pause_writing = function() seen.paused = (seen.paused or 0) + 1
          seen.size_at_pause = seen.transport:get_write_buffer_size() end,
        resume_writing = function() seen.resumed = (seen.resumed or 0) + 1 end,
      }
    end}:wait(WAIT)
    return server, seen
  end

  local function read_all(stream)
    local parts = {}
    while true do
      local chunk = stream:read():wait(WAIT)
      if not chunk then return table.concat(parts) end
      parts[#parts + 1] = chunk
    end
  end

  it("sends a file in order between writes, then the EOF asked before it was sent", function()
    local server = serve(function(t)
      t:write("head;")
      assert(t:sendfile(file))
      t:write(";middle;")
      assert(t:sendfile(file, 10, 5))
      t:write(";tail")
      t:write_eof()
    end)
    local stream = pulsar.open_connection(server.address):wait(WAIT)
    local got = read_all(stream)
    assert.are.equal(#"head;" + BIG + #";middle;" + 5 + #";tail", #got)
    assert.is_true(got == "head;" .. data .. ";middle;" .. data:sub(11, 15) .. ";tail", "bytes out of order")
    stream:close()
    server:close()
  end)

  it("counts the file in the write buffer: pause_writing, then resume_writing as it drains", function()
    local server, seen = serve(function(t) assert(t:sendfile(file)) end)
    local stream = pulsar.open_connection(server.address):wait(WAIT)
    assert.is_true(support.wait_for(function() return seen.paused end, WAIT) ~= nil)
    assert.is_true(seen.size_at_pause > 64 * 1024)
    local got, parts = 0, {}
    while got < BIG do
      local chunk = stream:read():wait(WAIT)
      parts[#parts + 1] = chunk
      got = got + #chunk
    end
    assert.is_true(table.concat(parts) == data, "the file came back changed")
    assert.is_true(support.wait_for(function() return seen.resumed end, WAIT) ~= nil)
    assert.are.equal(0, seen.transport:get_write_buffer_size())
    stream:close()
    server:close()
  end)

  it("refuses what it cannot send, naming it, and the connection goes on", function()
    local results = {}
    local server = serve(function(t)
      results[1] = {t:sendfile(dir .. "/missing")}
      results[2] = {t:sendfile(dir)}
      results[3] = {t:sendfile(file, BIG - 1, 2)}
      results[4] = {t:sendfile(file, BIG, 0)}
      t:write("still here")
      t:close()
    end)
    local stream = pulsar.open_connection(server.address):wait(WAIT)
    assert.are.equal("still here", read_all(stream))
    assert.are.same({nil, "cannot open " .. dir .. "/missing: No such file or directory"}, results[1])
    assert.are.same({nil, "cannot send " .. dir .. ": not a regular file"}, results[2])
    assert.is_nil(results[3][1])
    assert.matches("past the end of the file", results[3][2])
    assert.are.same({true}, results[4])
    stream:close()
    server:close()
  end)
end)
