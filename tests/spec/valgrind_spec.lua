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
end)
