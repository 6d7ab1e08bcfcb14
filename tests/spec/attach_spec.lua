-- The TCP mailbox and `pulsar-lua --attach` (docs/API.md §1 and §3), seen from
-- outside: a real arbiter in a process of its own, consoles attached to it
-- through a pipe as a user or a script would, and peers that break the
-- handshake's rules on a raw socket. The arbiter admits a TCP peer only
-- after it proves it knows the cookie; a console's lines run in the
-- arbiter's VM and print their results locally.
local support = require "support"
local core = require "pulsar.core"
local quote, script = support.quote, support.script

local WAIT = 20 -- seconds; generous, for slow machines and sanitizers

-- An arbiter that says where it listens, then stays up until stopped. Its
-- handshake timeout is short, for the spec that waits for it.
local ARBITER = [[
  io.stdout:setvbuf("line")
  local a = pulsar.arbiter()
  a.cfg.handshake_timeout = 0.5
  require("pulsar.auth").REFUSAL_LOG_INTERVAL = 0 -- every refusal logged, for the specs below
  print("ready", a:info().actor.pid, a.tcp_address or "-", a.address)
  pulsar.call_later(3600, function() end)
]]

local temp_dir = support.temp_dir

local function exists(path) return os.execute("test -e " .. quote(path)) == true end

local function mode_of(path)
  local p = io.popen("stat -c %a " .. quote(path))
  local mode = p:read("l")
  p:close()
  return mode
end

local function write_cookie(path, bytes, mode)
  support.write_file(path, bytes)
  assert(os.execute(("chmod %s %s"):format(mode or "600", quote(path))))
  return path
end

--- Starts an arbiter with `options`; returns a handle with its pid, its
-- TCP address (nil without one) and its Unix address.
local function start_arbiter(options, wrapper, source)
  local h = support.start(options .. " " .. quote(script(source or ARBITER)), wrapper)
  assert.is_truthy(h.wait_output("ready\t%d+\t%S+\t%S+\n", WAIT), "no arbiter: " .. h.err())
  local pid, tcp, unix = h.out():match("ready\t(%d+)\t(%S+)\t(%S+)\n")
  h.pid, h.unix = tonumber(pid), unix
  if tcp ~= "-" then h.tcp = tcp end
  function h.stop()
    h.kill("TERM", h.pid)
    assert.are.equal(15, h.wait(WAIT))
  end
  return h
end

--- Runs a console on `address` with `lines` on its stdin.
local function attach(address, lines, cookie)
  local args = "--attach " .. quote(address)
  if cookie then args = args .. " --cookie-file " .. quote(cookie) end
  return support.run(args, lines)
end

-- Runs a command with HOME set to `home` (so nothing touches the real one);
-- returns {code=, out=, err=} as support.run does.
local function run_at_home(home, args)
  local out, err = support.tmpname(".out"), support.tmpname(".err")
  local _, _, code = os.execute(("HOME=%s %s %s < /dev/null > %s 2> %s"):format(
    quote(home), quote(support.exe), args, quote(out), quote(err)))
  local r = {code = code, out = support.read_file(out) or "", err = support.read_file(err) or ""}
  os.remove(out); os.remove(err)
  return r
end

