-- The examples run as README says, print what they promise and exit 0.
-- (The echo and HTTP hello examples have their own specs, beside their
-- servers; api and observer, which need only curl, are here; the
-- observer's page in a browser is observer_spec's.)
local support = require "support"

local function example(name, args)
  return support.run("examples/" .. name .. ".lua " .. (args or ""))
end

describe("the examples", function()
  it("hello gathers three tasks and fires a timer after the main chunk", function()
    local r = example("hello", "there")
    assert.are.same({0, ""}, {r.code, r.err})
    assert.matches('gathered "actors hello there"', r.out, 1, true)
    assert.matches("and a timer, after the main chunk\n$", r.out)
  end)

  it("ping_pong counts between a process and a thread actor", function()
    local r = example("ping_pong", "7")
    assert.are.same({0, ""}, {r.code, r.err})
    assert.matches("counted to 7 in", r.out, 1, true)
  end)

  for _, kind in ipairs {"thread", "process"} do
    it("ring passes the token round " .. kind .. " actors for every lap", function()
      local r = example("ring", "4 25 " .. kind)
      assert.are.same({0, ""}, {r.code, r.err})
      assert.matches("4 " .. kind .. " actors passed the token 25 laps: 100 hops in", r.out, 1, true)
    end)
  end

  it("philosophers all sit down, share the forks and report their meals", function()
    local r = example("philosophers", "1.5 thread")
    assert.are.same({0, ""}, {r.code, r.err})
    local seen, meals = {}, 0
    for number, eaten in r.out:gmatch("philosopher (%d) ate +(%d+) times") do
      seen[#seen + 1] = tonumber(number)
      meals = meals + tonumber(eaten)
    end
    assert.are.same({1, 2, 3, 4, 5}, seen)
    assert.is_true(meals > 0)
    assert.matches(meals .. " meals in 1.5 s", r.out, 1, true)
  end)

  it("api serves its notes as JSON and its page as static files", function()
    local pid_file = support.tmpname(".pid")
    local h = support.start("--pid-file " .. support.quote(pid_file) .. " examples/api.lua 127.0.0.1:0")
    finally(function()
      local pid = tonumber(support.read_file(pid_file) or "")
      if pid and support.alive(pid) then h.kill("KILL", pid) end
    end)
    local address = h.wait_output("serving the notes API on http://(%S+)/", 30)
    assert.truthy(address, h.err())
    local function curl(args)
      local p = io.popen("curl -sS --max-time 30 -w '\n%{http_code} %{content_type}' " .. args .. " 2>&1")
      local out = p:read("a")
      p:close()
      local body, status, ctype = out:match("^(.*)\n(%d+) (.*)$")
      return tonumber(status), body, ctype
    end
    local function at(path) return support.quote("http://" .. address .. path) end
    local json = pulsar.json.decode
    local status, body, ctype = curl("-d '{\"text\": \"buy milk\"}' " .. at("/api/notes"))
    assert.are.same({201, {id = 1, text = "buy milk"}, "application/json"}, {status, json(body), ctype})
    status, body = curl(at("/api/notes"))
    assert.are.same({200, {notes = {{id = 1, text = "buy milk"}}, count = 1}}, {status, json(body)})
    status, body = curl(at("/api/notes/1"))
    assert.are.same({200, {id = 1, text = "buy milk"}}, {status, json(body)})
    status, body = curl("-d '{\"text\": ' " .. at("/api/notes"))
    assert.are.equal(400, status)
    assert.matches("malformed JSON body: .* at character 10", body)
    status = curl("-X DELETE " .. at("/api/notes/1"))
    assert.are.equal(204, status)
    assert.are.equal(404, (curl(at("/api/notes/1"))))
    status, body, ctype = curl(at("/"))
    assert.are.same({200, "text/html; charset=utf-8"}, {status, ctype})
    assert.matches("<title>pulsar%-lua notes</title>", body)
    status, body, ctype = curl(at("/style.css"))
    assert.are.same({200, "text/css; charset=utf-8"}, {status, ctype})
    h.kill("TERM", tonumber(support.read_file(pid_file)))
    assert.are.equal(15, h.wait(30))
  end)

  it("observer starts its system and its observer, where the load shows as HTTP requests and messages", function()
    local dir = support.temp_dir()
    local h = support.start(("--cookie-file %s --pid-file %s examples/observer.lua 0"):format(
      support.quote(dir .. "/cookie"), support.quote(dir .. "/pid")))
    finally(function()
      local pid = tonumber(support.read_file(dir .. "/pid") or "")
      if pid and support.alive(pid) then h.kill("KILL", pid) end
    end)
    local url = support.wait_for(function() return h.err():match("the observer is at (http://%S+)") end, 30)
    assert.truthy(url, h.err())
    assert.truthy(h.wait_output("web serves http://127%.0%.0%.1:%d+/", 30), h.err())
    local base, token = url:match("^(http://[^/]+)/%?token=(%x+)$")
    local function api(path)
      local p = io.popen(("curl -sS --max-time 30 -H 'Authorization: Bearer %s' %s"):format(
        token, support.quote(base .. path)))
      local out = p:read("a")
      p:close()
      return pulsar.json.decode(out)
    end
    local names = {}
    for _, a in ipairs(api("/api/actors").actors) do names[#names + 1] = a.unique_name or a.name end
    assert.are.same({"arbiter", "web", "web-worker-1", "web-worker-2", "flaky", "flaky-worker-1",
                     "flaky-worker-2", "counter", "load"}, names)
    -- the load's requests and pings reach the counters within a few rounds
    local served = support.wait_for(function()
      local n, pings = 0, nil
      for _, a in ipairs(api("/api/actors").actors) do
        if a.http then n = n + a.http.requests end
      end
      for _, a in ipairs(api("/api/actors").actors) do
        if a.name == "counter" then pings = api("/api/info/" .. a.aid).counter.pings end
      end
      return n > 5 and pings > 5 and {n, pings}
    end, 30)
    assert.truthy(served, "the load did not reach the web workers and the counter")
    h.kill("TERM", tonumber(support.read_file(dir .. "/pid")))
    assert.are.equal(15, h.wait(30))
  end)
end)
