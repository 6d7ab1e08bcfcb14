-- pulsar.http.Router (lua/pulsar/router.lua) as a user meets it: an
-- HttpServer whose handler is a router, in two process workers (so the
-- router crosses by value and is rebuilt there), asked with curl and, where
-- curl cannot say it, with pulsar's own socket.
local support = require "support"

local WAIT = 30 -- seconds; generous, for slow machines and sanitizers

local SERVER = [[
local router = pulsar.http.Router()
local count = 0

-- middleware: each says where it was, before and after the route
router:use(function(request, next)
  if request.headers["x-deny"] then return 401, "denied by the first middleware\n" end
  request.trace = "m1"
  local status, headers, body = next(request)
  headers = headers or {}
  headers["X-After"] = (headers["X-After"] or "route") .. ",m1"
  return status, headers, body
end)
router:use(function(request, next)
  request.trace = request.trace .. ",m2"
  local status, headers, body = next(request)
  headers = headers or {}
  headers["X-After"] = (headers["X-After"] or "route") .. ",m2"
  return status, headers, body
end)

router:get("/", function() return "home" end)
router:get("/trace", function(request) return 200, {["X-Trace"] = request.trace .. ",route"}, "traced" end)
router:get("/count", function() count = count + 1 return tostring(count) end)
router:get("/users/me", function() return "the static path wins" end)
router:get("/users/:id", function(request) return {id = request.params.id} end)
router:get("/users/:id/books/:book", function(request)
  return "user " .. request.params.id .. " book " .. request.params.book
end)
router:route({"PUT", "DELETE"}, "/users/:id", function(request)
  return 200, request.method .. " " .. request.params.id
end)
router:post("/users", function(request)
  local user = request:json()
  if type(user) ~= "table" or type(user.name) ~= "string" then
    pulsar.http.error(422, "a user needs a name")
  end
  return 201, {name = user.name, created = true}
end)
router:get("/files/*path", function(request) return "path=[" .. request.params.path .. "]" end)
router:get("/list", function() return {"a", "b", pulsar.json.null} end)
router:get("/typed", function() return 200, {["content-type"] = "application/vnd.x+json", ["X-Own"] = "yes"}, {ok = true} end)
router:get("/empty-table", function() return {} end)
router:get("/teapot", function() pulsar.http.error(418, "short and stout") end)
router:get("/fail", function() error("the route failed on purpose") end)
router:route("PATCH", "/only-patch", function() return "patched" end)
router:websocket("/ws", function(ws) ws:close() end)

local app = pulsar.apps.HttpServer{name = "router", bind = "127.0.0.1:0", workers = 2,
                                   handler = router}
app:start():wait()
print("serving " .. app.address)
io.stdout:flush()
]]

-- Runs curl in the background (the loop goes on meanwhile); {code=, out=, err=}.
local function curl(args)
  local base = support.tmpname()
  local cmd = ("(curl -sS --max-time %d %s > %s 2> %s; echo $? > %s) < /dev/null &"):format(
    WAIT, args, support.quote(base .. ".out"), support.quote(base .. ".err"),
    support.quote(base .. ".status"))
  os.execute(cmd)
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
  local r = curl("-i " .. (args or "") .. " " .. support.quote(url))
  assert.are.equal(0, r.code, r.err)
  local head, body = r.out:match("^(.-\r\n)\r\n(.*)$")
  local res = {status = tonumber(head:match("^HTTP/1%.1 (%d%d%d)")), headers = {}, body = body}
  for name, value in head:gmatch("\r\n([^:\r\n]+): ([^\r\n]*)") do res.headers[name:lower()] = value end
  return res
end

