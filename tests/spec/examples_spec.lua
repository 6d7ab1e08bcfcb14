-- The examples run as README says, print what they promise and exit 0.
-- (The echo and HTTP examples have their own specs, beside their servers.)
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
end)
