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
--
-- Handshake slots: at most `max_handshakes` (a setting, default 64) are in
-- progress at once, so a flood of silent connections holds a bounded number
-- of sockets. No peer address (the IP, whatever the port) holds more than
-- its share, a quarter of them (at least 1): a newcomer from an address at
-- its share closes that address's oldest handshake; a newcomer finding every
-- slot taken closes the oldest handshake of the address holding the most,
-- if that is more than the newcomer's own address holds, and is turned away
-- otherwise. Why the oldest: a real console answers the challenge within one
-- round trip, so the handshake that has been silent longest is the one
-- least likely to be a console, and a console's handshake, the newest, is
-- closed only if its address opens a whole share of connections during
-- that round trip. So a console gets in during a flood from another
-- address, and from its own (127.0.0.1 attacking, 127.0.0.1 attaching),
-- which no per-address limit alone could tell apart. A handshake closed for
-- this, and a newcomer turned away, are told why before the link closes:
--
--   arbiter -> peer     {refused = "busy: too many handshakes in progress"}
--
-- and pulsar-lua --attach prints that reason and exits 1.
--
-- The refusal log: at most one line per kind of refusal (the reason up to
-- its first ":") per REFUSAL_LOG_INTERVAL seconds; what is held back is
-- counted and told in one line once the interval is over:
--   mailbox: refused 5123 more connections in the last 5 s (busy: 4800, wrong cookie: 323)
local core = require "pulsar.core"
local future = require "pulsar.future"
local log = require "pulsar.log"

local M = {}

local NONCE = 32                   -- bytes of each challenge
local HANDSHAKE_MAX = 1024         -- the largest frame before the proof
local MESSAGE_MAX = 64 * 1024 * 1024 -- the mailbox's usual limit (host/codec/frame.h)
local REFUSAL_MAX = 200            -- bytes of a refusal's reason a peer prints
M.REFUSAL_DELAY = 1                -- seconds before a refused link closes
M.BUSY_DELAY = 0.1                 -- seconds for a "busy" reason to leave
M.HANDSHAKE_TIMEOUT = 5            -- seconds for a peer to prove itself
M.MAX_HANDSHAKES = 64              -- handshakes in progress at once
M.REFUSAL_LOG_INTERVAL = 5         -- seconds between two lines of one kind
M.BUSY = "busy: too many handshakes in progress"

local function client_proof(cookie, ns, nc) return core.hmac_sha256(cookie, "pulsar-client" .. ns .. nc) end
local function server_proof(cookie, ns, nc) return core.hmac_sha256(cookie, "pulsar-server" .. nc .. ns) end

local function is_nonce(v) return type(v) == "string" and #v == NONCE end

local function decode(payload)
  local ok, msg = pcall(core.decode, payload, false)
  if ok and type(msg) == "table" then return msg end
end

---------------------------------------------------------------------------
-- The refusal log

local last_logged = {}   -- kind -> when its last line was written
local held_back = {}     -- kind -> refusals not logged since the last summary
local held_total, summary_timer = 0, nil

local function log_summary()
  summary_timer = nil
  if held_total == 0 then return end
  local kinds = {}
  for kind in pairs(held_back) do kinds[#kinds + 1] = kind end
  table.sort(kinds, function(a, b)
    if held_back[a] ~= held_back[b] then return held_back[a] > held_back[b] end
    return a < b
  end)
  for i, kind in ipairs(kinds) do kinds[i] = ("%s: %d"):format(kind, held_back[kind]) end
  log.warning("mailbox: refused %d more connections in the last %g s (%s)", held_total,
              M.REFUSAL_LOG_INTERVAL, table.concat(kinds, ", "))
  held_back, held_total = {}, 0
end

local function log_refusal(peer, reason)
  local kind, now = reason:match("^[^:]*"), core.hrtime()
  if not last_logged[kind] or now - last_logged[kind] >= M.REFUSAL_LOG_INTERVAL then
    last_logged[kind] = now
    log.warning("mailbox: refused %s: %s", peer, reason)
    return
  end
  held_back[kind] = (held_back[kind] or 0) + 1
  held_total = held_total + 1
  if not summary_timer then
    summary_timer = core.timer(M.REFUSAL_LOG_INTERVAL, log_summary)
    summary_timer:unref()
  end
end

---------------------------------------------------------------------------
-- Handshake slots

local in_progress = 0
local by_address = {} -- peer IP -> its handshakes in progress, oldest first

-- "127.0.0.1:5555" -> "127.0.0.1", "[::1]:5555" -> "[::1]"
local function address_of(peer) return peer:match("^(.*):%d+$") or peer end

local function share_of(limit) return math.max(1, limit // 4) end

local function take_slot(hs)
  local list = by_address[hs.address] or {}
  by_address[hs.address] = list
  list[#list + 1] = hs
  in_progress = in_progress + 1
end

local function free_slot(hs)
  local list = by_address[hs.address]
  for i, other in ipairs(list) do
    if other == hs then table.remove(list, i); break end
  end
  if #list == 0 then by_address[hs.address] = nil end
  in_progress = in_progress - 1
end

local function held_by(address) return by_address[address] and #by_address[address] or 0 end

local function biggest_holder()
  local best, most = nil, 0
  for address, list in pairs(by_address) do
    if #list > most then best, most = address, #list end
  end
  return best, most
end

-- Tells a peer it is turned away for want of a slot, then closes it.
local function send_busy(link, peer, why)
  link:send(core.encode {refused = M.BUSY})
  log_refusal(peer, ("%s (%s)"):format(M.BUSY, why))
  link:close(M.BUSY, M.BUSY_DELAY)
end

-- Frees slots for a newcomer from `address` by the rules at the top;
-- false when it must be turned away.
local function make_room(address, limit)
  local share = share_of(limit)
  while held_by(address) >= share do
    by_address[address][1].evict(("%s holds its share, %d of %d"):format(address, share, limit))
  end
  while in_progress >= limit do
    local holder, most = biggest_holder()
    if most <= held_by(address) then return false end
    by_address[holder][1].evict(("%s holds the most, %d of %d"):format(holder, most, limit))
  end
  return true
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
-- normal handler. `timeout` (seconds) bounds the wait for the proof;
-- `limit` (MAX_HANDSHAKES) is the number of handshake slots, shared out as
-- the head of this file says.
function M.admit(link, cookie, admitted, timeout, limit)
  timeout, limit = timeout or M.HANDSHAKE_TIMEOUT, limit or M.MAX_HANDSHAKES
  local peer = link:peer()
  local hs = {address = address_of(peer)}
  if not make_room(hs.address, limit) then
    return send_busy(link, peer, ("all %d slots taken, none by an address holding more than %s"):format(
      limit, hs.address))
  end
  take_slot(hs)
  local ns = core.random_bytes(NONCE)
  local settled, timer = false, nil
  local function settle()
    settled = true
    free_slot(hs)
    if timer then timer:cancel() end
  end
  local function refuse(reason)
    if settled then return end
    settle()
    log_refusal(peer, reason)
    link:close(reason, M.REFUSAL_DELAY)
  end
  function hs.evict(why)
    settle()
    send_busy(link, peer, "closed as the oldest silent handshake: " .. why)
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
    log_refusal(peer, reason)
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

-- The reason an arbiter gave for turning us away, made safe to print.
local function refusal(msg)
  if type(msg.refused) ~= "string" then return nil end
  return (msg.refused:sub(1, REFUSAL_MAX):gsub("[%c\128-\255]", "?"))
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
  if hello and refusal(hello) then return nil, refusal(hello) end
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
  if refusal(answer) then return nil, refusal(answer) end
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
