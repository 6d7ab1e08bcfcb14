-- core.log_tail (the ring of recent log lines the observer reads): the
-- lines this process printed, with their seq, time, level, actor and text,
-- those of its thread actors included. These specs run inside pulsar-lua,
-- which is itself an arbiter, so its own pulsar.log lines land in the ring
-- that is read here. Each text carries a fresh id, so lines of earlier
-- specs never match.
local support = require "support"
local core = require "pulsar.core"

local function tag(what) return what .. " " .. core.random_id() end

-- The kept line whose text is `text`, or nil.
local function find(text, since)
  local lines = core.log_tail(since or 0)
  for _, line in ipairs(lines) do
    if line.text == text then return line end
  end
end

local function fails_with(pattern, fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.matches(pattern, tostring(err))
end

describe("core.log_tail", function()
  it("keeps each printed line with its seq, time, level, actor and text", function()
    local text = tag("tail me")
    local before = os.time()
    pulsar.log.warning(text)
    local lines, last = core.log_tail()
    local line = lines[#lines]
    assert.are.equal(text, line.text)
    assert.are.equal("warning", line.level)
    assert.are.equal("arbiter", line.actor)
    assert.are.equal(last, line.seq)
    assert.is_true(math.type(line.seq) == "integer" and line.seq > 0)
    assert.is_true(line.time >= before - 1 and line.time <= os.time() + 1,
                   "time is unix seconds")
    assert.is_true(math.type(line.time) == "float")
    for i = 2, #lines do assert.is_true(lines[i].seq > lines[i - 1].seq) end
  end)

  it("formats like pulsar.log and keeps every level that is printed", function()
    local text = tag("formatted")
    pulsar.log.error("%s and %d", text, 7)
    assert.are.equal("error", find(text .. " and 7").level)
    if not pulsar.log.enabled("debug") then
      local hidden = tag("not printed")
      pulsar.log.debug(hidden)
      assert.is_nil(find(hidden))
    end
  end)

  it("returns only the lines after `since`, at most `max`", function()
    local _, start = core.log_tail()
    local texts = {tag("one"), tag("two"), tag("three")}
    for _, t in ipairs(texts) do pulsar.log.warning(t) end
    local lines, last = core.log_tail(start)
    assert.are.equal(3, #lines)
    for i, t in ipairs(texts) do
      assert.are.equal(t, lines[i].text)
      assert.are.equal(start + i, lines[i].seq)
    end
    assert.are.equal(start + 3, last)
    local after, last2 = core.log_tail(last)
    assert.are.same({}, after)
    assert.are.equal(last, last2)
    local first = core.log_tail(start, 1)
    assert.are.equal(1, #first)
    assert.are.equal(texts[1], first[1].text)
    local none, newest = core.log_tail(start, 0)
    assert.are.same({}, none)
    assert.are.equal(last, newest)
    assert.are.equal(texts[3], core.log_tail(start + 2)[1].text)
  end)

  it("holds the last 256 lines", function()
    -- in a pulsar-lua of its own, so that its 300 lines go to a file
    local r = support.run(support.quote(support.script [[
      local core = require "pulsar.core"
      local _, start = core.log_tail()
      for i = 1, 300 do pulsar.log.warning("wrap %d", i) end
      local lines, last = core.log_tail(start)
      print(#lines, last - start, lines[1].text, lines[#lines].text)
    ]]))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("256\t300\twrap 45\twrap 300\n", r.out)
  end)

  it("cuts a long line without breaking a UTF-8 character", function()
    local text = tag(string.rep("é", 400))
    pulsar.log.warning(text)
    local line = core.log_tail()[#core.log_tail()]
    assert.is_true(#line.text < #text and #line.text >= 470)
    assert.are.equal(text:sub(1, #line.text), line.text)
    assert.is_not_nil(utf8.len(line.text))
  end)

  it("has the lines of thread actors, not those of process actors", function()
    local text = tag("from thread")
    local p = pulsar.spawn{name = "tail-thread", concurrency = "thread",
                           start = function() pulsar.log.warning(text) end}:wait(20)
    local line = support.wait_for(function() return find(text) end, 10)
    assert.is_not_nil(line, "the thread actor's line is not in the tail")
    assert.are.equal("tail-thread", line.actor)
    assert.are.equal("warning", line.level)
    pulsar.send(p, "stop")

    local other = tag("from process")
    local q = pulsar.spawn{name = "tail-process", concurrency = "process"}:wait(20)
    pulsar.send(q, "run", function(_, t) pulsar.log.warning(t) end, other):wait(10)
    assert.is_nil(find(other))
    pulsar.send(q, "stop")
  end)

  it("rejects bad arguments with clear errors", function()
    fails_with("since must be a seq >= 0", function() core.log_tail(-1) end)
    fails_with("number expected", function() core.log_tail("soon") end)
    fails_with("number has no integer representation", function() core.log_tail(1.5) end)
    fails_with("max must be a count >= 0", function() core.log_tail(0, -2) end)
    fails_with("number expected", function() core.log_tail(0, {}) end)
  end)
end)
