--- pulsar.attach: `pulsar-lua --attach ADDR`, a console inside a running
-- arbiter (docs/API.md §1).
--
-- This process is no arbiter: it connects to the arbiter's mailbox at ADDR
-- (a Unix socket, or a TCP mailbox after proving the cookie with
-- pulsar.auth), and runs the REPL front-end (pulsar.repl) on a remote
-- session whose eval, complete and cancel are requests to the arbiter
-- (pulsar.console on its side). Lines run in the arbiter's VM, with its
-- globals; values and errors come back as text and print here, while a
-- print() inside a line prints on the arbiter's stdout.
--
-- Detaching (end of input, Ctrl-D) closes the link and exits 0, leaving the
-- arbiter running. A connection that cannot be made or is refused, and an
-- arbiter that goes away, end this process with a message and status 1.
--
-- What the arbiter sends is decoded without functions: a console runs no
-- code it is sent, even from an arbiter it trusts.
local core = require "pulsar.core"
local future = require "pulsar.future"
local actor = require "pulsar.actor"

local M = {}

local CALL_TIMEOUT = 10    -- seconds for the handshake and the hello
local COMPLETE_TIMEOUT = 2 -- seconds a completion may hold the prompt

local function say(fmt, ...)
  io.stderr:write("pulsar-lua: ", fmt:format(...), "\n")
  io.stderr:flush()
end

---------------------------------------------------------------------------
-- Requests to the arbiter, as docs/API.md §3 frames them, with this console's
-- own ids.

