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

describe("pulsar-lua -i on a pipe, with actors and readable values", function()
  it("spawns a thread actor and prints its info as a readable table", function()
    local r = support.run("-i", 'p = pulsar.spawn{name = "w", concurrency = "thread"}:wait()\n' ..
                                'p.name, p.aid == p.aid\n' ..
                                'pulsar.send(p, "info"):wait()\n')
    assert.are.same({0, ""}, {r.code, r.err})
    assert.matches("^w\ttrue\n{\n  actor = {\n    age = 0,\n    aid = \"%x+\",\n", r.out)
    assert.matches('\n    kind = "thread",\n', r.out)
    assert.matches("\n    mailbox = {pending = %d+, received = %d+, sent = %d+},\n", r.out)
    assert.matches('\n    name = "w",\n', r.out)
    assert.matches("\n  },\n  extra = {}\n}\n$", r.out)
  end)

  it("reads a function over several lines, then calls it", function()
    local r = support.run("-i", "function twice(x)\n  return x * 2\nend\ntwice(21)\n" ..
                                "t = {\n1,\n2}\n#t\n")
    assert.are.same({0, "42\n2\n", ""}, {r.code, r.out, r.err})
  end)

  it("prints a runtime error with the line's traceback, then goes on", function()
    local r = support.run("-i", "function inner() error('deep') end\n" ..
                                "inner()\nprint('still here')\n")
    assert.are.same({0, "still here\n"}, {r.code, r.out})
    assert.matches("^stdin:1: deep\nstack traceback:\n", r.err)
    assert.matches("\n%s+stdin:1: in function 'inner'", r.err)
    assert.not_matches("repl_session", r.err) -- the REPL's own frames are cut
  end)

  it("awaits a Future value that fails, and shows the remote error", function()
    local r = support.run("-i", "pulsar.send('arbiter', 'no_such_command')\n1\n")
    assert.are.equal("1\n", r.out)
    assert.matches("unknown command 'no_such_command'", r.err)
  end)

  it("prints tables as sorted, nested constructors, cycles and long ones bounded", function()
    local r = support.run("-i", table.concat({
      't = {10, 20, b = 1, a = {x = "q\\n\\"", y = 2.0}, ["not id"] = true, [5] = false}',
      "t",
      "c = {name = 'c'} ; c.self = c", "c",
      "l = {} ; for i = 1, 100 do l[i] = i end", "l",
      "{a = {b = {c = {d = {e = {f = {}}}}}}}",
      "'top-level strings print raw', 1, nil",
      "{s = ('x'):rep(300)}",
    }, "\n") .. "\n")
    assert.are.same({0, ""}, {r.code, r.err})
    local out = {}
    for line in r.out:gmatch("[^\n]+") do out[#out + 1] = line end
    assert.are.equal('{10, 20, [5] = false, a = {x = "q\\n\\"", y = 2.0}, b = 1, ["not id"] = true}', out[1])
    assert.are.equal('{name = "c", self = <cycle>}', out[2])
    assert.are.equal("{", out[3])
    assert.matches("^  1, 2, 3, .*, 22,$", out[4])
    assert.matches("^  23, .*, 40,$", out[5])
    assert.are.equal("  ... (60 more)", out[6])
    assert.are.equal("}", out[7])
    assert.are.equal("{a = {b = {c = {d = {e = {...}}}}}}", out[8])
    assert.are.equal("top-level strings print raw\t1\tnil", out[9])
    assert.are.same({"{", '  s = "' .. ("x"):rep(200) .. '"... (100 more bytes)', "}"},
                    {out[10], out[11], out[12]})
  end)

  it("completes through the session API", function()
    local s = support.script([[
      session = require("pulsar.repl_session").new()
      function show(list) print(table.concat(list, " ")) end
    ]])
    local r = support.run("-i " .. support.quote(s), table.concat({
      "show(session:complete('pulsar.sp'))",
      "p = pulsar.spawn{concurrency = 'thread'}:wait()",
      "show(session:complete('x = p.'))",
      "str = 'abc'",
      "show(session:complete('str:up'))",
      "show(session:complete('(\"x\"):rep'))",
      "show(session:complete('pri'))",
      "show(session:complete('nothing.at.all'))",
    }, "\n") .. "\n")
    assert.are.same({0, ""}, {r.code, r.err})
    assert.are.equal("pulsar.spawn\np.address p.aid p.name\n" ..
                     "str:upper\n:rep\nprint\n\n", r.out)
  end)
end)

describe("pulsar.repl_session", function()
  local session = require "pulsar.repl_session"

  it("completes globals and keywords, fields through __index tables, methods after ':'", function()
    local Base = {greet = function() end, count = 3}
    Base.__index = Base
    local env = {
      obj = setmetatable({own = 1}, Base),
      pulsar = pulsar, print = print, string = string, whilst = 1,
      f = pulsar.Future(),
    }
    local s = session.new(env)
    assert.are.same({"obj.count", "obj.greet", "obj.own"}, s:complete("obj."))
    assert.are.same({"obj:greet"}, s:complete("obj:"))
    assert.are.same({"f:wait"}, s:complete("x = f:wa"))
    assert.are.same({"while", "whilst"}, s:complete("whil"))
    assert.are.same({"pulsar.send", "pulsar.sleep", "pulsar.spawn"}, s:complete("return pulsar.s"))
    assert.are.same({"string.upper"}, s:complete("string.upp"))
    assert.are.same({}, s:complete("1.5"))
    assert.are.same({}, s:complete("obj.own.deeper."))
  end)

  it("evaluates in its environment and fails a cancelled line with 'interrupted'", function()
    local s = session.new({pulsar = pulsar})
    assert.are.same({status = "ok", text = "3"}, s:eval("1 + 2"))
    assert.are.same({status = "incomplete"}, s:eval("if true then"))
    local result
    local task = pulsar.async(function() result = s:eval("pulsar.sleep(30)") end)
    assert.truthy(s:cancel())
    task:wait(10)
    assert.are.same({status = "error", text = "interrupted"}, result)
    assert.is_false(s:cancel())
  end)
end)
