-- The pulsar-lua command line, as a user types it (docs/API.md §1).
local support = require "support"
local run, script, quote = support.run, support.script, support.quote

describe("pulsar-lua command line", function()
  it("runs -e statements", function()
    local r = run("-e 'print(1+1)'")
    assert.are.same({0, "2\n"}, {r.code, r.out})
  end)

  it("runs -e and -l in order before the script", function()
    local dir = support.tmpname()
    os.execute("mkdir -p " .. quote(dir))
    support.write_file(dir .. "/greet.lua", "return {word = 'hi'}")
    local s = script("print(greet.word, x)")
    local r = run(("-e 'package.path=\"%s/?.lua;\"..package.path' -l greet -e 'x=3' %s"):format(
      dir, quote(s)))
    assert.are.same({0, "hi\t3\n"}, {r.code, r.out})
  end)

  it("gives the script its arguments in arg and ...", function()
    local s = script("print(arg[0] == ..., arg[1], arg[2], select('#', ...))")
    local r = run(quote(s) .. " one two")
    assert.are.equal(0, r.code)
    assert.are.equal("false\tone\ttwo\t2\n", r.out)
    r = run(quote(s) .. " " .. quote(s))
    assert.are.equal("true\t" .. s .. "\tnil\t1\n", r.out)
  end)

  it("puts the interpreter and options at negative arg indices", function()
    local s = script("print(arg[0] ~= nil, arg[-1], arg[-2] ~= nil)")
    local r = run("--log-level warning " .. quote(s))
    assert.are.equal("true\twarning\ttrue\n", r.out)
  end)

  it("reads the script from stdin with -", function()
    local r = run("- a", "print('from stdin', ...)")
    assert.are.same({0, "from stdin\ta\n"}, {r.code, r.out})
  end)

  it("runs stdin as the script when it is not a terminal and no script is given", function()
    local r = run("", "print(6*7)")
    assert.are.same({0, "42\n"}, {r.code, r.out})
  end)

  it("skips a #! first line", function()
    local r = run(quote(script("#!/usr/bin/env pulsar-lua\nprint('shebang ok')")))
    assert.are.same({0, "shebang ok\n"}, {r.code, r.out})
  end)

  it("prints the pulsar-lua, Lua 5.4 and libuv versions with -v", function()
    for _, opt in ipairs {"-v", "--version"} do
      local r = run(opt)
      assert.are.equal(0, r.code)
      assert.matches("^pulsar%-lua %d+%.%d+%.%d+ %(Lua 5%.4%.%d+, libuv %d+%.%d+%.%d+%)\n$", r.out)
    end
  end)

  it("shows every option with -h", function()
    local r = run("-h")
    assert.are.equal(0, r.code)
    for _, opt in ipairs {"-e", "-l", "-i", "-v", "-h", "--workers", "--concurrency",
                          "--timeout", "--exit-timeout", "--bind", "--mailbox",
                          "--log-level", "--pid-file", "--attach", "--cookie-file"} do
      assert.truthy(r.out:find(opt, 1, true), opt .. " missing from -h")
    end
  end)

  it("puts the settings into pulsar.cfg, with pulsar's defaults", function()
    local show = "-e 'local c=pulsar.cfg print(c.workers, c.concurrency, c.timeout, c.exit_timeout, c.log_level, c.bind)'"
    assert.are.equal("1\tprocess\t30.0\t3.0\tinfo\tnil\n", run(show).out)
    local r = run("-w 4 --concurrency thread -t 2.5 --exit-timeout=0 --log-level error -b :8060 " .. show)
    assert.are.equal("4\tthread\t2.5\t0.0\terror\t:8060\n", r.out)
  end)

  local refused = {
    {"--bogus", "unknown option '--bogus'"},
    {"-w", "option '-w' needs a value"},
    {"-w many", "--workers takes a whole number"},
    {"-w -1", "--workers takes a whole number"},
    {"--concurrency fiber", "--concurrency takes 'process' or 'thread'"},
    {"-t 0", "--timeout takes a number of seconds above 0"},
    {"--timeout inf", "--timeout takes a number"},
    {"--exit-timeout -1", "--exit-timeout takes a number of seconds from 0"},
    {"--log-level loud", "--log-level takes debug"},
    {"--bind nowhere", "--bind: 'nowhere' is not an address"},
    {"-b host:99999", "no valid port"},
    {"--mailbox unix:", "names no socket path"},
    {"--mailbox /tmp/x.sock", "--mailbox: '/tmp/x.sock' is not an address (HOST:PORT, :PORT or unix:PATH): write unix:/tmp/x.sock"},
    {"--bind 127.0.0.1:80,nowhere", "--bind: 'nowhere' is not an address"},
    {"--attach nowhere", "--attach: 'nowhere' is not an address"},
    {"--attach 127.0.0.1:7000 script.lua", "--attach runs lines in the arbiter at 127.0.0.1:7000: it takes no script"},
    {"--attach 127.0.0.1:7000 -e x=1", "it takes no -e or -l"},
    {"--attach 127.0.0.1:7000 --mailbox :7001", "it takes no --mailbox"},
    {"--attach unix:/tmp/x.sock --pid-file /tmp/x.pid", "it takes no --pid-file"},
    {"--cookie-file=", "--cookie-file needs a path"},
    {"--mailbox 127.0.0.1:99999", "no valid port"},
    {"/no/such/script.lua", "cannot open /no/such/script.lua"},
  }
  for _, case in ipairs(refused) do
    it("refuses " .. case[1] .. " with one line and status 1", function()
      local r = run(case[1])
      assert.are.equal(1, r.code)
      assert.are.equal("", r.out)
      assert.truthy(r.err:find(case[2], 1, true), r.err)
      assert.are.equal(1, select(2, r.err:gsub("\n", "")), r.err)
    end)
  end

  it("puts --mailbox and --cookie-file into pulsar.cfg", function()
    local r = run("--mailbox unix:/tmp/pulsar-cli-spec-mailbox.sock --cookie-file /tmp/some-cookie " ..
                  "-e 'print(pulsar.cfg.mailbox, pulsar.cfg.cookie_file, pulsar.arbiter().address)'")
    assert.are.same({0, "unix:/tmp/pulsar-cli-spec-mailbox.sock\t/tmp/some-cookie\t" ..
                        "unix:/tmp/pulsar-cli-spec-mailbox.sock\n"}, {r.code, r.out})
  end)

  it("reports a syntax error in one line naming file and line, status 1", function()
    local s = script("local x = 1\nlocal = 2\n")
    local r = run(quote(s))
    assert.are.equal(1, r.code)
    assert.matches("^pulsar%-lua: [^\n]*%.lua:2: [^\n]*\n$", r.err)
  end)

  it("reports a syntax error in -e in one line", function()
    local r = run("-e 'x ='")
    assert.are.equal(1, r.code)
    assert.matches("^pulsar%-lua: %(command line%):1: [^\n]*\n$", r.err)
  end)
end)
