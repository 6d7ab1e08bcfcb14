--- pulsar.auth: the handshake that admits a peer to the arbiter's TCP
-- mailbox (docs/API.md §3: a TCP mailbox admits a connection only after it
-- proves it knows the arbiter's cookie).
--
-- A mutual challenge-response over HMAC-SHA256 (host/transport/auth.c), carried in
-- the frames and MessagePack of every other message:
--
--   arbiter -> peer     {challenge = Ns}
--   peer    -> arbiter  {proof = HMAC(cookie, "pulsar-client" .. Ns .. Nc), challenge = Nc}
--   arbiter -> peer     {proof = HMAC(cookie, "pulsar-server" .. Nc .. Ns)}
--
-- Ns and Nc are 32 fresh random bytes, so a proof is good for one
-- connection only, and the two labels keep either side's proof from being
-- played back as the other's. The arbiter checks the peer's proof in
-- constant time; only then does the link get its normal handler (the
-- mailbox), so nothing the peer sends before is ever run. Until then its
-- frames may hold HANDSHAKE_MAX bytes and are decoded without functions.
-- The peer checks the arbiter's proof before sending anything else, so a
-- console never hands its lines to an impostor.
--
-- Anything else before the proof (garbage, a bad frame, a wrong or missing
-- proof, silence past `handshake_timeout` seconds, a setting, default 5)
-- closes the link after REFUSAL_DELAY with a warning naming the peer and the
-- reason ("mailbox: refused 127.0.0.1:5555: wrong cookie"). The peer is told
-- nothing and waits out the delay, so that a guesser learns each answer
-- slowly; the cookie's 256 bits do the rest.
local core = require "pulsar.core"
local future = require "pulsar.future"
local log = require "pulsar.log"

local M = {}

local NONCE = 32                   -- bytes of each challenge
local HANDSHAKE_MAX = 1024         -- the largest frame before the proof
local MESSAGE_MAX = 64 * 1024 * 1024 -- the mailbox's usual limit (host/codec/frame.h)
M.REFUSAL_DELAY = 1                -- seconds before a refused link closes
M.HANDSHAKE_TIMEOUT = 5            -- seconds for a peer to prove itself
M.MAX_HANDSHAKES = 64              -- handshakes in progress at once
local in_progress = 0

local function client_proof(cookie, ns, nc) return core.hmac_sha256(cookie, "pulsar-client" .. ns .. nc) end
local function server_proof(cookie, ns, nc) return core.hmac_sha256(cookie, "pulsar-server" .. nc .. ns) end

local function is_nonce(v) return type(v) == "string" and #v == NONCE end

local function decode(payload)
  local ok, msg = pcall(core.decode, payload, false)
  if ok and type(msg) == "table" then return msg end
end

---------------------------------------------------------------------------
-- The arbiter's side

-- What is wrong with the peer's answer to challenge `ns`, or nil and the
-- peer's own challenge when its proof is good.
local function check_answer(payload, cookie, ns)
  local msg = decode(payload)
  if not msg then return "not a handshake message" end
  if msg.proof == nil then return "no proof" end
  if type(msg.proof) ~= "string" or not is_nonce(msg.challenge) then return "malformed proof" end
  if not core.equal_secrets(msg.proof, client_proof(cookie, ns, msg.challenge)) then
    return "wrong cookie"
  end
  return nil, msg.challenge
end

--- Runs the handshake on a link just accepted on the TCP mailbox: sends the
-- challenge, and once the peer has proved it knows `cookie`, answers with
-- the arbiter's proof and calls `admitted(link)`, which gives the link its
-- normal handler. `timeout` (seconds) bounds the wait for the proof. Past
-- `limit` handshakes in progress (MAX_HANDSHAKES), a new link is closed at
-- once: a flood of silent connections holds at most that many sockets.
function M.admit(link, cookie, admitted, timeout, limit)
  timeout = timeout or M.HANDSHAKE_TIMEOUT
  local peer = link:peer()
  if in_progress >= (limit or M.MAX_HANDSHAKES) then
    log.warning("mailbox: refused %s: %d handshakes already in progress", peer, in_progress)
    link:close("too many handshakes in progress")
    return
  end
  in_progress = in_progress + 1
  local ns = core.random_bytes(NONCE)
  local settled, timer = false, nil
  local function settle()
    settled = true
    in_progress = in_progress - 1
    if timer then timer:cancel() end
  end
  local function refuse(reason)
    if settled then return end
    settle()
    log.warning("mailbox: refused %s: %s", peer, reason)
    link:close(reason, M.REFUSAL_DELAY)
  end
  link:set_max_message(HANDSHAKE_MAX)
  link:set_linger(M.REFUSAL_DELAY) -- a bad frame closes late too
  link:set_handler(function(payload)
    if settled then return end
    local wrong, nc = check_answer(payload, cookie, ns)
    if wrong then return refuse(wrong) end
    settle()
    link:set_linger(0)
    link:set_max_message(MESSAGE_MAX)
    link:send(core.encode {proof = server_proof(cookie, ns, nc)})
    admitted(link)
  end, function(reason)
    -- Closed before any proof: by the peer, or for a bad frame (the socket
    -- itself lingers).
    if settled then return end
    settle()
    log.warning("mailbox: refused %s: %s", peer, reason)
  end)
  timer = core.timer(timeout, function() refuse(("no proof within %g s"):format(timeout)) end)
  timer:unref() -- a handshake alone does not keep the arbiter alive
  link:send(core.encode {challenge = ns})
end

---------------------------------------------------------------------------
-- The peer's side

-- The link's messages one at a time, inside a task: next() gives the next
-- decoded table, or nil and why none came within `timeout`.
local function reader(link, timeout)
  local inbox, closed, waiting = {}, nil, nil
  local function wake()
    if waiting and not waiting:done() then waiting:set_result(true) end
  end
  link:set_handler(function(payload) inbox[#inbox + 1] = payload; wake() end,
                   function(reason) closed = reason; wake() end)
  return function()
    if #inbox == 0 and not closed then
      waiting = future.Future("the arbiter's part of the handshake")
      local ok = pcall(waiting.wait, waiting, timeout)
      waiting = nil
      if not ok then return nil, ("no answer within %g s"):format(timeout) end
    end
    if #inbox == 0 then return nil, "closed", closed end
    local msg = decode(table.remove(inbox, 1))
    if not msg then return nil, "the arbiter's handshake message is malformed" end
    return msg
  end
end

--- Inside a task, on a link just connected to a TCP mailbox: proves that
-- this side knows `cookie` and checks that the arbiter does too. Returns
-- true (the link then has no handler: the caller sets its own), or nil and
-- a message for the user.
function M.prove(link, cookie, timeout)
  timeout = timeout or M.HANDSHAKE_TIMEOUT
  link:set_max_message(HANDSHAKE_MAX)
  local next_message = reader(link, timeout)
  local hello, why = next_message()
  if not (hello and is_nonce(hello.challenge)) then
    return nil, ("no challenge from it (%s): is it a pulsar-lua TCP mailbox?"):format(
      why == "closed" and "it closed the connection" or why or "malformed")
  end
  local nc = core.random_bytes(NONCE)
  link:send(core.encode {proof = client_proof(cookie, hello.challenge, nc), challenge = nc})
  local answer
  answer, why = next_message()
  if not answer then
    if why == "closed" then return nil, "refused: the cookie is not the arbiter's" end
    return nil, why
  end
  if type(answer.proof) ~= "string"
      or not core.equal_secrets(answer.proof, server_proof(cookie, hello.challenge, nc)) then
    link:close("the arbiter's proof is wrong")
    return nil, "the arbiter did not prove that it knows the cookie"
  end
  link:set_handler(nil, nil)
  link:set_max_message(MESSAGE_MAX)
  return true
end

return M
