-- What a function submitted to an executor may reach (docs/API.md "Executor"):
-- worker threads have plain Lua libraries and no pulsar, so a function whose
-- upvalue is a pulsar module is refused at submit with a message naming it;
-- and a job's Future holds its first result only.
local executor = require "pulsar.executor"

describe("executor submit", function()
  it("refuses a function whose upvalue is the pulsar module", function()
    local ex = executor.new(1)
    local p = require "pulsar"
    local ok, err = pcall(ex.submit, ex, function() return p.VERSION end)
    assert.is_false(ok)
    assert.are.equal("executor: fn's upvalue 'p' is the pulsar module, which executor "
                     .. "threads do not have; pass plain values", tostring(err))
    ex:close()
  end)

  it("refuses a pulsar module reached through a nested function", function()
    local ex = executor.new(1)
    local log = require "pulsar.log"
    local function note() log.info("x") end
    local ok, err = pcall(ex.submit, ex, function() note() end)
    assert.is_false(ok)
    assert.matches("upvalue 'log' is the pulsar.log module", tostring(err))
    ex:close()
  end)

  it("still takes plain upvalues and standard modules", function()
    local ex = executor.new(1)
    local base, strings = 40, string
    assert.are.equal("42", ex:submit(function() return strings.format("%d", base + 2) end):wait(20))
    ex:close()
  end)

  it("gives the job's first result only", function()
    local ex = executor.new(1)
    local f = ex:submit(function() return 1, 2, 3 end)
    local got = table.pack(f:wait(20))
    assert.are.equal(1, got.n)
    assert.are.equal(1, got[1])
    ex:close()
  end)
end)
