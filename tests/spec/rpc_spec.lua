-- pulsar.apps.rpc (lua/pulsar/apps/rpc.lua): a JSON-RPC 2.0 server in a
-- pulsar-lua process of its own (an HttpServer whose handler is
-- rpc.handler, in a process worker), spoken to with curl, a client nobody
-- here wrote, and with rpc.proxy; its log is its stderr.
local support = require "support"
local json = require "pulsar.json"
local rpc = require "pulsar.apps.rpc"

local WAIT = 30 -- seconds; generous, for slow machines and sanitizers

local SERVER = [[
local rpc = pulsar.apps.rpc
local app = pulsar.apps.HttpServer{name = "rpc", bind = "127.0.0.1:0", workers = 1,
  handler = rpc.handler{methods = {
    add = function(a, b) return a + b end,
    subtract = function(a, b)
      if type(a) == "table" then a, b = a.minuend, a.subtrahend end -- by name
      if type(a) ~= "number" or type(b) ~= "number" then
        rpc.error(-32602, "subtract needs two numbers")
      end
      return a - b
    end,
    echo = function(...) return {n = select("#", ...), args = {...}} end,
    nothing = function() end,
    slow = function(x) pulsar.sleep(0.05) return x end, -- waits in the request's task
    counted = function() COUNT = (COUNT or 0) + 1 end, -- for notifications
    count = function() return COUNT or 0 end,
    boom = function() error("secret detail of the failure") end,
    refuse = function() rpc.error(42, "not today", {retry = "tomorrow"}) end,
  }}}
app:start():wait()
print("serving " .. app.address)
io.stdout:flush()
]]

local server, url

local function curl(body, method)
  local cmd = ("curl -sS --max-time %d -X %s -H 'Content-Type: application/json' --data-binary %s -w '\\n%%{http_code}' %s"):format(
    WAIT, method or "POST", support.quote(body), support.quote(url))
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  local text, code = out:match("^(.*)\n(%d+)$")
  return tonumber(code), text
end

-- The JSON answer to a body sent by curl.
local function ask(body)
  local code, text = curl(body)
  assert.are.equal(200, code, text)
  return json.decode(text)
end

setup(function()
  local pid_file = support.tmpname(".pid")
  server = support.start(("--pid-file %s %s"):format(support.quote(pid_file), support.quote(support.script(SERVER))))
  local address = server.wait_output("serving (%S+)\n", WAIT)
  assert(address, "the server did not start: " .. server.err())
  url = "http://" .. address .. "/"
  server.pid = tonumber(support.read_file(pid_file))
end)

teardown(function()
  if server then
    server.kill("TERM", server.pid)
    server.wait(WAIT)
  end
end)

