-- scripts/bench's command line and output (docs/BENCHMARKS.md): a benchmark
-- name it does not know is refused before anything builds or runs, with the
-- names it knows, and exit status 2; and the benchmarks added last (B1's
-- thread floor and node peers, B3, B7, B8, B9, B10) print their lines in
-- quick mode.
-- (scripts/test runs the whole quick mode; figures are never judged here.)
local support = require "support"

local function have_node()
  local ok = os.execute("command -v node >/dev/null 2>&1 || command -v nodejs >/dev/null 2>&1")
  return ok == true or ok == 0
end

describe("scripts/bench", function()
  for _, name in ipairs {"B0", "B11", "B99", "Bx"} do
    it("refuses the unknown benchmark " .. name, function()
      local r = support.run("--no-build " .. name, nil, "scripts/bench")
      assert.are.equal(2, r.code, r.out .. r.err)
      assert.matches("bench: unknown benchmark " .. name .. "; known: B1 B2 B3 B4 B5 B6 B7 B8 B9 B10", r.err)
      assert.are.equal("", r.out)
    end)
  end

  it("prints B1's thread floor, B3, B7 and B8 beside their floors in quick mode", function()
    local r = support.run("--quick --no-build B1 B3 B7 B8", nil, "scripts/bench")
    assert.are.equal(0, r.code, r.out .. r.err)
    local function has(pattern) assert.matches(pattern, r.out, 1, false) end
    local figure = ": [%d.]+ [%w/ ]+ %(baseline: [%d.]+ [%w/ ]+, ratio: [%d.]+%)"
    has("\nB1 thread<%->thread p50" .. figure .. "  target <= 2x: ")
    has("two threads waking each other through eventfds %(thread<%->thread, p50 [%d.]+ us")
    has("\nB3 ring hop p50" .. figure .. "  target <= 2x: ")
    has("\nB3 ring rate" .. figure)
    has("\nB7 idle CPU per 10 s" .. figure .. "  target <= 0.05 CPU s: ")
    has("\nB8 many%-to%-many calls rate" .. figure)
    has("\nB8 many%-to%-many call p50" .. figure)
    if have_node() then
      local peer = " peer: [%d.]+ [%w/ ]+ %(node [^:]+: [%d.]+ [%w/ ]+, ratio: [%d.]+%)"
      has("\nB1 thread<%->thread p50" .. peer)
      has("\nB1 process<%->process p50" .. peer)
      has("\nB8 many%-to%-many calls rate" .. peer)
    else
      has("node peers skipped: ")
    end
  end)

  it("prints B9, node<->node round trip, beside its TCP floor and two Erlang nodes in quick mode", function()
    local r = support.run("--quick --no-build B9", nil, "scripts/bench")
    assert.are.equal(0, r.code, r.out .. r.err)
    local function has(pattern) assert.matches(pattern, r.out, 1, false) end
    local figure = ": [%d.]+ [%w/ ]+ %(baseline: [%d.]+ [%w/ ]+, ratio: [%d.]+%)"
    has("\nB9 node<%->node round trip p50" .. figure .. "  target <= 2x: ")
    has("\nB9 node<%->node round trip p99" .. figure)
    has("\nB9 node<%->node round trip rate" .. figure)
    has("baseline: 40 bytes ping%-ponged over TCP on 127%.0%.0%.1")
    if r.out:find("Erlang peer skipped: ", 1, true) then return end
    local peer = " peer: [%d.]+ us %(Erlang two nodes %(erl %-s?name%): [%d.]+ us, ratio: [%d.]+%)"
    has("\nB9 node<%->node round trip p50" .. peer .. "  target ratio <= 1: ")
    has("\nB9 node<%->node round trip p99" .. peer)
    has("Erlang: Erlang/OTP %d+, a process on node a and one on node b")
  end)

  it("prints B10, WebSocket echo, beside its C floor and node's ws in quick mode", function()
    local r = support.run("--quick --no-build B10", nil, "scripts/bench")
    assert.are.equal(0, r.code, r.out .. r.err)
    local function has(pattern) assert.matches(pattern, r.out, 1, false) end
    local figure = ": [%d.]+ [%w/ ]+ %(baseline: [%d.]+ [%w/ ]+, ratio: [%d.]+%)"
    has("\nB10 WebSocket echo messages/s" .. figure)
    has("\nB10 WebSocket echo p99" .. figure)
    if r.out:find("skipped", 1, true) then
      has("node [%w ]*skipped: ")
    else
      local peer = " peer: [%d.]+ [%w/ ]+ %(node ws [%d.]+, 2 cluster workers: [%d.]+ [%w/ ]+, ratio: [%d.]+%)"
      has("\nB10 WebSocket echo messages/s" .. peer .. "  target ratio >= 1: ")
      has("\nB10 WebSocket echo p99" .. peer .. "  target ratio <= 1: ")
    end
  end)
end)
