--- support: helpers for specs that run pulsar-lua as a user would, in a
-- process of its own, and look at its output and exit status.
--
-- PULSAR_LUA names the executable under test (scripts/test sets it for the
-- release and the sanitizer builds); waits poll with generous bounds, since
-- the machines that run the suite can freeze for seconds.
local M = {}

M.exe = os.getenv("PULSAR_LUA") or "build/pulsar-lua"

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", [['"'"']]) .. "'"
end
M.quote = shell_quote

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end
M.read_file = read_file

function M.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  return path
end

--- A fresh temporary path (removed at exit by the OS's tmp cleaning).
function M.tmpname(suffix)
  local name = os.tmpname()
  os.remove(name)
  return name .. (suffix or "")
end

--- A fresh private (0700) temporary directory.
function M.temp_dir()
  local dir = M.tmpname()
  assert(os.execute(("mkdir -m 700 %s"):format(shell_quote(dir))))
  return dir
end

--- Writes `source` to a temporary .lua file and returns its path.
function M.script(source)
  return M.write_file(M.tmpname(".lua"), source)
end

--- Runs pulsar-lua with `args` (a shell-ready string) and optional stdin
-- text; returns {code=, out=, err=}. `command`, a shell-ready command line,
-- runs instead of pulsar-lua (lua5.4, to compare; env VAR=... pulsar-lua).
function M.run(args, stdin, command)
  local out, err = M.tmpname(".out"), M.tmpname(".err")
  local input = ""
  if stdin then input = " < " .. shell_quote(M.write_file(M.tmpname(".in"), stdin)) end
  local cmd = ("%s %s%s > %s 2> %s"):format(command or shell_quote(M.exe), args, input,
                                             shell_quote(out), shell_quote(err))
  local _, _, code = os.execute(cmd)
  local result = {code = code, out = read_file(out) or "", err = read_file(err) or ""}
  os.remove(out); os.remove(err)
  return result
end

--- Polls `check()` until it returns a true value or `timeout` seconds pass;
-- returns that value (or nil).
-- The clock is read afresh (core.hrtime), not the loop's (pulsar.time):
-- after a blocking call (support.run, os.execute) the loop's is as old as
-- the call, and a deadline made from it would be spent before the first look.
function M.wait_for(check, timeout)
  local clock = require("pulsar.core").hrtime
  local deadline = clock() + (timeout or 10)
  repeat
    local v = check()
    if v then return v end
    pulsar.sleep(0.02)
  until clock() > deadline
  return check()
end

--- Starts pulsar-lua in the background. The handle reads its output so far
-- (`out()`, `err()`), sends signals (`kill(sig)`) and waits for its exit
-- status (`wait(timeout)`). `wrapper` is a command put before pulsar-lua
-- (such as valgrind); `command` runs instead of pulsar-lua, as in run.
function M.start(args, wrapper, command)
  local base = M.tmpname()
  local h = {outfile = base .. ".out", errfile = base .. ".err", statusfile = base .. ".status"}
  os.execute(("(%s %s %s > %s 2> %s; echo $? > %s) < /dev/null &"):format(
    wrapper or "", command or shell_quote(M.exe), args, shell_quote(h.outfile), shell_quote(h.errfile),
    shell_quote(h.statusfile)))
  function h.out() return read_file(h.outfile) or "" end
  function h.err() return read_file(h.errfile) or "" end
  function h.wait_output(pattern, timeout)
    return M.wait_for(function() return h.out():match(pattern) end, timeout)
  end
  function h.kill(sig, pid) os.execute(("kill -%s %d"):format(sig, pid)) end
  function h.wait(timeout)
    local status = M.wait_for(function()
      local s = read_file(h.statusfile)
      return s and s:match("%d+")
    end, timeout)
    return status and tonumber(status)
  end
  --- Waits for the exit (the timeout a few seconds beyond M.WAIT by default)
  -- and returns {code=, out=, err=}, as run does, removing the files.
  function h.result(timeout)
    local code = h.wait(timeout or M.WAIT + 5)
    local r = {code = code, out = h.out(), err = h.err()}
    os.remove(h.outfile); os.remove(h.errfile); os.remove(h.statusfile)
    return r
  end
  return h
end

--- The default bound (seconds) of the waits below: generous, for slow
-- machines and the sanitizer build.
M.WAIT = 30

--- Settings as NAME=VALUE arguments, each quoted for the shell, for the
-- server scripts that read their settings so from `arg`.
function M.setting_args(settings)
  local args = {}
  for name, value in pairs(settings or {}) do
    args[#args + 1] = shell_quote(name .. "=" .. tostring(value))
  end
  return table.concat(args, " ")
end

--- Starts a pulsar-lua server in the background (`args`: its script and
-- arguments, shell-ready) and waits until its stdout shows `opts.ready`
-- (default "serving (%S+)\n"), whose capture is the address it serves on.
-- The handle is start's, plus address, url ("http://" .. address), pid
-- (the arbiter's, from --pid-file), log() (its stderr, where it logs) and
-- stop() (SIGTERM, then its exit status). Raises, with its stderr, when
-- it does not start within opts.timeout (default M.WAIT) seconds.
function M.start_server(args, opts)
  opts = opts or {}
  local timeout = opts.timeout or M.WAIT
  local pid_file = M.tmpname(".pid")
  local h = M.start("--pid-file " .. shell_quote(pid_file) .. " " .. args)
  h.address = h.wait_output(opts.ready or "serving (%S+)\n", timeout)
  assert(h.address, "the server did not start: " .. h.err())
  h.url = "http://" .. h.address
  h.pid = tonumber(read_file(pid_file))
  h.log = h.err
  function h.stop()
    h.kill("TERM", h.pid)
    return h.wait(timeout)
  end
  return h
end

--- Runs curl (-sS --max-time, then `args`, shell-ready) in the background,
-- so that the loop goes on meanwhile (the server under test may be this
-- process); returns {code=, out=, err=}.
function M.curl(args, timeout)
  timeout = timeout or M.WAIT
  return M.start(args, nil, "curl -sS --max-time " .. timeout).result(timeout + 5)
end

--- curl -i `url` (with `args` before it): the response as {status=,
-- headers = {lowercase name = value}, body=}; raises if curl failed.
function M.curl_response(url, args, timeout)
  local r = M.curl("-i " .. (args or "") .. " " .. shell_quote(url), timeout)
  assert(r.code == 0, "curl failed: " .. r.err)
  local head, body = r.out:match("^(.-\r\n)\r\n(.*)$")
  local res = {status = tonumber(head:match("^HTTP/1%.1 (%d%d%d)")), headers = {}, body = body}
  for name, value in head:gmatch("\r\n([^:\r\n]+): ([^\r\n]*)") do res.headers[name:lower()] = value end
  return res
end

--- Everything a stream (pulsar.open_connection's) reads up to its end.
function M.read_all(stream, timeout)
  local parts = {}
  while true do
    local data = stream:read():wait(timeout or M.WAIT)
    if not data then return table.concat(parts) end
    parts[#parts + 1] = data
  end
end

--- Debian's python, which has python3-websockets: the real clients'.
M.PYTHON = "/usr/bin/python3"

--- tests/tools/browser.py (headless Chromium) with `args`, each step
-- bounded by M.WAIT; {code=, out=, err=}. Code 2: Chromium cannot start
-- here (err says why), and a spec's browser case is pending.
function M.browser(args)
  return M.run(args .. " --timeout " .. M.WAIT, nil, M.PYTHON .. " tests/tools/browser.py")
end

--- The JSON values of a tool's output, one per line.
function M.json_lines(text)
  local values = {}
  for line in text:gmatch("[^\n]+") do values[#values + 1] = require("pulsar.json").decode(line) end
  return values
end

--- Whether a process with this pid exists.
function M.alive(pid)
  return os.execute(("kill -0 %d 2>/dev/null"):format(pid)) == true
end

return M
