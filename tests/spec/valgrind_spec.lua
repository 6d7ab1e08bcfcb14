-- No leak and no invalid access under valgrind, for a script that uses the
-- loop, timers, tasks and the codecs, and for a stop by signal. Runs against
-- the release build; the sanitizer build checks the same through ASan.
local support = require "support"

local VALGRIND = "valgrind -q --leak-check=full --show-leak-kinds=definite,indirect " ..
                 "--errors-for-leak-kinds=definite,indirect --error-exitcode=99"

describe("pulsar-lua under valgrind", function()
  local skip = os.getenv("PULSAR_BUILD") == "asan"
               or not os.execute("command -v valgrind >/dev/null 2>&1")

  it("exits 0 with no leak and no error", function()
    if skip then return pending("valgrind runs on the release build only") end
    local s = support.script([[
      local core = require "pulsar.core"
      local f = pulsar.async(function() pulsar.sleep(0.01) return {1, "two", {x = 3.5}} end)
      assert(core.decode(core.encode(f:wait()))[3].x == 3.5)
      pulsar.call_later(0.01, function() end)
      pulsar.call_later(10, function() end):cancel()
      pulsar.call_soon(function() end)
      print("ok")
    ]])
    local h = support.start(support.quote(s), VALGRIND)
    assert.are.equal(0, h.wait(120), h.err())
    assert.are.equal("ok\n", h.out())
  end)

  it("exits 15 with no leak after SIGTERM, with timers pending", function()
    if skip then return pending("valgrind runs on the release build only") end
    local s = support.script([[
      pulsar.call_later(60, print)
      print("pid", pulsar.get_actor():info().actor.pid) io.stdout:flush()
      pulsar.sleep(60)
    ]])
    local h = support.start(support.quote(s), VALGRIND)
    local pid = tonumber(h.wait_output("pid\t(%d+)", 120))
    assert.is_not_nil(pid, h.err())
    h.kill("TERM", pid)
    assert.are.equal(15, h.wait(120), h.err())
  end)
  it("leaks nothing with a TCP mailbox, a console and an HTTP server in one arbiter", function()
    if skip then return pending("valgrind runs on the release build only") end
    local dir = support.temp_dir()
    local cookie = support.write_file(dir .. "/cookie", ("c"):rep(32))
    os.execute("chmod 600 " .. support.quote(cookie))
    local s = support.script([[
      local app = pulsar.apps.HttpServer{name = "web", bind = "127.0.0.1:0", workers = 0,
        handler = function(request) return "hi " .. (request.query.who or "?") end}
      app:start():wait()
      print("ready", pulsar.get_actor():info().actor.pid, app.address, pulsar.arbiter().tcp_address)
      io.stdout:flush()
      pulsar.sleep(120)
    ]])
    local h = support.start(("--cookie-file %s --mailbox 127.0.0.1:0 %s"):format(
      support.quote(cookie), support.quote(s)), VALGRIND)
    local pid, http, mailbox = h.wait_output("ready\t(%d+)\t(%S+)\t(%S+)\n", 120)
    assert.is_not_nil(pid, h.err())
    pid, http, mailbox = h.out():match("ready\t(%d+)\t(%S+)\t(%S+)\n")
    local got = io.popen("curl -s 'http://" .. http .. "/?who=valgrind'"):read("a")
    assert.are.equal("hi valgrind", got)
    local console = support.run(("--cookie-file %s --attach %s"):format(
      support.quote(cookie), mailbox), "x = 6 * 7\nx\n")
    assert.are.same({0, "42\n"}, {console.code, console.out})
    h.kill("TERM", tonumber(pid))
    assert.are.equal(15, h.wait(120), h.err())
    os.execute("rm -rf " .. support.quote(dir))
  end)
end)