describe("rpc.handler, asked with curl", function()
  it("answers a call with params by position", function()
    local r = ask('{"jsonrpc": "2.0", "method": "add", "params": [40, 2], "id": 1}')
    assert.are.same({jsonrpc = "2.0", result = 42, id = 1}, r)
    r = ask('{"jsonrpc": "2.0", "method": "echo", "params": [1, null, 3], "id": "x"}')
    assert.are.same({n = 3, args = {1, json.null, 3}}, r.result) -- null in, nil in Lua, null out
    assert.are.equal("x", r.id)
    r = ask('{"jsonrpc": "2.0", "method": "nothing", "id": null}')
    assert.are.equal(json.null, r.result)
    assert.are.equal(json.null, r.id)
  end)

  it("answers a call with params by name, given as one table", function()
    local r = ask('{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}')
    assert.are.equal(19, r.result)
  end)

  it("runs methods that wait, in the request's task", function()
    assert.are.equal("later", ask('{"jsonrpc": "2.0", "method": "slow", "params": ["later"], "id": 9}').result)
  end)

  it("answers a batch in order, leaving notifications out", function()
    local r = ask([[[
      {"jsonrpc": "2.0", "method": "add", "params": [1, 2], "id": "1"},
      {"jsonrpc": "2.0", "method": "counted"},
      {"jsonrpc": "2.0", "method": "slow", "params": [7], "id": "2"},
      {"foo": "boo"},
      {"jsonrpc": "2.0", "method": "missing", "id": "5"},
      {"jsonrpc": "2.0", "method": "subtract", "params": [5, 3], "id": "9"}
    ] ]])
    assert.are.equal(5, #r)
    assert.are.same({jsonrpc = "2.0", result = 3, id = "1"}, r[1])
    assert.are.same({jsonrpc = "2.0", result = 7, id = "2"}, r[2])
    assert.are.same({code = -32600, message = "Invalid Request"}, r[3].error)
    assert.are.equal(json.null, r[3].id)
    assert.are.same({code = -32601, message = "Method not found"}, r[4].error)
    assert.are.equal(2, r[5].result)
  end)

  it("answers notifications with nothing, 204", function()
    local before = ask('{"jsonrpc": "2.0", "method": "count", "id": 1}').result
    local code, text = curl('{"jsonrpc": "2.0", "method": "counted"}')
    assert.are.equal(204, code)
    assert.are.equal("", text)
    code, text = curl('[{"jsonrpc": "2.0", "method": "counted"}, {"jsonrpc": "2.0", "method": "counted", "params": []}]')
    assert.are.equal(204, code)
    assert.are.equal("", text)
    code = curl('{"jsonrpc": "2.0", "method": "missing"}') -- even an unknown one
    assert.are.equal(204, code)
    assert.are.equal(before + 3, ask('{"jsonrpc": "2.0", "method": "count", "id": 1}').result)
  end)

  it("gives each error code of the specification", function()
    local r = ask('{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')
    assert.are.equal(-32700, r.error.code)
    assert.are.equal("Parse error", r.error.message)
    assert.matches("at character %d+", r.error.data)
    assert.are.equal(json.null, r.id)
    assert.are.equal(-32600, ask('{"jsonrpc": "2.0", "method": 1, "params": "bar"}').error.code)
    assert.are.equal(-32600, ask('{"jsonrpc": "1.0", "method": "add", "id": 1}').error.code)
    assert.are.equal(-32600, ask('[]').error.code)
    r = ask('[1, 2, 3]')
    assert.are.equal(3, #r)
    for i = 1, 3 do assert.are.equal(-32600, r[i].error.code) end
    r = ask('{"jsonrpc": "2.0", "method": "foobar", "id": "1"}')
    assert.are.same({code = -32601, message = "Method not found"}, r.error)
    assert.are.equal("1", r.id)
    assert.are.equal(-32601, ask('{"jsonrpc": "2.0", "method": "rpc.discover", "id": 2}').error.code)
    r = ask('{"jsonrpc": "2.0", "method": "subtract", "params": ["a"], "id": 4}')
    assert.are.same({code = -32602, message = "subtract needs two numbers"}, r.error)
    r = ask('{"jsonrpc": "2.0", "method": "boom", "id": 5}')
    assert.are.same({code = -32603, message = "Internal error"}, r.error) -- no detail leaked
    assert.is_truthy(support.wait_for(function()
      return server.err():find("rpc: method boom failed: .*secret detail of the failure")
    end, WAIT), server.err())
    r = ask('{"jsonrpc": "2.0", "method": "refuse", "id": 6}')
    assert.are.same({code = 42, message = "not today", data = {retry = "tomorrow"}}, r.error)
  end)

  it("wants POST", function()
    local code = curl("", "GET")
    assert.are.equal(405, code)
  end)
end)

describe("rpc.proxy against rpc.handler", function()
  it("calls, with results as Futures", function()
    local proxy = rpc.proxy(url)
    assert.are.equal(3, proxy:call("add", 1, 2):wait(WAIT))
    assert.are.equal(19, proxy:call_named("subtract", {minuend = 42, subtrahend = 23}):wait(WAIT))
    assert.is_nil(proxy:call("nothing"):wait(WAIT))
    assert.are.same({n = 2, args = {json.null, "b"}}, proxy:call("echo", nil, "b"):wait(WAIT))
    local futures = {}
    for i = 1, 5 do futures[i] = proxy:call("slow", i) end
    for i = 1, 5 do assert.are.equal(i, futures[i]:wait(WAIT)) end
  end)

  it("fails a call with the code and the message of a JSON-RPC error", function()
    local proxy = rpc.proxy(url)
    local ok, err = pcall(function() return proxy:call("missing", 1):wait(WAIT) end)
    assert.is_false(ok)
    assert.are.equal("rpc: missing: error -32601: Method not found", tostring(err))
    assert.is_true(rpc.is_error(err))
    assert.are.equal(-32601, err.code)
    ok, err = pcall(function() return proxy:call("refuse"):wait(WAIT) end)
    assert.are.equal("rpc: refuse: error 42: not today", tostring(err))
    assert.are.same({retry = "tomorrow"}, err.data)
    ok, err = pcall(function() return proxy:call("subtract", "x", 1):wait(WAIT) end)
    assert.are.equal("rpc: subtract: error -32602: subtract needs two numbers", tostring(err))
  end)

  it("notifies, and batches", function()
    local proxy = rpc.proxy(url)
    local before = proxy:call("count"):wait(WAIT)
    assert.is_true(proxy:notify("counted"):wait(WAIT))
    local results = proxy:batch{{"add", 2, 3}, {"missing"}, {"count"}}:wait(WAIT)
    assert.are.same({result = 5}, results[1])
    assert.are.equal(-32601, results[2].error.code)
    assert.are.same({result = before + 1}, results[3])
  end)

  it("fails a call to a server that is not there, naming it", function()
    local s = pulsar.create_server{host = "127.0.0.1", port = 0, protocol = function() return {} end}:wait(WAIT)
    local port = s.port
    s:close()
    local ok, err = pcall(function() return rpc.proxy("http://127.0.0.1:" .. port .. "/"):call("add", 1, 2):wait(WAIT) end)
    assert.is_false(ok)
    assert.matches("connection refused", tostring(err))
  end)
end)
