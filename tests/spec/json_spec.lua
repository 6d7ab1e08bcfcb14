-- pulsar.json (lua/pulsar/json.lua, on Debian's lua-cjson) and
-- request:json() (lua/pulsar/http.lua): round trips, null, errors that name
-- the position, the depth bound; and a plain HttpServer handler (no router)
-- decoding bodies sent by curl.
local support = require "support"
local json = pulsar.json

local WAIT = 30

describe("pulsar.json", function()
  it("is the same module as require 'pulsar.json'", function()
    assert.are.equal(require("pulsar.json"), json)
  end)

  it("round-trips objects, lists, strings, numbers and booleans", function()
    local values = {
      {a = 1, b = {1, 2, 3}, c = {d = {e = "deep"}}},
      {"x", 1.5, -2, true, false, {}},
      "text with \"quotes\", \\ back\\slashes, a tab\t, a newline\n and \1 control",
      "Jürgen 日本 🎉",
      0, -0.25, 1e100, 123456789012,
      {[1] = "one", [2] = "two"},
    }
    for _, v in ipairs(values) do
      assert.are.same(v, json.decode(json.encode(v)))
    end
    assert.are.equal('{"a":[1,2,{"b":null}]}', json.encode({a = {1, 2, {b = json.null}}}))
    assert.are.equal("{}", json.encode({}))
    assert.are.equal('"\\/path"', json.encode("/path"))
  end)

  it("decodes null to json.null, which encodes back to null", function()
    local v = json.decode('[1, null, {"k": null}]')
    assert.are.equal(json.null, v[2])
    assert.are.equal(json.null, v[3].k)
    assert.are.equal("[1,null,{\"k\":null}]", json.encode(v))
    assert.are.equal(json.null, json.decode("null"))
  end)

  it("names the position of what it cannot decode", function()
    local cases = {
      {'{"a": 1,}', "at character 9"},
      {"[1, 2", "at character 6"},
      {'{"a" 1}', "at character 6"},
      {"tru", "at character 1"},
      {'"unterminated', "at character 1"},
      {"", "at character 1"},
      {"[1] x", "at character 5"},
      {"NaN", "at character 1"},
      {"0x10", "at character 1"},
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(json.decode, case[1])
      assert.is_false(ok, case[1])
      assert.matches("^json%.decode: ", err)
      assert.matches(case[2], err, 1, true)
    end
    assert.has_error(function() json.decode(42) end, "json.decode: expected a string, got a number")
  end)

  it("refuses what JSON cannot say", function()
    for _, v in ipairs {{f = print}, {0 / 0}, {math.huge}, {[1] = 1, [1000] = 2}, {[true] = 1}} do
      local ok, err = pcall(json.encode, v)
      assert.is_false(ok)
      assert.matches("^json%.encode: ", err)
    end
  end)

  it("bounds the depth both ways, at 128", function()
    local deep = string.rep("[", 128) .. string.rep("]", 128)
    assert.is_table(json.decode(deep))
    local ok, err = pcall(json.decode, string.rep("[", 129) .. string.rep("]", 129))
    assert.is_false(ok)
    assert.matches("^json%.decode: .*nest", err)
    -- a hostile document fails cleanly, not on the C stack
    ok, err = pcall(json.decode, string.rep("[", 1000000))
    assert.is_false(ok)
    assert.matches("^json%.decode: ", err)
    local t = {}
    local cur = t
    for _ = 1, 200 do cur[1] = {} cur = cur[1] end
    ok, err = pcall(json.encode, t)
    assert.is_false(ok)
    assert.matches("^json%.encode: .*nesting", err)
  end)

  it("decode_body says why a body is not JSON", function()
    assert.are.same({nil, "the body is empty"}, {json.decode_body("")})
    assert.are.same({nil, "the body is empty"}, {json.decode_body(nil)})
    local v, why = json.decode_body("[1,")
    assert.is_nil(v)
    assert.matches("at character 4", why, 1, true)
    assert.are.same({1}, (json.decode_body("[1]")))
  end)
end)

-- request:json() in a plain handler: no router, so the handler encodes.
local SERVER = [[
local app = pulsar.apps.HttpServer{name = "json", bind = "127.0.0.1:0", workers = 1,
  handler = function(request)
    local value = request:json()
    return 200, {["Content-Type"] = "application/json"},
           pulsar.json.encode({got = value, kind = type(value)})
  end}
app:start():wait()
print("serving " .. app.address)
io.stdout:flush()
]]

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

describe("request:json()", function()
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

  it("decodes the body a client sent", function()
    local body = support.write_file(support.tmpname(), '{"name": "Jürgen", "tags": ["a", null]}')
    local r = curl("-w '\\n%{http_code}' --data-binary @" .. support.quote(body) .. " " .. url)
    assert.are.equal(0, r.code, r.err)
    local text, status = r.out:match("^(.*)\n(%d+)$")
    assert.are.equal("200", status)
    local v = json.decode(text)
    assert.are.same({got = {name = "Jürgen", tags = {"a", json.null}}, kind = "table"}, v)
    os.remove(body)
  end)

  it("answers a malformed body 400 naming the position, and the next request is served", function()
    local r = curl("-w '\\n%{http_code}' --data-binary '[1, 2,, 3]' " .. url)
    local text, status = r.out:match("^(.*)\n(%d+)$")
    assert.are.equal("400", status)
    assert.matches("^Bad Request: malformed JSON body: .* at character 7\n$", text)
    r = curl("-w '\\n%{http_code}' -X POST " .. url)
    text, status = r.out:match("^(.*)\n(%d+)$")
    assert.are.same({"400", "Bad Request: malformed JSON body: the body is empty\n"}, {status, text})
    r = curl("--data-binary '\"fine\"' " .. url)
    assert.are.same({got = "fine", kind = "string"}, json.decode(r.out))
  end)
end)
