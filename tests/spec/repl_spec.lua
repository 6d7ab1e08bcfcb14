-- The plain line REPL (-i) driven through a pipe: no prompts, lines run in
-- order, the loop keeps running between lines.
local support = require "support"

describe("pulsar-lua -i on a pipe", function()
  it("prints expression values and runs statements in order", function()
    local r = support.run("-i", "1+1\nx = 5\nx, x*2\nprint('hi')\n")
    assert.are.same({0, "2\n5\t10\nhi\n", ""}, {r.code, r.out, r.err})
  end)

  it("continues an incomplete statement on the next lines", function()
    local r = support.run("-i", "for i = 1, 3 do\nio.write(i)\nend\nprint()\n")
    assert.are.same({0, "123\n"}, {r.code, r.out})
  end)

  it("prints an error with its traceback and goes on", function()
    local r = support.run("-i", "error('oops')\nprint('after')\n")
    assert.are.equal(0, r.code)
    assert.are.equal("after\n", r.out)
    assert.matches("stdin:1: oops\nstack traceback:", r.err)
  end)

  it("reports a syntax error and goes on", function()
    local r = support.run("-i", "x = = 1\nprint('next')\n")
    assert.are.equal("next\n", r.out)
    assert.matches("stdin:1: unexpected symbol", r.err)
  end)

  it("awaits a Future left as a line's value, and lets lines wait", function()
    local r = support.run("-i", "pulsar.async(function() pulsar.sleep(0.05) return 'awaited' end)\n" ..
                                "pulsar.sleep(0.01) print('slept')\n")
    assert.are.same({0, "awaited\nslept\n"}, {r.code, r.out})
  end)

  it("keeps timers of the script running while it reads lines", function()
    local s = support.script("n = 0\npulsar.call_later(0.01, function() n = 42 end)\n")
    local r = support.run("-i " .. support.quote(s), "pulsar.sleep(0.2)\nn\n")
    assert.are.same({0, "42\n"}, {r.code, r.out})
  end)

  it("stops the arbiter at end of input, even with timers left", function()
    local r = support.run("-i -e 'pulsar.call_later(60, print)'", "print('bye')\n")
    assert.are.same({0, "bye\n"}, {r.code, r.out})
  end)
end)
