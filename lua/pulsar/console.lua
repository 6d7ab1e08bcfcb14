--- pulsar.console: the arbiter's side of attached consoles
-- (`pulsar-lua --attach ADDR`, whose side is pulsar.attach).
--
-- A console is a link to the arbiter's mailbox that is not an actor: over
-- the Unix mailbox, or over TCP once pulsar.auth has admitted it. It sends
-- requests to target "arbiter" like any peer, and mailbox.receive answers
-- on the same link. These commands evaluate its lines in the arbiter's VM,
-- with one REPL session (pulsar.repl_session, on the arbiter's globals) per
-- link, made when first needed and dropped, its evaluation cancelled, when
-- the link closes:
--
--   pulsar:console_hello         -> {aid=, name=, pid=, version=, address=, tcp_address=}
--   pulsar:repl_eval, source     -> {status = "ok" | "error" | "incomplete", text = ...}
--   pulsar:repl_complete, line   -> {candidates...}
--   pulsar:repl_cancel           -> whether an evaluation was cancelled
local core = require "pulsar.core"
local mailbox = require "pulsar.mailbox"

local M = {}

local sessions = {} -- link -> its repl session

local function session_of(request)
  local link = request.link
  if not link then error("the REPL commands are for attached consoles", 0) end
  local session = sessions[link]
  if not session then
    session = require("pulsar.repl_session").new(_G)
    sessions[link] = session
  end
  return session
end

local function check_string(value, what)
  if type(value) ~= "string" then error(what .. " must be a string", 0) end
  return value
end

--- Registers the console commands in the arbiter's mailbox.
function M.install(arbiter)
  mailbox.command("pulsar:console_hello", function()
    return {aid = arbiter.aid, name = arbiter.name, pid = core.pid(),
            version = core.versions().pulsar, address = arbiter.address,
            tcp_address = arbiter.tcp_address}
  end)
  mailbox.command("pulsar:repl_eval", function(request, source)
    return session_of(request):eval(check_string(source, "repl_eval: the source"))
  end)
  mailbox.command("pulsar:repl_complete", function(request, line)
    return session_of(request):complete(check_string(line, "repl_complete: the line"))
  end)
  mailbox.command("pulsar:repl_cancel", function(request)
    local session = request.link and sessions[request.link]
    return session ~= nil and session:cancel()
  end)
end

--- A link to the arbiter closed: its session, if it had one, goes.
function M.link_closed(link)
  local session = sessions[link]
  if not session then return end
  sessions[link] = nil
  session:cancel()
end

return M
