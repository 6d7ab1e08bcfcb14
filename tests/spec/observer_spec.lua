-- The observer (lua/pulsar/observer/) as its users meet it: an arbiter
-- started with --observer runs two applications (process workers) and a
-- thread actor; curl and a python3-websockets client (tests/tools/
-- observer_feed.py) use its API and its feed, and headless Chromium
-- (tests/tools/browser.py) opens its page, where a worker killed with
-- kill -9 must give way to its replacement without a reload. The spec
-- writes build/observer.png, the picture the README shows. Without
-- Chromium (it cannot start) the browser's case is pending with the reason
-- browser.py printed.
local support = require "support"
local json = require "pulsar.json"

local WAIT = 30 -- seconds; generous, for slow machines and sanitizers
local PYTHON = support.PYTHON
local quote = support.quote
local SCREENSHOT = "build/observer.png"

local SYSTEM = [[
local alpha = pulsar.Application{
  name = "alpha", workers = 2,
  worker_info = function(worker, info) info.custom = {marker = "on-info-was-here"} end,
}
alpha:start():wait()
local beta = pulsar.Application{
  name = "beta", workers = 1,
  worker_start = function() pulsar.log.warning("beta's worker says hello") end,
}
beta:start():wait()
pulsar.spawn{name = "solo", concurrency = "thread"}:wait()
print("system ready")
]]