describe("Router", function()
  local server, url
  setup(function()
    local pid_file = support.tmpname(".pid")
    server = support.start("--pid-file " .. support.quote(pid_file) .. " " ..
                           support.quote(support.script(SERVER)))
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
  end)

  it("serves a static path", function()
    local r = get(url .. "/")
    assert.are.same({200, "home"}, {r.status, r.body})
  end)

  it("puts the decoded :params in request.params, a %2F staying in its segment", function()
    local r = get(url .. "/users/J%C3%BCrgen%20K%2F2/books/b%3F1")
    assert.are.same({200, "user Jürgen K/2 book b?1"}, {r.status, r.body})
    r = get(url .. "/users/42")
    assert.are.equal('{"id":"42"}', r.body)
  end)

  it("lets a static path win over a pattern that also matches", function()
    assert.are.equal("the static path wins", get(url .. "/users/me").body)
  end)

  it("gives *splat the rest of the path, decoded, empty included", function()
    assert.are.equal("path=[a/b c/d.txt]", get(url .. "/files/a/b%20c/d.txt").body)
    assert.are.equal("path=[x/y]", get(url .. "/files/x%2Fy").body)
    assert.are.equal("path=[]", get(url .. "/files/").body)
    assert.are.equal("path=[]", get(url .. "/files").body)
  end)

  it("answers 404 for a path no route has", function()
    local r = get(url .. "/nowhere")
    assert.are.equal(404, r.status)
    assert.matches("Not Found: /nowhere", r.body, 1, true)
    assert.are.equal(404, get(url .. "/users/1/books").status) -- a pattern's prefix is not a match
    assert.are.equal(404, get(url .. "/users/").status) -- :id needs a segment
  end)

  it("answers 405 with Allow (sorted, HEAD beside GET) for a wrong method", function()
    local r = get(url .. "/users/7", "-X POST")
    assert.are.equal(405, r.status)
    assert.are.equal("DELETE, GET, HEAD, PUT", r.headers.allow)
    r = get(url .. "/users", "-X GET")
    assert.are.same({405, "POST"}, {r.status, r.headers.allow})
    r = get(url .. "/only-patch")
    assert.are.same({405, "PATCH"}, {r.status, r.headers.allow})
    r = get(url .. "/users/7", "-X DELETE")
    assert.are.same({200, "DELETE 7"}, {r.status, r.body})
  end)

  it("serves HEAD with the GET route: its headers and no body", function()
    local r = curl("-sI " .. url .. "/users/7")
    assert.matches("^HTTP/1%.1 200 OK\r\n", r.out)
    assert.matches("\r\nContent%-Length: 10\r\n", r.out)
    assert.matches("\r\nContent%-Type: application/json\r\n", r.out)
    assert.matches("\r\n\r\n$", r.out)
  end)

  it("runs the middleware in order around the route, before and after", function()
    local r = get(url .. "/trace")
    assert.are.equal("m1,m2,route", r.headers["x-trace"])
    assert.are.equal("route,m2,m1", r.headers["x-after"])
    -- the router's own answers go through them too
    assert.are.equal("route,m2,m1", get(url .. "/nowhere").headers["x-after"])
  end)

  it("lets a middleware answer without calling the route", function()
    local pulsar_stream = pulsar.open_connection(url:match("//(.*)$")):wait(WAIT)
    -- on one connection, so one worker: the denied request never counts
    pulsar_stream:write("GET /count HTTP/1.1\r\nHost: x\r\nX-Deny: 1\r\n\r\n" ..
                        "GET /count HTTP/1.1\r\nHost: x\r\n\r\n" ..
                        "GET /count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    local parts = {}
    while true do
      local data = pulsar_stream:read():wait(WAIT)
      if not data then break end
      parts[#parts + 1] = data
    end
    local text = table.concat(parts)
    assert.matches("^HTTP/1%.1 401 Unauthorized\r\n", text)
    assert.matches("denied by the first middleware\n", text, 1, true)
    local counts = {}
    for n in text:gmatch("\r\n\r\n(%d+)") do counts[#counts + 1] = tonumber(n) end
    assert.are.equal(2, #counts)
    assert.are.equal(counts[1] + 1, counts[2])
  end)

  it("sends a table as JSON with Content-Type application/json", function()
    local r = get(url .. "/list")
    assert.are.same({200, "application/json", '["a","b",null]'}, {r.status, r.headers["content-type"], r.body})
    r = get(url .. "/empty-table")
    assert.are.same({"application/json", "{}"}, {r.headers["content-type"], r.body})
    r = get(url .. "/typed") -- the handler's own type and headers stay
    assert.are.same({"application/vnd.x+json", "yes", '{"ok":true}'},
                    {r.headers["content-type"], r.headers["x-own"], r.body})
  end)

  it("decodes a JSON body with request:json() and answers the status after it", function()
    local r = get(url .. "/users", [[-H 'Content-Type: application/json' --data '{"name":"ada"}']])
    assert.are.equal(201, r.status)
    assert.are.equal("application/json", r.headers["content-type"])
    local v = pulsar.json.decode(r.body)
    assert.are.same({name = "ada", created = true}, v)
  end)

  it("answers a malformed JSON body 400, naming the position", function()
    local r = get(url .. "/users", [[--data '{"name": "ada",]']])
    assert.are.equal(400, r.status)
    assert.matches("malformed JSON body: .* at character 16", r.body)
    r = get(url .. "/users", "-X POST")
    assert.are.equal(400, r.status)
    assert.matches("the body is empty", r.body, 1, true)
  end)

  it("answers what a handler's pulsar.http.error says", function()
    local r = get(url .. "/teapot")
    assert.are.same({418, "I'm a teapot: short and stout\n"}, {r.status, r.body})
    r = get(url .. "/users", [[--data '{"age": 3}']])
    assert.are.same({422, "Unprocessable Content: a user needs a name\n"}, {r.status, r.body})
  end)

  it("answers 500 for a failing route and goes on serving", function()
    assert.are.equal(500, get(url .. "/fail").status)
    assert.are.equal("home", get(url .. "/").body)
    assert.matches("the route failed on purpose", server.err(), 1, true)
  end)

  it("routes router:websocket to pulsar.websocket.upgrade (426 without Upgrade)", function()
    local found = package.preload["pulsar.websocket"] or
                  package.searchpath("pulsar.websocket", package.path)
    if not found then
      print("\nrouter_spec: skipped the WebSocket route: pulsar.websocket is not built in yet")
      return
    end
    local r = get(url .. "/ws")
    assert.are.equal(426, r.status)
    assert.are.equal("websocket", (r.headers.upgrade or ""):lower())
    assert.are.equal(405, get(url .. "/ws", "-X POST").status)
  end)
end)

describe("Router, where it is made", function()
  local router = require "pulsar.router"

  it("refuses bad patterns, methods and handlers, naming them", function()
    local r = pulsar.http.Router()
    assert.has_error(function() r:get("users", function() end) end,
                     [[Router: pattern "users" must be a string starting with '/']])
    assert.has_error(function() r:get("/a/:", function() end) end, [[Router: pattern "/a/:": "" is not a name]])
    assert.has_error(function() r:get("/*rest/x", function() end) end,
                     [[Router: pattern "/*rest/x": '*rest' must be the last segment]])
    assert.has_error(function() r:get("/a/:id/:id", function() end) end,
                     [[Router: pattern "/a/:id/:id" names "id" twice]])
    assert.has_error(function() r:get("/a:b", function() end) end,
                     [[Router: pattern "/a:b": ':' and '*' may only start a segment]])
    assert.has_error(function() r:route("FETCH", "/", function() end) end,
                     [[Router: unknown method "FETCH" (GET, POST, PUT, DELETE, PATCH, HEAD or OPTIONS)]])
    assert.has_error(function() r:get("/", "not a function") end, "Router: handler must be a function(request)")
    assert.has_error(function() r:use(42) end, "Router: middleware must be a function(request, next)")
    assert.has_error(function() r:static("/s", "dir", {indx = true}) end,
                     [[Router: static: unknown option "indx" (index, max_age)]])
  end)

  it("is plain data that crosses by value and works again after", function()
    local r = pulsar.http.Router()
    r:get("/x/:id", function(request) return "x" .. request.params.id end)
    local copy = require("pulsar.core").decode(require("pulsar.core").encode(r))
    assert.is_nil(getmetatable(copy))
    assert.is_true(router.is_router(copy))
    router.restore(copy)
    assert.are.equal(getmetatable(r), getmetatable(copy))
    local handler = router.handler(copy)
    local request = setmetatable({method = "GET", path = "/x/5", target = "/x/5", headers = {}},
                                 {__index = pulsar.http.Request})
    assert.are.same({200, "x5"}, {handler(request)})
  end)

  it("is refused by HttpServer when a route cannot cross", function()
    local r = pulsar.http.Router()
    local file = io.tmpfile()
    r:get("/", function() return file:read("a") end)
    assert.has_error(function() pulsar.apps.HttpServer{bind = "127.0.0.1:0", handler = r} end)
    file:close()
    assert.has_error(function() pulsar.apps.HttpServer{bind = "127.0.0.1:0", handler = {}} end,
                     "HttpServer: handler must be a function(request) or a pulsar.http.Router()")
  end)
end)