-- A raw connection to a TCP mailbox, to play a peer that breaks the
-- handshake: it records what arrives and when the arbiter closes it.
local function raw_peer(address)
  local connected = pulsar.Future("connecting to " .. address)
  core.connect(address, function(conn, err)
    if conn then connected:set_result(conn) else connected:set_exception(err) end
  end)
  local p = {conn = connected:wait(WAIT), closed = pulsar.Future("the arbiter closing")}
  local first = pulsar.Future("the challenge")
  p.messages = {} -- every message, decoded
  p.conn:set_handler(function(payload)
    p.messages[#p.messages + 1] = core.decode(payload, false)
    if not first:done() then first:set_result(p.messages[1]) end
  end, function(reason) p.closed:set_result(core.hrtime()) end)
  function p.challenge() return first:wait(WAIT).challenge end
  --- Seconds from now until the arbiter closes the connection.
  function p.closed_after()
    local from = core.hrtime()
    return p.closed:wait(WAIT) - from
  end
  return p
end

describe("a TCP mailbox", function()
  local dir, cookie, arbiter

  lazy_setup(function()
    dir = temp_dir()
    cookie = write_cookie(dir .. "/cookie", "a shared secret of the test\n")
    arbiter = start_arbiter(("--mailbox 127.0.0.1:0 --cookie-file %s"):format(quote(cookie)))
  end)

  lazy_teardown(function()
    if arbiter then arbiter.stop() end
    os.execute("rm -rf " .. quote(dir))
  end)

  -- Whether the arbiter logs the refusal of a peer for `reason`, in lines
  -- written after `since` bytes of its log.
  local function refusal_logged(since, reason)
    return support.wait_for(function()
      return arbiter.err():find("mailbox: refused 127%.0%.0%.1:%d+: " .. reason, since + 1)
    end, WAIT)
  end

  local function still_serves()
    local r = attach(arbiter.tcp, "6 * 7\n", cookie)
    assert.are.same({0, "42\n"}, {r.code, r.out}, r.err)
  end

  it("listens on the port the system chose, beside its private Unix mailbox", function()
    assert.matches("^127%.0%.0%.1:%d+$", arbiter.tcp)
    assert.is_nil(arbiter.tcp:match(":0$"))
    assert.matches("^unix:", arbiter.unix)
    assert.matches("mailbox listening on " .. arbiter.tcp:gsub("%.", "%%."), arbiter.err())
  end)

  it("runs a console's lines in the arbiter; its state outlives the console", function()
    local r = attach(arbiter.tcp, "x = 41\nx + 1\n", cookie)
    assert.are.same({0, "42\n", ""}, {r.code, r.out, r.err})
    r = attach(arbiter.tcp, "x\nx = x + 1\n", cookie)
    assert.are.same({0, "41\n"}, {r.code, r.out})
    r = attach(arbiter.unix, "x\n") -- the Unix mailbox needs no cookie
    assert.are.same({0, "42\n"}, {r.code, r.out})
    assert.is_true(support.alive(arbiter.pid))
  end)

  it("spawns and asks actors from a console, as typed", function()
    local r = attach(arbiter.tcp, 'p = pulsar.spawn{concurrency="thread"}:wait()\n' ..
                                  'pulsar.send(p, "info"):wait().actor.kind\n' ..
                                  'pulsar.send(p, "ping"):wait()\n', cookie)
    assert.are.same({0, "thread\npong\n"}, {r.code, r.out}, r.err)
  end)

  it("prints a remote error here and goes on; print() writes on the arbiter's stdout", function()
    local r = attach(arbiter.tcp, "error('remote oops')\nprint('said remotely')\n1 + 1\n", cookie)
    assert.are.same({0, "2\n"}, {r.code, r.out})
    assert.matches("remote oops", r.err)
    assert.is_truthy(arbiter.wait_output("said remotely", WAIT))
  end)

  it("refuses a wrong cookie: nothing runs, status 1, the refusal is logged", function()
    local since = #arbiter.err()
    local mark = dir .. "/written-by-an-intruder"
    local wrong = write_cookie(dir .. "/wrong", "not the secret, though long enough")
    local r = attach(arbiter.tcp, ("io.open(%q, 'w'):close()\n"):format(mark), wrong)
    assert.are.equal(1, r.code)
    assert.matches("pulsar%-lua: cannot attach to 127%.0%.0%.1:%d+: refused", r.err)
    assert.is_false(exists(mark))
    assert.is_truthy(refusal_logged(since, "wrong cookie"))
    still_serves()
  end)

  it("refuses a console without a cookie file, before connecting", function()
    local r = attach(arbiter.tcp, "1\n", dir .. "/no-such-cookie")
    assert.are.equal(1, r.code)
    assert.matches("cannot attach to [^\n]*: no cookie file at " .. dir, r.err)
  end)

  it("closes a peer that sends garbage, after a delay; the arbiter goes on", function()
    local port, since = arbiter.tcp:match(":(%d+)$"), #arbiter.err()
    local from = core.hrtime()
    os.execute(("bash -c 'exec 3<>/dev/tcp/127.0.0.1/%s; printf garbage >&3; cat <&3 >/dev/null'")
               :format(port))
    assert.is_true(core.hrtime() - from >= 0.9, "closed before the refusal delay")
    assert.is_truthy(refusal_logged(since, "bad frame: reserved bits set"))
    still_serves()
  end)

  it("runs no command sent before the proof, not even as its first message", function()
    local mark, since = dir .. "/ran-before-proof", #arbiter.err()
    raw_peer(arbiter.tcp).conn:send(core.encode {
      command = "pulsar:repl_eval", id = 1, sender = "x", target = "arbiter", ack = true,
      args = {("io.open(%q, 'w'):close()"):format(mark)}})
    -- a function by value is not even decoded
    raw_peer(arbiter.tcp).conn:send(core.encode {
      command = "run", id = 1, sender = "x", target = "arbiter", ack = true,
      args = {function() io.open(mark, "w"):close() end}})
    assert.is_truthy(refusal_logged(since, "no proof"))
    assert.is_truthy(refusal_logged(since, "not a handshake message"))
    assert.is_false(exists(mark))
  end)

  it("closes a well-formed answer with a wrong proof after a delay", function()
    local peer, since = raw_peer(arbiter.tcp), #arbiter.err()
    assert.are.equal(32, #peer.challenge())
    peer.conn:send(core.encode {proof = core.random_bytes(32), challenge = core.random_bytes(32)})
    assert.is_true(peer.closed_after() >= 0.9, "closed before the refusal delay")
    assert.is_truthy(refusal_logged(since, "wrong cookie"))
  end)

  it("closes a handshake frame over 1 KiB", function()
    local peer, since = raw_peer(arbiter.tcp), #arbiter.err()
    peer.challenge()
    peer.conn:send(core.encode {proof = ("p"):rep(2000), challenge = core.random_bytes(32)})
    assert.is_truthy(refusal_logged(since, "bad frame: frame of %d+ bytes exceeds"))
  end)

  it("closes a silent peer after the handshake timeout", function()
    local peer, since = raw_peer(arbiter.tcp), #arbiter.err()
    peer.challenge()
    assert.is_true(peer.closed_after() >= 1.3, "closed before the timeout and the delay")
    assert.is_truthy(refusal_logged(since, "no proof within 0%.5 s"))
    still_serves()
  end)

  it("keeps a share of max_handshakes per address: a newer handshake closes the oldest, saying busy", function()
    -- 4 slots: a share of 1 per address, so each new peer from 127.0.0.1
    -- takes the place of the one before
    assert.are.equal(0, attach(arbiter.unix, "pulsar.arbiter().cfg.max_handshakes = 4\n").code)
    local since = #arbiter.err()
    local first = raw_peer(arbiter.tcp)
    assert.is_truthy(first.challenge())
    local second = raw_peer(arbiter.tcp)
    assert.is_truthy(second.challenge())
    assert.is_true(first.closed_after() < 0.9, "the oldest waited out the refusal delay")
    assert.are.same({refused = "busy: too many handshakes in progress"}, first.messages[2])
    assert.is_truthy(refusal_logged(since, "busy: too many handshakes in progress %(closed as the " ..
                                           "oldest silent handshake: 127%.0%.0%.1 holds its share, 1 of 4%)"))
    -- a console from the same address gets in all the same, taking the
    -- silent peer's place
    still_serves()
    assert.is_true(second.closed_after() < 0.9)
    assert.are.equal(0, attach(arbiter.unix, "pulsar.arbiter().cfg.max_handshakes = nil\n").code)
  end)

  it("answers completions and cancels a waiting line for a remote session", function()
    local connected = pulsar.Future("connecting")
    core.connect(arbiter.unix, function(conn, err)
      if conn then connected:set_result(conn) else connected:set_exception(err) end
    end)
    local session = require("pulsar.attach").session(connected:wait(WAIT))
    local function eval(source) return pulsar.async(session.eval, session, source):wait(WAIT) end
    assert.are.same({status = "ok"}, eval("zz_completed_global = 1"))
    -- inside a task the console waits; outside one (a line editor's
    -- callback) it blocks for the answer
    assert.are.same({"zz_completed_global"},
                    pulsar.async(session.complete, session, "zz_compl"):wait(WAIT))
    local outside = pulsar.Future("a completion outside any task")
    core.timer(0, function() outside:set_result(session:complete("zz_compl")) end)
    assert.are.same({"zz_completed_global"}, outside:wait(WAIT))
    local waiting = pulsar.async(session.eval, session, "pulsar.sleep(60) return 'too late'")
    pulsar.sleep(0.2)
    assert.is_true(session:cancel())
    local result = waiting:wait(WAIT)
    assert.are.equal("error", result.status)
    assert.matches("interrupted", result.text)
    assert.are.same({status = "ok", text = "still here"}, eval("'still here'"))
  end)
end)

-- An arbiter as a user runs one: the refusal log at its usual pace (but
-- lines a second apart, not five, to keep the spec short).
local FLOODED_ARBITER = ARBITER:gsub("REFUSAL_LOG_INTERVAL = 0", "REFUSAL_LOG_INTERVAL = 1")
                               :gsub("a%.cfg%.handshake_timeout = 0%.5", "")

-- A peer that keeps 100 silent connections open to the TCP mailbox at %s,
-- opening another whenever one is closed; says how many it opened and how
-- many were told "busy".
local FLOODER = [[
  io.stdout:setvbuf("line")
  local core = require "pulsar.core"
  local opened, busy = 0, 0
  local function open()
    core.connect(%q, function(conn)
      if not conn then return core.timer(0.05, open) end
      opened = opened + 1
      conn:set_handler(function(payload)
        if core.decode(payload, false).refused then busy = busy + 1 end
      end, open)
    end)
  end
  for _ = 1, 100 do open() end
  local function report() print("flood", core.pid(), opened, busy); core.timer(0.2, report) end
  report()
]]

describe("a TCP mailbox flooded with silent connections from the console's own address", function()
  it("lets the console in, tells the flood why it is closed, and logs a few lines a second", function()
    local dir = temp_dir()
    local cookie = write_cookie(dir .. "/cookie", ("k"):rep(32))
    local arbiter = start_arbiter(("--mailbox 127.0.0.1:0 --cookie-file %s"):format(quote(cookie)),
                                  nil, FLOODED_ARBITER)
    local flooder = support.start(quote(script(FLOODER:format(arbiter.tcp))))
    finally(function()
      local pid = flooder.out():match("flood\t(%d+)")
      if pid then flooder.kill("KILL", tonumber(pid)) end
      arbiter.stop()
      os.execute("rm -rf " .. quote(dir))
    end)
    local function count(which)
      local opened, busy = flooder.out():match(".*flood\t%d+\t(%d+)\t(%d+)\n")
      return tonumber(which == "busy" and busy or opened) or 0
    end
    local function told_busy() return count("busy") end
    assert.is_truthy(support.wait_for(function() return count("opened") >= 300 end, WAIT),
                     "no flood: " .. flooder.err())
    local since = #arbiter.err()
    local r = attach(arbiter.tcp, "6 * 7\n", cookie)
    assert.are.same({0, "42\n"}, {r.code, r.out}, r.err)
    local busy_before = told_busy()
    pulsar.sleep(3)
    assert.is_true(told_busy() > busy_before + 100, "the flood stopped")
    local log = arbiter.err():sub(since + 1)
    local _, lines = log:gsub("\n", "")
    assert.is_true(lines <= 20, ("%d log lines in about 3 s:\n%s"):format(lines, log:sub(1, 3000)))
    assert.matches("mailbox: refused %d+ more connections in the last 1 s %(busy: %d+", log)
  end)
end)

describe("pulsar-lua --attach", function()
  it("says why it cannot attach to an address where nothing listens", function()
    local dir = temp_dir()
    local r = attach("unix:" .. dir .. "/nobody.sock", "1\n")
    assert.are.same({1, ""}, {r.code, r.out})
    assert.matches("^pulsar%-lua: cannot attach to unix:[^\n]*nobody%.sock: no such file or directory\n$", r.err)
    local cookie = write_cookie(dir .. "/cookie", ("s"):rep(32))
    r = attach("127.0.0.1:1", "1\n", cookie)
    assert.are.same({1, "pulsar-lua: cannot attach to 127.0.0.1:1: connection refused\n"}, {r.code, r.err})
    os.execute("rm -rf " .. quote(dir))
  end)

  it("attaches to a Unix mailbox, and reports an arbiter that goes away", function()
    local dir = temp_dir()
    local arbiter = start_arbiter("--mailbox unix:" .. quote(dir .. "/m.sock"))
    assert.are.equal("unix:" .. dir .. "/m.sock", arbiter.unix)
    local input = support.write_file(support.tmpname(".in"), "print('waiting') pulsar.sleep(60)\n")
    local console = support.start(("--attach %s < %s"):format(quote(arbiter.unix), quote(input)))
    assert.is_truthy(arbiter.wait_output("waiting", WAIT))
    arbiter.stop()
    assert.are.equal(1, console.wait(WAIT))
    assert.matches("^pulsar%-lua: the arbiter at unix:[^\n]* went away %([^\n]*%)\n$", console.err())
    os.execute("rm -rf " .. quote(dir))
  end)
end)

describe("the cookie", function()
  it("is made once in ~/.pulsar-lua/cookie: 32 random bytes, 0600, in a 0700 directory", function()
    local home = temp_dir()
    local r = run_at_home(home, "--mailbox 127.0.0.1:0 -e 'print(pulsar.arbiter().tcp_address)'")
    assert.are.equal(0, r.code, r.err)
    assert.matches("^127%.0%.0%.1:%d+\n$", r.out)
    local path = home .. "/.pulsar-lua/cookie"
    assert.matches("created the cookie file " .. path, r.err, 1, true)
    local first = support.read_file(path)
    assert.are.equal(32, #first)
    assert.are.equal("600", mode_of(path))
    assert.are.equal("700", mode_of(home .. "/.pulsar-lua"))
    r = run_at_home(home, "--mailbox 127.0.0.1:0 -e ''")
    assert.are.same({0, ""}, {r.code, r.err:match("created") or ""})
    assert.are.equal(first, support.read_file(path))
    os.execute("rm -rf " .. quote(home))
  end)

  it("is the same for two arbiters that make it at once", function()
    local home = temp_dir()
    local env = "env HOME=" .. quote(home)
    local a = support.start("--mailbox 127.0.0.1:0 " .. quote(script(ARBITER)), env)
    local b = support.start("--mailbox 127.0.0.1:0 " .. quote(script(ARBITER)), env)
    for _, h in ipairs {a, b} do
      assert.is_truthy(h.wait_output("ready\t%d+\t%S+\t%S+\n", WAIT), h.err())
      h.pid, h.tcp = h.out():match("ready\t(%d+)\t(%S+)")
    end
    local cookie = home .. "/.pulsar-lua/cookie"
    for _, h in ipairs {a, b} do
      local r = attach(h.tcp, "'same cookie'\n", cookie)
      assert.are.same({0, "same cookie\n"}, {r.code, r.out}, r.err)
      h.kill("TERM", tonumber(h.pid))
      assert.are.equal(15, h.wait(WAIT))
    end
    os.execute("rm -rf " .. quote(home))
  end)

  it("is refused when group or others may read it, or when it is empty", function()
    local dir = temp_dir()
    local open = write_cookie(dir .. "/open", "secret", "640")
    local r = support.run(("--mailbox 127.0.0.1:0 --cookie-file %s -e 'print(1)'"):format(quote(open)))
    assert.are.same({1, ""}, {r.code, r.out})
    assert.are.equal(("pulsar-lua: cannot open the mailbox at 127.0.0.1:0: cookie file %s can be " ..
                      "read or written by group or others: run chmod 600 %s\n"):format(open, open), r.err)
    r = attach("127.0.0.1:1", "1\n", open)
    assert.are.equal(1, r.code)
    assert.matches("group or others", r.err)
    local empty = write_cookie(dir .. "/empty", "")
    r = support.run(("--mailbox 127.0.0.1:0 --cookie-file %s -e ''"):format(quote(empty)))
    assert.are.equal(1, r.code)
    assert.matches("cookie file " .. empty .. " is 0 bytes: at least 16", r.err, 1, true)
    os.execute("rm -rf " .. quote(dir))
  end)

  it("is refused when shorter than 16 bytes, by an arbiter and by a console, saying how to make one", function()
    local dir = temp_dir()
    local short = write_cookie(dir .. "/short", "x")
    local how = ("cookie file %s is 1 bytes: at least 16 are needed; remove it to have one made, " ..
                 "or write 32 random bytes: head -c 32 /dev/urandom > %s; chmod 600 %s"):format(
                 short, short, short)
    local r = support.run(("--mailbox 127.0.0.1:0 --cookie-file %s -e 'print(1)'"):format(quote(short)))
    assert.are.same({1, "", "pulsar-lua: cannot open the mailbox at 127.0.0.1:0: " .. how .. "\n"},
                    {r.code, r.out, r.err})
    r = attach("127.0.0.1:1", "1\n", short)
    assert.are.same({1, "pulsar-lua: cannot attach to 127.0.0.1:1: " .. how .. "\n"}, {r.code, r.err})
    -- a trailing newline is part of the secret as written; 15 bytes are too few, 16 enough
    local fifteen = write_cookie(dir .. "/fifteen", ("f"):rep(14) .. "\n")
    r = support.run(("--mailbox 127.0.0.1:0 --cookie-file %s -e ''"):format(quote(fifteen)))
    assert.are.equal(1, r.code)
    assert.matches("is 15 bytes: at least 16", r.err, 1, true)
    local sixteen = write_cookie(dir .. "/sixteen", ("f"):rep(15) .. "\n")
    r = support.run(("--mailbox 127.0.0.1:0 --cookie-file %s -e ''"):format(quote(sixteen)))
    assert.are.equal(0, r.code, r.err)
    assert.matches("mailbox listening on 127%.0%.0%.1:", r.err)
    os.execute("rm -rf " .. quote(dir))
  end)
end)