-- The arbiter with --observer on a free port: a support.start handle with
-- url (http://HOST:PORT), token and ws (the feed's URL with the token).
local function start_observed(source)
  local dir = support.temp_dir()
  local h = support.start(("--cookie-file %s --pid-file %s --observer 127.0.0.1:0 %s"):format(
    quote(dir .. "/cookie"), quote(dir .. "/pid"), quote(support.script(source or SYSTEM))))
  local url = support.wait_for(function() return h.err():match("the observer is at (http://%S+)") end, WAIT)
  assert(url, "the observer did not start: " .. h.err())
  assert(h.wait_output("system ready", WAIT), "the system did not start: " .. h.err())
  h.url, h.token = url:match("^(http://[^/]+)/%?token=(%x+)$")
  assert(h.token, "no token in " .. url)
  h.ws = h.url:gsub("^http", "ws") .. "/ws?token=" .. h.token
  h.dir = dir
  return h
end

local function get(h, path, args)
  return support.curl_response(h.url .. path, args)
end

local function bearer(h) return "-H " .. quote("Authorization: Bearer " .. h.token) end

local function actors(h)
  local res = get(h, "/api/actors", bearer(h))
  assert.are.equal(200, res.status, res.body)
  return json.decode(res.body).actors
end

local function named(list, name)
  local found = {}
  for _, a in ipairs(list) do
    if a.name == name then found[#found + 1] = a end
  end
  return found
end

local function feed(url, args)
  local r = support.run(quote(url) .. " " .. (args or "") .. " --timeout " .. WAIT, nil,
                        PYTHON .. " tests/tools/observer_feed.py")
  assert.are.equal(0, r.code, r.err)
  return support.json_lines(r.out)
end

local browser = support.browser

-- Waits until the replacement of a killed worker is up: `count` workers
-- of `name`, none with `gone_pid`; returns them.
local function replaced(h, name, count, gone_pid)
  return support.wait_for(function()
    local workers = named(actors(h), name)
    if #workers ~= count then return nil end
    for _, w in ipairs(workers) do
      if w.pid == gone_pid or w.state ~= "running" then return nil end
    end
    return workers
  end, WAIT)
end

describe("the observer", function()
  local h
  setup(function() h = start_observed() end)
  teardown(function()
    if not h then return end
    h.kill("TERM", tonumber(support.read_file(h.dir .. "/pid") or "") or 0)
    local code = h.wait(WAIT)
    assert.are.equal(15, code, h.err()) -- SIGTERM's number, after a graceful stop
  end)

  it("prints its URL with a token derived from the cookie, and answers 401 without it", function()
    for _, path in ipairs {"/", "/api/actors", "/api/info/x", "/api/logs", "/ws"} do
      local res = get(h, path)
      assert.are.equal(401, res.status, path)
      assert.matches("needs the observer's token", res.body, 1, true)
      assert.are.equal('Bearer realm="pulsar-lua observer"', res.headers["www-authenticate"])
    end
    assert.are.equal(401, get(h, "/?token=" .. ("0"):rep(32)).status)
    assert.are.equal(401, get(h, "/api/actors", "-H 'Authorization: Bearer nope'").status)
    assert.are.equal(401, get(h, "/api/actors/x/kill", "-X POST").status) -- actions too
    local page = get(h, "/?token=" .. h.token)
    assert.are.equal(200, page.status)
    assert.matches("^text/html", page.headers["content-type"])
    assert.matches("frame-ancestors 'none'", page.headers["content-security-policy"], 1, true)
    assert.are.equal("no-referrer", page.headers["referrer-policy"])
    assert.is_nil(page.headers["access-control-allow-origin"])
    assert.not_matches("https?://[%w.-]+/", (page.body:gsub("http://www%.w3%.org/2000/svg", "")))
  end)

  it("lists every actor in /api/actors, in tree order, with its pid", function()
    local list = actors(h)
    assert.are.equal("arbiter", list[1].kind)
    local order = {}
    for _, a in ipairs(list) do order[#order + 1] = a.unique_name or a.name end
    assert.are.same({"arbiter", "alpha", "alpha-worker-1", "alpha-worker-2", "beta", "beta-worker-1", "solo"},
                    order)
    local arbiter = list[1]
    for _, a in ipairs(list) do
      assert.is_number(a.pid, a.name)
      assert.is_true(support.alive(a.pid), a.name)
      if a.kind == "process" then
        assert.are_not.equal(arbiter.pid, a.pid)
        assert.are.equal(a.name:match("^(%a+)"), a.application)
      end
      if a.kind ~= "arbiter" then assert.is_string(a.parent) end
      assert.is_number(a.memory_lua)
      assert.is_number(a.mailbox.received)
    end
    assert.are.equal("thread", named(list, "solo")[1].kind)
    assert.are.equal(arbiter.pid, named(list, "solo")[1].pid)
    assert.are.equal(named(list, "alpha")[1].aid, named(list, "alpha-worker")[1].parent)
    assert.are.equal(0, named(list, "alpha")[1].restarts)
  end)

  it("gives an actor's whole info in /api/info/<aid>, on_info's additions included", function()
    local worker = named(actors(h), "alpha-worker")[1]
    local res = get(h, "/api/info/" .. worker.aid, bearer(h))
    assert.are.equal(200, res.status, res.body)
    local info = json.decode(res.body)
    assert.are.equal(worker.aid, info.actor.aid)
    assert.are.equal(worker.pid, info.actor.pid)
    assert.are.same({marker = "on-info-was-here"}, info.custom)
    local missing = get(h, "/api/info/nobody", bearer(h))
    assert.are.equal(404, missing.status)
    assert.matches("no actor 'nobody'", missing.body, 1, true)
  end)

  it("keeps the log lines of every process, a worker's among them, in /api/logs", function()
    local line = support.wait_for(function()
      local res = get(h, "/api/logs?since=0", bearer(h))
      for _, l in ipairs(json.decode(res.body).lines) do
        if l.text == "beta's worker says hello" then return l end
      end
    end, WAIT)
    assert(line, "the worker's warning never reached /api/logs")
    local worker = named(actors(h), "beta-worker")[1]
    assert.are.same({level = "warning", actor = "beta-worker-1", pid = worker.pid},
                    {level = line.level, actor = line.actor, pid = line.pid})
    local later = json.decode(get(h, "/api/logs?since=" .. line.seq, bearer(h)).body).lines
    for _, l in ipairs(later) do assert.is_true(l.seq > line.seq) end
    assert.are.equal(400, get(h, "/api/logs?since=-1", bearer(h)).status)
  end)

  it("feeds a WebSocket a hello, then a tick a second, and refuses another origin", function()
    local messages = feed(h.ws, "--messages 3")
    assert.are.equal("hello", messages[1].type)
    assert.are.equal(7, #messages[1].actors)
    assert.are.same({"tick", "tick"}, {messages[2].type, messages[3].type})
    local point = messages[3].point
    for _, key in ipairs {"t", "messages", "memory", "restarts", "http"} do assert.is_number(point[key], key) end
    assert.is_true(point.memory > 0)
    assert.are.same({{refused = 403}}, feed(h.ws, "--origin http://elsewhere.example --messages 1"))
    assert.are.same({{refused = 401}}, feed(h.ws:gsub("%?token=.*", ""), "--messages 1"))
    local own = h.url -- a page of the observer's own origin is let in
    assert.are.equal("hello", feed(h.ws, "--origin " .. own .. " --messages 1")[1].type)
  end)

  it("restarts a worker replacement first, and refuses what cannot be done", function()
    local before = named(actors(h), "beta-worker")[1]
    local function post(path, args)
      return get(h, path, "-X POST " .. (args or bearer(h)))
    end
    local res = post("/api/actors/" .. before.aid .. "/restart")
    assert.are.equal(200, res.status, res.body)
    assert.is_true(json.decode(res.body).ok)
    local after = replaced(h, "beta-worker", 1, before.pid)
    assert(after, "no replacement of the restarted worker")
    assert.matches("^beta%-worker%-%d$", after[1].unique_name)
    assert.is_true(support.wait_for(function() return not support.alive(before.pid) end, WAIT))
    assert.are.equal(1, named(actors(h), "beta")[1].restarts)
    local arbiter = actors(h)[1]
    assert.are.equal(400, post("/api/actors/" .. arbiter.aid .. "/kill").status)
    local solo = named(actors(h), "solo")[1]
    local refused = post("/api/actors/" .. solo.aid .. "/restart")
    assert.are.equal(409, refused.status)
    assert.matches("not a worker of an application", refused.body, 1, true)
    assert.are.equal(404, post("/api/actors/" .. solo.aid .. "/explode").status)
    assert.are.equal(404, post("/api/actors/nobody/stop").status)
    assert.are.equal(403, post("/api/actors/" .. solo.aid .. "/kill",
                               bearer(h) .. " -H 'Origin: http://elsewhere.example'").status)
    assert.is_true(support.alive(solo.pid))
  end)

  it("shows every actor with its pid in Chromium, and a killed worker's replacement without a reload", function()
    local workers = named(actors(h), "alpha-worker")
    local victim = workers[1]
    local rows = [[[...document.querySelectorAll("#actors tr.actor")].map(r =>
      [r.dataset.name, r.dataset.kind, Number(r.dataset.pid), r.querySelector(".pid").textContent.trim()])]]
    local replaced_js = ([[(() => {
      const pids = [...document.querySelectorAll('#actors tr.actor[data-name="alpha-worker"]')]
        .map(r => Number(r.dataset.pid));
      return pids.length === 2 && !pids.includes(%d) && !pids.includes(0);
    })()]]):format(victim.pid)
    local r = browser(table.concat({
      "--window 1280x943", -- a 1280x800 page: the README's picture
      "--url " .. quote(h.url .. "/?token=" .. h.token),
      "--wait-for " .. quote([[document.querySelector("#status").textContent.trim() === "live" &&
        document.querySelectorAll("#actors tr.actor").length === 7]]),
      "--eval " .. quote(rows),
      "--eval " .. quote("performance.timeOrigin"),
      "--exec " .. quote("kill -9 " .. victim.pid),
      "--wait-for " .. quote(replaced_js),
      "--eval " .. quote(rows),
      "--eval " .. quote("performance.timeOrigin"),
      "--click " .. quote(('#actors tr.actor[data-aid="%s"] .name'):format(workers[2].aid)),
      "--wait-for " .. quote(('document.querySelector("#info").dataset.aid === "%s" && ' ..
        'document.querySelector("#info").textContent.includes("on-info-was-here")'):format(workers[2].aid)),
      "--wait-for " .. quote([[document.querySelectorAll("#logs .line").length > 0]]),
      "--screenshot " .. quote(SCREENSHOT),
    }, " "))
    if r.code == 2 then
      pending("skipped: " .. r.err:gsub("\n$", ""))
      return
    end
    assert.are.equal(0, r.code, r.err)
    local first, origin, second, origin_after = table.unpack(support.json_lines(r.out))
    local api = actors(h)
    for _, row in ipairs(first) do
      assert.are.equal(tostring(row[3]), row[4]) -- the pid is shown, not only kept
      assert.is_true(row[3] > 0)
    end
    assert.are.same({"arbiter", "alpha", "alpha-worker", "alpha-worker", "beta", "beta-worker", "solo"},
                    (function() local n = {} for i, row in ipairs(first) do n[i] = row[1] end return n end)())
    assert.are.equal(origin, origin_after) -- the same page: no reload
    local now = {}
    for _, a in ipairs(api) do now[a.name .. ":" .. a.pid] = true end
    for _, row in ipairs(second) do
      assert.is_true(now[row[1] .. ":" .. row[3]], "the page shows a pid the API does not: " .. row[1])
      assert.are_not.equal(victim.pid, row[3])
    end
    assert.is_true(named(api, "alpha")[1].restarts >= 1)
    local png = support.read_file(SCREENSHOT)
    assert.are.equal("\137PNG", png:sub(1, 4))
  end)
end)

describe("the observer's edges", function()
  it("does not keep the arbiter alive: a script that ends exits 0", function()
    local dir = support.temp_dir()
    local r = support.run(("--cookie-file %s --observer 127.0.0.1:0 -e %s"):format(
      quote(dir .. "/cookie"), quote("print(pulsar.observer.running().url:match('^http://127'))")))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("http://127\n", r.out)
    assert.matches("the observer is at http://127%.0%.0%.1:%d+/%?token=%x+", r.err)
  end)

  it("refuses a Unix socket, an address in use, and a second start, each in one line", function()
    local r = support.run("--observer unix:/tmp/x.sock -e ''")
    assert.are_not.equal(0, r.code)
    assert.matches("--observer takes HOST:PORT (a browser opens it), not 'unix:/tmp/x.sock'", r.err, 1, true)
    local dir = support.temp_dir()
    local busy = pulsar.create_server{host = "127.0.0.1", port = 0, protocol = function() return {} end}:wait(WAIT)
    r = support.run(("--cookie-file %s --observer 127.0.0.1:%d -e ''"):format(quote(dir .. "/cookie"), busy.port))
    busy:close()
    assert.are.equal(1, r.code)
    assert.matches("\npulsar%-lua: observer: cannot listen at 127%.0%.0%.1:" .. busy.port ..
                   ": cannot bind [^\n]*address already in use[^\n]*\n$", r.err)
    r = support.run(("--cookie-file %s --observer 127.0.0.1:0 -e %s"):format(quote(dir .. "/cookie"),
      quote("pulsar.observer.start{bind = '127.0.0.1:0'}")))
    assert.are.equal(1, r.code)
    assert.matches("observer: already running at http://127%.0%.0%.1:%d+/", r.err)
    r = support.run(("--cookie-file %s -e %s"):format(quote(dir .. "/cookie"),
      quote("pulsar.observer.start{bind = 'unix:/tmp/o.sock'}")))
    assert.matches("observer: bind must be HOST:PORT: a browser cannot open unix:/tmp/o.sock", r.err, 1, true)
  end)
end)