local function new_client(link, sender)
  local client, pending, last_id = {}, {}, 0

  local function envelope(command, ack, ...)
    last_id = last_id + 1
    return last_id, core.encode {command = command, id = last_id, sender = sender,
                                 target = "arbiter", args = {...}, ack = ack}
  end

  --- Settles the call that a reply answers; anything else is ignored.
  function client.receive(payload)
    local ok, env = pcall(core.decode, payload, false)
    if not ok or type(env) ~= "table" or env.command ~= "callback" then return end
    local f = pending[env.ack]
    if not f then return end
    pending[env.ack] = nil
    if env.error ~= nil then f:set_exception(env.error) else f:set_result(env.result) end
  end

  --- A Future of the reply to `command`.
  function client.call(command, ...)
    local id, payload = envelope(command, true, ...)
    local f = future.Future(("the arbiter's reply to '%s'"):format(command))
    local sent, why = link:send(payload)
    if not sent then
      f:set_exception(why)
    else
      pending[id] = f
    end
    return f
  end

  --- Sends without waiting for a reply.
  function client.cast(command, ...)
    local _, payload = envelope(command, false, ...)
    return link:send(payload) == true
  end

  --- The reply at once, blocking, for a caller outside any task (a line
  -- editor's completion callback): the reply, or nil and why.
  function client.call_now(command, timeout, ...)
    local id, payload = envelope(command, true, ...)
    local sent, why = link:send(payload)
    if not sent then return nil, why end
    while true do
      local reply
      reply, why = link:wait_message(timeout)
      if not reply then return nil, why end
      local ok, env = pcall(core.decode, reply, false)
      if ok and type(env) == "table" and env.command == "callback" and env.ack == id then
        if env.error ~= nil then return nil, env.error end
        return env.result
      end
      client.receive(reply) -- the reply to another call
    end
  end

  return client
end

---------------------------------------------------------------------------
-- The remote session: what pulsar.repl drives (repl_session's interface).

local Remote = {}
Remote.__index = Remote

function Remote:eval(source)
  return self.client.call("pulsar:repl_eval", source):wait()
end

local function strings_only(list)
  local out = {}
  if type(list) ~= "table" then return out end
  for _, v in ipairs(list) do
    if type(v) == "string" then out[#out + 1] = v end
  end
  return out
end

--- Asks the arbiter; waits in a task, or blocks briefly outside one.
function Remote:complete(line)
  if future.current_task() and coroutine.isyieldable() then
    local f = self.client.call("pulsar:repl_complete", line)
    local ok, list = pcall(f.wait, f, COMPLETE_TIMEOUT)
    return strings_only(ok and list)
  end
  return strings_only(self.client.call_now("pulsar:repl_complete", COMPLETE_TIMEOUT, line))
end

--- Asks the arbiter to cancel the line it runs for us; the line's eval
-- then returns its error. True when the request left.
function Remote:cancel()
  return self.client.cast("pulsar:repl_cancel")
end

--- A remote session over `link`, a connection to an arbiter's mailbox that
-- is authenticated already (or Unix): it takes over the link's handler;
-- `on_lost(reason)` runs if the link closes. `sender` names this console in
-- its requests.
function M.session(link, sender, on_lost)
  local client = new_client(link, sender or "console-" .. core.random_id())
  link:set_handler(client.receive, function(reason)
    if on_lost then on_lost(reason) end
  end)
  return setmetatable({client = client}, Remote)
end

---------------------------------------------------------------------------
-- The console's life

local function is_tcp(address) return address:sub(1, 5) ~= "unix:" end

-- "cannot connect to X: why" says X twice once we prefix it.
local function connect_reason(err)
  return (tostring(err):gsub("^cannot connect to .-: ", ""))
end

local function banner(hello, address)
  local v = core.versions()
  io.write(("pulsar-lua %s (%s, libuv %s) attached to %s (%s, pid %s) at %s\n"):format(
    v.pulsar, v.lua, v.libuv, tostring(hello.name), tostring(hello.aid), tostring(hello.pid),
    address))
  io.write("Lines run in the arbiter; Ctrl-D detaches and leaves it running.\n")
  io.flush()
end

--- The body of `pulsar-lua --attach ADDR` (host.lua's main hands over when
-- cfg.attach is set). Returns 0, or 1 when it cannot even start.
function M.main(request)
  local cfg = core.config()
  local address = cfg.attach
  local console = actor.new {name = "console", kind = "console", cfg = cfg}
  console.state = "running"
  local link, detaching = nil, false
  console.role.close = function()
    detaching = true
    if link then link:close("detached") end
  end
  console.role.on_closed = function(a) core.exit_loop(a.exit_code) end
  core.on_signal(function(signum) console:stop(signum) end)

  local cookie
  if is_tcp(address) then
    local why
    cookie, why = core.load_cookie(cfg.cookie_file, false)
    if not cookie then
      say("cannot attach to %s: %s", address, why)
      return 1
    end
  end

  local function give_up(fmt, ...)
    say(fmt, ...)
    detaching = true
    if link then link:close("giving up") end
    core.exit_loop(1)
  end

  local function serve()
    if cookie then
      local ok, why = require("pulsar.auth").prove(link, cookie, CALL_TIMEOUT)
      if not ok then return give_up("cannot attach to %s: %s", address, why) end
    end
    local session = M.session(link, console.aid, function(reason)
      if not detaching then give_up("the arbiter at %s went away (%s)", address, reason) end
    end)
    local hello = session.client.call("pulsar:console_hello")
    local ok, why = pcall(hello.wait, hello, CALL_TIMEOUT)
    if not ok then return give_up("cannot attach to %s: %s", address, tostring(why)) end
    if request.stdin_is_tty then banner(hello:result(), address) end
    require("pulsar.repl").start(session)
  end

  core.connect(address, function(conn, err)
    if not conn then return give_up("cannot attach to %s: %s", address, connect_reason(err)) end
    if detaching then return conn:close("detached") end -- stopped while connecting
    link = conn
    future.async(serve):add_done_callback(function(f)
      if f:exception() ~= nil then
        give_up("console failed: %s", f:traceback() or tostring(f:exception()))
      end
    end)
  end)
  return 0
end

return M
