-- pulsar-lua at the command line, side by side with lua5.4 (docs/API.md §1:
-- "pulsar-lua behaves like lua"): each case runs the same command line
-- through both and compares exit status, stdout and stderr, so that a
-- difference fails naming its case. What differs by design is normalised
-- first, never skipped: the program's name in messages, a traceback's
-- frames (the main chunk runs in the arbiter's task), table addresses, and
-- the banner and prompts lua writes to a REPL on a pipe.
local support = require "support"
local quote = support.quote

local LUA = "lua5.4"

if os.execute("command -v " .. LUA .. " > /dev/null 2>&1") ~= true then
  describe("pulsar-lua side by side with lua5.4", function()
    pending(LUA .. " is not installed (apt-get install lua5.4): the comparison is skipped")
  end)
  return
end

local PULSAR = quote(support.exe)
-- pulsar's own library: its chunks are named lua/pulsar/*.lua (host/core/modules.c)
local LIBRARY = "lua/pulsar/"

local function normalise(text)
  text = text:gsub("lua5%.4: ", "PROGRAM: "):gsub("pulsar%-lua: ", "PROGRAM: ")
  local lines = {}
  for line in (text .. "\n"):gmatch("(.-)\n") do
    if not line:find(LIBRARY, 1, true) or line:find("stack traceback") then lines[#lines + 1] = line end
  end
  text = table.concat(lines, "\n")
  text = text:gsub("0x%x+", "0x?")
  -- the frames below the message: the arbiter's task, not lua.c's pcall
  text = text:gsub("\nstack traceback:\n[^\n]*\n.-\n?$", "\nstack traceback: (frames)\n")
  return text
end

-- lua.c writes its banner, its prompts and (through readline) the lines it
-- reads to a REPL whatever stdin is, and a newline at the end of input;
-- pulsar-lua writes none of them on a pipe, so that scripts can drive it.
local function without_banner_and_prompts(text, input)
  text = text:gsub("^Lua 5%.4[^\n]*\n", ""):gsub(">>? ", "")
  local typed, out = {}, {}
  for line in input:gmatch("([^\n]*)\n") do typed[#typed + 1] = line end
  for line in text:gmatch("([^\n]*)\n") do
    if line == typed[1] then table.remove(typed, 1) else out[#out + 1] = line .. "\n" end
  end
  if out[#out] == "\n" then out[#out] = nil end
  return table.concat(out)
end

local function outcome(r, opts)
  local out, err = r.out, r.err
  if opts.repl then out = without_banner_and_prompts(out, opts.stdin) end
  return {code = r.code, out = normalise(out), err = normalise(err)}
end

--- Runs `args` through both with opts.stdin and opts.env (a shell-ready
-- "VAR=value ..." prefix); fails naming `case` if they differ.
local function same(case, args, opts)
  opts = opts or {}
  local env = opts.env and ("env " .. opts.env .. " ") or ""
  local lua = support.run(args, opts.stdin, env .. LUA)
  local ours = support.run(args, opts.stdin, env .. PULSAR)
  local expected, got = outcome(lua, opts), outcome(ours, opts)
  expected.case, got.case = case, case
  assert.are.same(expected, got)
  return ours
end

local function script(source) return quote(support.script(source)) end

describe("pulsar-lua side by side with lua5.4", function()
  it("runs -e in order, and the script after them", function()
    same("-e twice", "-e 'print(1)' -e 'print(2)'")
    same("-e glued", "'-eprint(3)'")
    same("-e and a script", "-e 'x = 5' " .. script("print(x * 2)"))
    same("-- ends the options", "-- " .. script("print('after --')"))
  end)

  it("builds arg as lua does, negative indices and - for stdin included", function()
    local ARGS = [[
      local i = 0
      while arg[i - 1] ~= nil do i = i - 1 end
      for k = i + 1, #arg do print(k, arg[k]) end
      print("...", select("#", ...), ...)
    ]]
    local path = script(ARGS)
    same("arg of a script", "-e 'y = 1' " .. path .. " a 'b c'")
    same("arg of - (stdin)", "-e 'y = 1' - one two", {stdin = ARGS})
    same("arg with stdin as the script", "", {stdin = ARGS})
    same("arg of no script", "-e 'print(arg[1], arg[2], #arg)'")
  end)

  it("requires -l NAME into global NAME, and -l G=NAME into G", function()
    local dir = support.temp_dir()
    support.write_file(dir .. "/compatmod.lua", "return {answer = 42}")
    local env = "LUA_PATH=" .. quote(dir .. "/?.lua")
    same("-l NAME", "-l compatmod -e 'print(compatmod.answer)'", {env = env})
    same("-l G=NAME", "-l g=compatmod -e 'print(g.answer, compatmod)'", {env = env})
    same("-l of a missing module", "-l compat_no_such_module -e 'print(1)'", {env = env})
  end)

  it("honours LUA_INIT_5_4, else LUA_INIT (a chunk or @file); -E ignores them", function()
    same("LUA_INIT", "-e 'print(2)'", {env = [[LUA_INIT='print("init")']]})
    same("LUA_INIT_5_4 first", "-e 'print(2)'",
         {env = [[LUA_INIT_5_4='print("init 5.4")' LUA_INIT='print("init")']]})
    same("LUA_INIT=@file", "-e 'print(x)'", {env = "LUA_INIT=@" .. script("x = 'from a file'")})
    same("-E", "-E -e 'print(2)'", {env = [[LUA_INIT='print("init")']]})
    same("-E ignores LUA_PATH", "-E -e 'print(package.path:find(\"/nowhere/\", 1, true))'",
         {env = "LUA_PATH='/nowhere/?.lua'"})
    same("LUA_INIT with a syntax error", "-e 'print(2)'", {env = "LUA_INIT='x ='"})
    same("LUA_INIT that raises", "-e 'print(2)'", {env = [[LUA_INIT='error("in init")']]})
    same("LUA_INIT runs before -e and the script", script("print(order)"),
         {env = [[LUA_INIT='order = "init first"']]})
  end)

  it("turns warnings on with -W, off by default", function()
    same("-W", "-W -e 'warn(\"one \", \"two\")'")
    same("no -W", "-e 'warn(\"silent\")'")
    same("warn @on", "-e 'warn(\"@on\") warn(\"heard\")'")
    same("-W then @off", "-W -e 'warn(\"@off\") warn(\"unheard\")'")
  end)

  it("runs the collector in lua.c's mode, in the arbiter and in every actor", function()
    same("the collector's mode", "-e 'print(collectgarbage(\"incremental\"))'")
    local r = support.run("-e " .. quote([[
      for _, kind in ipairs {"thread", "process"} do
        local p = pulsar.spawn{concurrency = kind}:wait(30)
        print(kind, pulsar.send(p, "run", function() return collectgarbage("incremental") end):wait(30))
      end
      os.exit(0)
    ]]))
    assert.are.same({0, "thread\tgenerational\nprocess\tgenerational\n"}, {r.code, r.out}, r.err)
  end)

  it("exits with the status os.exit gives", function()
    same("os.exit()", "-e 'os.exit()'")
    same("os.exit(true)", "-e 'os.exit(true)'")
    same("os.exit(false)", "-e 'os.exit(false)'")
    same("os.exit(7)", "-e 'print(1) os.exit(7) print(2)'")
    same("os.exit in a script", script("io.write('bye\\n') os.exit(3)"))
    same("the end of the script", "-e 'print(\"done\")'")
  end)

  it("names errors as lua.c's message handler does", function()
    same("error()", "-e 'print(1) error() print(2)'")
    same("error(nil)", "-e 'error(nil)'")
    same("error{}", "-e 'error{}'")
    same("error(42)", "-e 'error(42)'")
    same("error with a position", "-e 'error(\"boom\")'")
    same("error at level 0", "-e 'error(\"plain\", 0)'")
    same("error object with __tostring",
         "-e 'error(setmetatable({}, {__tostring = function() return \"told\" end}))'")
    same("error object whose __tostring gives no string",
         "-e 'error(setmetatable({}, {__tostring = function() return 1 end}))'")
    same("a runtime error", script("local t = nil\nprint(t.x)"))
  end)

  it("reports syntax errors and missing files in one line", function()
    same("-e syntax error", "-e 'x ='")
    same("script syntax error", script("x = = 1"))
    same("missing script", quote(support.tmpname(".lua")))
    same("stdin syntax error", "-", {stdin = "print(1"})
  end)

  it("runs - and a piped stdin as the script", function()
    same("-", "-", {stdin = "print('from stdin')"})
    same("- with args", "- x y", {stdin = "print(...)"})
    same("no script, stdin a file", "", {stdin = "print('implicit stdin')"})
  end)

  it("closes <close> variables when the main chunk raises or calls os.exit(c, true)", function()
    local CLOSE = "local x <close> = setmetatable({}, {__close = function() print('closed') end}) "
    same("<close> on error", "-e " .. quote("do " .. CLOSE .. "error('boom') end"))
    same("<close> on error in a script", script(CLOSE .. "error('boom')"))
    same("<close> on os.exit(c, true)", "-e " .. quote(CLOSE .. "os.exit(3, true)"))
    same("<close> not on os.exit(c)", "-e " .. quote(CLOSE .. "io.stdout:flush() os.exit(4)"))
    same("<close> at the end", "-e " .. quote(CLOSE .. "print('end')"))
  end)

  it("reports a script's error after it removed standard globals", function()
    same("debug = nil", "-e 'debug = nil error(\"no debug\")'")
    same("coroutine = nil", "-e 'coroutine = nil error(\"no coroutine\")'")
    same("string = nil", "-e 'string = nil error(\"no string\")'")
    same("all of them", "-e 'debug, coroutine, string, table, io, os = nil error{}'")
    same("error() without them", "-e 'debug, coroutine, string, table = nil error()'")
  end)

  it("takes =expr on a REPL's first line, on a pipe", function()
    same("=expr", "-i", {stdin = "=1+1\n=  'two'\n", repl = true})
    same("a statement and an expression", "-i", {stdin = "x = 3\nx * 2\n", repl = true})
    same("=expr in a script is a syntax error", "-", {stdin = "=1"})
  end)

  it("stops a busy loop on SIGINT with 'interrupted!', closing <close> variables", function()
    local source = script([[
      local x <close> = setmetatable({}, {__close = function() print("closed") end})
      io.write("spinning\n") io.stdout:flush()
      while true do end
    ]])
    local results = {}
    for name, command in pairs {lua = LUA, pulsar = PULSAR} do
      local pidfile = support.tmpname(".pid")
      local wrapper = ("sh -c 'echo $$ > %s; exec \"$0\" \"$@\"'"):format(pidfile)
      local h = support.start(source, wrapper, command)
      assert.truthy(h.wait_output("spinning", 30), name .. " did not start: " .. h.err())
      local pid = tonumber(support.read_file(pidfile))
      h.kill("INT", pid)
      local code = h.wait(30)
      if not code then h.kill("KILL", pid) end
      results[name] = {code = code, out = h.out(), err = normalise(h.err())}
    end
    -- lua.c exits with 1 after an interrupt; the arbiter exits with the
    -- signal's number (docs/API.md §1), as it does for every stop signal.
    assert.are.same({code = 1, out = "spinning\nclosed\n",
                     err = "PROGRAM: interrupted!\nstack traceback: (frames)\n"}, results.lua)
    results.lua.code = 2
    assert.are.same(results.lua, results.pulsar)
  end)
end)
