-- The REPL on a real terminal, driven through tmux as a person would: keys
-- go in with send-keys, the screen comes back with capture-pane. Each spec
-- has a tmux server of its own (a unique socket, -S, removed with the
-- server, which leaves it behind), a history file of its own
-- (PULSAR_HISTORY: the real home is never touched) and no inputrc.
local support = require "support"

local function shell(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  p:close()
  return out
end

if os.execute("command -v tmux > /dev/null 2>&1") ~= true then
  describe("the REPL on a terminal", function()
    pending("tmux is not installed (scripts/setup installs it): terminal REPL specs skipped")
  end)
  return
end

local Terminal = {}
Terminal.__index = Terminal

--- Starts pulsar-lua in a 120x40 tmux pane; once it ends, the pane shows
-- EXIT=<status> and TTY=<the terminal's icanon and echo flags>.
local function terminal(opts)
  opts = opts or {}
  local self = setmetatable({
    socket = support.tmpname(".tmux"),
    history = opts.history or support.tmpname(".history"),
    own_history = not opts.history,
  }, Terminal)
  -- With opts.home, HOME is that folder and PULSAR_HISTORY is unset.
  local env = opts.home and ("-u PULSAR_HISTORY HOME=" .. support.quote(opts.home))
              or ("PULSAR_HISTORY=" .. support.quote(self.history))
  -- With opts.shell, the pane runs an interactive bash (job control, a `$ `
  -- prompt) and pulsar-lua is typed into it; `echo EXIT=$?` is the spec's.
  if opts.shell then
    self:tmux(("new-session -d -x 120 -y 40 -c %s %s"):format(
      support.quote(os.getenv("PWD") or "."),
      support.quote(("env %s INPUTRC=/dev/null PS1='$ ' bash --norc --noprofile -i"):format(env))))
    self:wait("%$ ?\n*$", "the shell's prompt")
    self:line(support.quote(support.exe) .. " " .. (opts.args or ""))
    return self
  end
  local cmd = ("env %s INPUTRC=/dev/null %s %s; echo EXIT=$?; " ..
               "echo TTY=$(stty -a | tr ' ' '\\n' | grep -x -e -icanon -e icanon -e -echo -e echo" ..
               " | tr '\\n' ,); sleep 60"):format(env, support.quote(support.exe), opts.args or "")
  self:tmux(("new-session -d -x 120 -y 40 -c %s %s"):format(
    support.quote(os.getenv("PWD") or "."), support.quote(cmd)))
  return self
end

function Terminal:tmux(args)
  return shell(("tmux -f /dev/null -S %s %s"):format(support.quote(self.socket), args))
end

function Terminal:screen() return self:tmux("capture-pane -p") end

--- Types text literally (no Enter).
function Terminal:type(text) self:tmux("send-keys -l -- " .. support.quote(text)) end

--- Presses keys named as tmux names them (Enter, Tab, Left, C-c, ...).
function Terminal:press(...) self:tmux("send-keys " .. table.concat({...}, " ")) end

--- Types a line and presses Enter.
function Terminal:line(text) self:type(text); self:press("Enter") end

--- Waits until the screen matches `pattern`; returns the screen, or fails
-- the spec showing what the screen held.
function Terminal:wait(pattern, why)
  local found = support.wait_for(function()
    local screen = self:screen()
    return screen:find(pattern) and screen
  end, 10)
  assert(found, ("%s: %q never showed; the screen:\n%s"):format(why or "waiting", pattern, self:screen()))
  return found
end

--- The last line that is not empty.
function Terminal:last_line()
  local last
  for text in self:screen():gmatch("[^\n]+") do
    if text:find("%S") then last = text end
  end
  return last
end

function Terminal:kill()
  self:tmux("kill-server")
  os.remove(self.socket)
  if self.own_history then os.remove(self.history) end
end

-- A prompt waiting at the end of the screen (capture-pane trims the space).
local PROMPT_AT_END = "\n> ?\n*$"

describe("the REPL on a terminal", function()
  it("shows the banner and a prompt, prints values, exits 0 on Ctrl-D with the terminal restored", function()
    local t = terminal()
    finally(function() t:kill() end)
    t:wait("^pulsar%-lua %d+%.%d+%.%d+ %(Lua 5%.4[^\n]*\n> ?\n", "banner and prompt")
    t:line("1+1")
    t:wait("\n> 1%+1\n2\n> ?\n", "the value")
    t:press("C-d")
    local screen = t:wait("TTY=%S+", "the exit")
    assert.matches("EXIT=0\n", screen)
    assert.matches("TTY=icanon,echo,", screen)
  end)

  it("spawns a thread actor and shows its info as a readable table", function()
    local t = terminal()
    finally(function() t:kill() end)
    t:wait(PROMPT_AT_END, "the first prompt")
    t:line('p = pulsar.spawn{concurrency="thread"}:wait()')
    t:wait("wait%(%)\n> ?\n", "the spawn")
    t:line('pulsar.send(p, "info"):wait()')
    local screen = t:wait("\n  extra = {}\n}\n> ?\n", "the info")
    assert.matches('\n{\n  actor = {\n    age = 0,\n    aid = "%x+",\n', screen)
    assert.matches('\n    kind = "thread",\n', screen)
    assert.matches("\n    mailbox = {pending = %d+, received = %d+, sent = %d+},\n", screen)
  end)

  it("edits the line: Left and BackSpace change what is evaluated", function()
    local t = terminal()
    finally(function() t:kill() end)
    t:wait(PROMPT_AT_END, "the first prompt")
    t:type("10+23")
    t:press("Left", "BSpace", "Enter")
    t:wait("\n> 10%+3\n13\n", "the edited line's value")
  end)

  it("completes names on Tab and lists the choices on a second Tab", function()
    local t = terminal()
    finally(function() t:kill() end)
    t:wait(PROMPT_AT_END, "the first prompt")
    t:type("pulsar.sp")
    t:press("Tab")
    t:wait("\n> pulsar%.spawn\n", "pulsar.sp completed")
    t:press("C-u")
    t:type("pulsar.")
    t:press("Tab", "Tab")
    local screen = t:wait("pulsar%.gather", "the listing")
    for _, name in ipairs {"pulsar.call_later", "pulsar.send", "pulsar.async", "pulsar.sleep"} do
      assert.truthy(screen:find(name, 1, true), name .. " listed")
    end
    assert.are.equal("> pulsar.", t:last_line()) -- the typed text comes back below
    -- A session whose completion waits (as one over the wire does): the
    -- answer comes after readline asked, and is put in place then.
    t:press("C-u")
    t:line("S = getmetatable(require('pulsar.repl_session').new()) ; plain = S.complete ; " ..
           "S.complete = function(self, line) pulsar.sleep(0.2) return plain(self, line) end")
    t:type("pulsar.get_a")
    t:press("Tab")
    t:wait("\n> pulsar%.get_actor\n*$", "a late completion")
  end)

  it("recalls lines with Up, and from a previous session through the history file", function()
    local history = support.tmpname(".history")
    local first, second = terminal {history = history}, nil
    finally(function() -- busted keeps one finally per spec
      first:kill()
      if second then second:kill() end
      os.remove(history)
    end)
    first:wait(PROMPT_AT_END, "the first prompt")
    first:line("answer = 42")
    first:line("1+1")
    first:wait("\n2\n> ?\n", "1+1")
    first:press("Up")
    first:wait("\n> 1%+1\n*$", "Up")
    first:press("C-u", "C-d")
    first:wait("EXIT=0", "the first session's end")
    assert.are.equal("answer = 42\n1+1\n", support.read_file(history))
    assert.are.equal("600", shell("stat -c %a " .. support.quote(history)):match("%d+"))

    second = terminal {history = history}
    second:wait(PROMPT_AT_END, "the second session's prompt")
    second:press("Up", "Up")
    second:wait("\n> answer = 42\n*$", "a line from the first session")
    second:press("Enter")
    second:line("answer + 1")
    second:wait("\n43\n", "the recalled line ran")
  end)

  it("keeps the history in a private ~/.pulsar-lua by default", function()
    local home = support.tmpname(".home")
    assert(os.execute("mkdir " .. support.quote(home)))
    local t = terminal {home = home}
    finally(function() t:kill(); os.execute("rm -rf " .. support.quote(home)) end)
    t:wait(PROMPT_AT_END, "the first prompt")
    t:line("remembered = true")
    -- Ctrl-D only once the prompt is back, as in the other cases: typed
    -- ahead while a line runs, the terminal (in its own modes then) turns
    -- it into an end of input that no read takes.
    t:wait("\n> remembered = true\n> ?\n*$", "the prompt after the line")
    t:press("C-d")
    t:wait("EXIT=0", "the exit")
    assert.are.equal("remembered = true\n", support.read_file(home .. "/.pulsar-lua/history"))
    assert.are.equal("700 600", shell(("stat -c %%a %s/.pulsar-lua %s/.pulsar-lua/history"):format(
      support.quote(home), support.quote(home))):gsub("\n", " "):match("^(.-)%s*$"))
  end)

  it("clears a half-typed line on Ctrl-C at the prompt, and the arbiter goes on", function()
    local t = terminal()
    finally(function() t:kill() end)
    t:wait(PROMPT_AT_END, "the first prompt")
    t:type("half typed")
    t:press("C-c")
    t:wait("\n> half typed%^C\n> ?\n", "the cleared line")
    t:line("1+2")
    t:wait("\n> 1%+2\n3\n> ?\n", "a line after Ctrl-C")
  end)

  it("shows _PROMPT and _PROMPT2 as lua does (through tostring)", function()
    local t = terminal()
    finally(function() t:kill() end)
    t:wait(PROMPT_AT_END, "the first prompt")
    t:line("_PROMPT = 'one> ' _PROMPT2 = setmetatable({}, {__tostring = function() return 'two>> ' end})")
    t:wait("\none> ?\n*$", "_PROMPT")
    t:line("x = (")
    t:wait("\none> x = %(\ntwo>> ?\n*$", "_PROMPT2")
    t:line("40 + 2)")
    t:line("x")
    t:wait("\ntwo>> 40 %+ 2%)\none> x\n42\none> ?\n*$", "the value under _PROMPT")
    t:line("_PROMPT = nil")
    t:wait("\none> _PROMPT = nil\n> ?\n*$", "the default prompt back")
  end)

  it("cancels a waiting line on Ctrl-C, and interrupts one stuck in a Lua loop", function()
    local t = terminal()
    finally(function() t:kill() end)
    t:wait(PROMPT_AT_END, "the first prompt")
    t:line("print('waiting') pulsar.sleep(60)")
    t:wait("\nwaiting\n", "the line running")
    t:press("C-c")
    t:wait("\nwaiting\n%^C\ninterrupted\n> ?\n", "back at the prompt")
    t:line("print('spinning') while true do end")
    t:wait("\nspinning\n", "the loop running")
    t:press("C-c")
    t:wait("\nspinning\n%^C\ninterrupted!\nstack traceback:\n.*\n> ?\n", "out of the loop")
    t:line("2+2")
    local screen = t:wait("\n> 2%+2\n4\n> ?\n", "a line after both")
    assert.not_matches("EXIT", screen)
  end)

  it("shows an actor's output above the prompt, leaving the typed text intact", function()
    local t = terminal()
    finally(function() t:kill() end)
    t:wait(PROMPT_AT_END, "the first prompt")
    t:line("p = pulsar.spawn{start = function() local pulsar = require 'pulsar' " ..
           "pulsar.async(function() for i = 1, 1000 do print('tick ' .. i) pulsar.sleep(0.2) end end) end}:wait()")
    t:wait("\ntick 2\n", "the actor printing")
    t:type("x = 10 +")
    local seen = tonumber(t:screen():match(".*tick (%d+)"))
    t:wait("\ntick " .. (seen + 3) .. "\n", "ticks while typing")
    local screen = t:screen()
    assert.are.equal("> x = 10 +", t:last_line())
    for text in screen:gmatch("[^\n]+") do
      if text:find("tick %d") then assert.matches("^tick %d+$", text) end
    end
    t:line(" 5")
    t:line("print('result=' .. x)")
    t:wait("\nresult=15\n", "the finished line's value")
  end)
  it("suspends on Ctrl-Z with the shell's modes back, and resumes on fg with the typed text", function()
    local t = terminal {shell = true}
    finally(function() t:kill() end)
    t:wait(PROMPT_AT_END, "the first prompt")
    t:type("x = 40 +")
    t:wait("\n> x = 40 %+\n*$", "the half line")
    t:press("C-z")
    t:wait("\n> x = 40 %+\n%[1%]%+ +Stopped +[^\n]*pulsar%-lua[^\n]*\n%$ ?\n*$", "the shell's Stopped line")
    t:line("stty -a | tr ' ' '\\n' | grep -x -e -icanon -e icanon -e -echo -e echo | tr '\\n' ,; echo")
    t:wait("\nicanon,echo,\n%$ ?\n*$", "the shell's modes while stopped")
    t:line("fg")
    t:wait("\n%$ fg\n[^\n]*pulsar%-lua[^\n]*\n> x = 40 %+\n*$", "the prompt and the half line again")
    -- Keys reach readline one by one again: Left moves into the typed text.
    t:type("2")
    t:press("Left")
    t:type(" ")
    t:press("End", "Enter")
    t:line("x")
    t:wait("\n> x = 40 %+ 2\n> x\n42\n> ?\n*$", "the finished line's value")
    t:press("C-d")
    t:wait("\n%$ ?\n*$", "the shell's prompt after the exit")
    t:line("echo EXIT=$?")
    t:wait("\nEXIT=0\n", "the exit status")
  end)

  it("attaches to a running arbiter: remote lines, completion, Ctrl-C, and Ctrl-D detaches", function()
    local dir = support.tmpname(".attach")
    assert(os.execute("mkdir -m 700 " .. support.quote(dir)))
    local mailbox = "unix:" .. dir .. "/mailbox.sock"
    local arbiter = support.start(("--mailbox %s -e %s"):format(support.quote(mailbox),
      support.quote("remote_answer = 42 pulsar.call_later(120, function() end) print('up ' .. pulsar.get_actor():info().actor.pid)")))
    finally(function()
      if arbiter.pid then arbiter.kill("TERM", arbiter.pid) end
      os.execute("rm -rf " .. support.quote(dir))
    end)
    arbiter.pid = tonumber(arbiter.wait_output("up (%d+)\n"))
    assert.is_truthy(arbiter.pid, "the arbiter did not start")
    local t = terminal {args = "--attach " .. support.quote(mailbox)}
    finally(function() t:kill() end)
    t:wait("attached to arbiter %(%x+, pid " .. arbiter.pid .. "%)", "the attach banner")
    t:wait(PROMPT_AT_END, "the first prompt")
    t:line("remote_answer + 1")
    t:wait("\n> remote_answer %+ 1\n43\n", "a remote value")
    t:type("remote_ans")
    t:press("Tab")
    t:wait("\n> remote_answer\n*$", "a remote completion")
    t:press("C-u")
    t:line("pulsar.sleep(60)")
    pulsar.sleep(0.3)
    t:press("C-c")
    t:wait("\n%^C\ninterrupted\n> ?\n", "the remote wait cancelled")
    t:press("C-d")
    t:wait("EXIT=0", "detached")
    assert.is_true(support.alive(arbiter.pid), "the arbiter stopped when the console detached")
  end)
end)
