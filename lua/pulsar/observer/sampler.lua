--- pulsar.observer.sampler: what the observer shows, gathered in the
-- arbiter once a second (docs/DESIGN.md, "The observer").
--
-- At each round it asks every running actor for its figures and its
-- process's new log lines (the `pulsar:observe` command, answered by
-- pulsar.commands), waits at most POLL_TIMEOUT for the answers, and makes
--   * a snapshot: every actor in tree order (the arbiter, each monitor
--     followed by its workers, then the other actors), from the arbiter's
--     records and what each answered; one that did not answer keeps its
--     last figures, marked stale;
--   * a point of the history: messages/s, Lua memory, restarts so far and
--     HTTP requests/s, over the whole system; HISTORY points are kept (five
--     minutes at one a second);
--   * the new log lines: the arbiter's process's (its own, its threads' and
--     monitors'), read here from core.log_tail, and each process actor's,
--     from its answer; numbered again in one sequence of the observer's.
-- Then every subscriber (a page's WebSocket) is called with them.
--
-- The observer's own polls are messages too: each round counts one
-- request received per actor that answered, and one sent per actor by the
-- arbiter; they are taken out of messages/s, which shows the system's own
-- traffic, heartbeats included.
--
-- The JSON shapes of snapshot, point and line are the page's contract:
-- lua/pulsar/observer/init.lua's head gives them.
local core = require "pulsar.core"
local future = require "pulsar.future"
local mailbox = require "pulsar.mailbox"
local log = require "pulsar.log"

local M = {}

local HISTORY = 300      -- points, one a second: five minutes
local LOG_KEEP = 2000    -- log lines kept for a page that opens
local POLL_TIMEOUT = 2   -- seconds a round waits for the answers

local state

local function reset()
  state = {
    snapshot = nil, history = {}, logs = {}, log_seq = 0,
    subscribers = {}, entries = {}, -- aid -> the last entry of a running actor
    log_since = {},   -- aid of a process actor -> the seq of its last line we have
    outstanding = {}, -- aid -> the Future of its last request
    polls = {},       -- aid -> requests sent it since the last point
    asked = 0,        -- requests the arbiter sent since the last point
    own_log_since = 0,
    last_round = nil, -- {time=, totals = aid -> {messages=, http=}}
    wall_base = os.time() - core.now(),
  }
end
reset()

local function wall_time() return state.wall_base + core.now() end

---------------------------------------------------------------------------
-- Entries

-- An actor's entry of the snapshot, from the arbiter's record `rec` and
-- its answer `summary` (nil: it did not answer).
local function entry_of(rec, summary, arbiter_aid, application)
  local a = summary and summary.actor or {}
  return {
    aid = rec.aid, name = rec.name, unique_name = rec.unique_name, kind = rec.kind,
    parent = rec.manager or arbiter_aid, application = application,
    pid = a.pid or rec.pid, thread_id = rec.kind ~= "process" and a.thread_id and tostring(a.thread_id) or nil,
    state = a.state or rec.state, uptime = a.uptime, memory_lua = a.memory_lua,
    memory_limit = a.memory_limit, mailbox = a.mailbox,
    restarts = summary and summary.restarts, http = summary and summary.http,
  }
end

local function own_entry(arbiter)
  local a = arbiter:info().actor
  return {aid = a.aid, name = a.name, kind = "arbiter", pid = a.pid, thread_id = tostring(a.thread_id),
          state = a.state, uptime = a.uptime, memory_lua = a.memory_lua,
          memory_limit = a.memory_limit, mailbox = a.mailbox, node = a.node}
end

-- The last entry of an actor that did not answer, marked stale; one never
-- heard from is made of its record alone.
local function stale_entry(rec, arbiter_aid, application)
  local last = state.entries[rec.aid]
  if not last then return entry_of(rec, nil, arbiter_aid, application) end
  local entry = {}
  for k, v in pairs(last) do entry[k] = v end
  entry.state, entry.stale = rec.state == "running" and last.state or rec.state, true
  return entry
end

-- Tree order: the arbiter; each monitor (oldest first) and its workers,
-- by unique name; then every other actor, oldest first.
local function tree_order(own, entries)
  local workers, monitors, others = {}, {}, {}
  for _, e in ipairs(entries) do
    if e.kind == "monitor" then monitors[#monitors + 1] = e end
  end
  local is_monitor = {}
  for _, m in ipairs(monitors) do is_monitor[m.aid], workers[m.aid] = true, {} end
  for _, e in ipairs(entries) do
    if e.kind ~= "monitor" then
      if is_monitor[e.parent] then table.insert(workers[e.parent], e) else others[#others + 1] = e end
    end
  end
  local list = {own}
  for _, m in ipairs(monitors) do
    list[#list + 1] = m
    local pool = workers[m.aid]
    table.sort(pool, function(x, y) return (x.unique_name or x.aid) < (y.unique_name or y.aid) end)
    for _, w in ipairs(pool) do list[#list + 1] = w end
  end
  for _, e in ipairs(others) do list[#list + 1] = e end
  return list
end

---------------------------------------------------------------------------
-- Log lines

local function add_lines(lines, pid, fresh)
  for _, line in ipairs(lines or {}) do
    fresh[#fresh + 1] = {time = line.time, level = line.level, actor = line.actor, pid = pid,
                         text = line.text}
  end
end

-- Numbers the round's new lines in time order and keeps the last LOG_KEEP.
local function keep_lines(fresh)
  table.sort(fresh, function(x, y) return x.time < y.time end)
  local logs = state.logs
  for _, line in ipairs(fresh) do
    state.log_seq = state.log_seq + 1
    line.seq = state.log_seq
    logs[#logs + 1] = line
  end
  local extra = #logs - LOG_KEEP
  if extra > 0 then
    table.move(logs, extra + 1, #logs, 1)
    for i = LOG_KEEP + 1, LOG_KEEP + extra do logs[i] = nil end
  end
end

local function own_lines(fresh)
  if not core.log_tail then return end -- a host without the log's tail
  local lines = core.log_tail(state.own_log_since)
  for _, line in ipairs(lines) do state.own_log_since = math.max(state.own_log_since, line.seq) end
  add_lines(lines, core.pid(), fresh)
end

local function process_lines(rec, summary, fresh)
  local lines = summary.logs
  if type(lines) ~= "table" then return end
  for _, line in ipairs(lines) do
    state.log_since[rec.aid] = math.max(state.log_since[rec.aid] or 0, line.seq or 0)
  end
  add_lines(lines, summary.actor and summary.actor.pid or rec.pid, fresh)
end

--- The kept lines after observer seq `since`, oldest first.
function M.logs_since(since)
  local out = {}
  for _, line in ipairs(state.logs) do
    if line.seq > since then out[#out + 1] = line end
  end
  return out
end

---------------------------------------------------------------------------
-- The history

local function mailbox_total(e)
  local m = e.mailbox
  return m and (m.sent or 0) + (m.received or 0) or 0
end

-- A point from this round's entries and the last point's totals; the
-- observer's own polls are taken out (see the head of this file): the
-- requests the arbiter sent since the last point, and those each actor
-- received (rounds asked for by a page or /api/actors in between too).
local function make_point(list, now, arbiter_aid)
  local totals, memory, restarts, messages, http = {}, 0, 0, 0, 0
  local last = state.last_round
  for _, e in ipairs(list) do
    memory = memory + (e.memory_lua or 0)
    restarts = restarts + (e.restarts or 0)
    if not e.stale then
      local t = {messages = mailbox_total(e), http = e.http and e.http.requests or 0}
      totals[e.aid] = t
      local before = last and last.totals[e.aid]
      if before then
        local polls = e.aid == arbiter_aid and state.asked or state.polls[e.aid] or 0
        messages = messages + math.max(0, t.messages - before.messages - polls)
        http = http + math.max(0, t.http - before.http)
      end
    end
  end
  local dt = last and math.max(now - last.time, 0.001) or 1
  state.last_round = {time = now, totals = totals}
  state.polls, state.asked = {}, 0
  return {t = wall_time(), messages = last and messages / dt or 0, memory = memory,
          restarts = restarts, http = last and http / dt or 0}
end

local function keep_point(point)
  local history = state.history
  history[#history + 1] = point
  if #history > HISTORY then table.remove(history, 1) end
end

---------------------------------------------------------------------------
-- A round

-- Asks every running actor; returns rec -> summary for those that answered.
-- One whose last request is still unanswered (a thread busy in Lua) is not
-- asked again: requests do not pile up behind it.
local function poll(recs)
  local asked, answers, outstanding = {}, {}, state.outstanding
  for _, rec in ipairs(recs) do
    local last = outstanding[rec.aid]
    if (rec.state == "running" or rec.state == "stopping") and not (last and not last:done()) then
      asked[rec] = mailbox.send(rec.aid, "pulsar:observe", state.log_since[rec.aid] or 0)
      outstanding[rec.aid] = asked[rec]
      state.polls[rec.aid], state.asked = (state.polls[rec.aid] or 0) + 1, state.asked + 1
    end
  end
  local n = 0
  for _ in pairs(asked) do n = n + 1 end
  local deadline = core.now() + POLL_TIMEOUT
  for rec, f in pairs(asked) do
    local ok, summary = pcall(f.wait, f, math.max(0, deadline - core.now()))
    if ok and type(summary) == "table" then answers[rec] = summary end
  end
  return answers, n
end

-- A round; `timed` (the timer's, once a second) also makes the history's
-- point: the others (a page that connects, /api/actors) only refresh the
-- snapshot, so that the points stay a second apart.
local function round(arbiter, timed)
  local recs = require("pulsar.arbiter").actors()
  local answers = poll(recs)
  local fresh = {}
  own_lines(fresh)
  local apps = {}
  for _, rec in ipairs(recs) do
    if rec.kind == "monitor" then apps[rec.aid] = rec.name end
  end
  local entries, live = {}, {}
  for _, rec in ipairs(recs) do
    local application = apps[rec.aid] or apps[rec.manager or ""]
    local summary = answers[rec]
    local e
    if summary then
      e = entry_of(rec, summary, arbiter.aid, application)
      state.entries[rec.aid] = e
      process_lines(rec, summary, fresh)
    else
      e = stale_entry(rec, arbiter.aid, application)
    end
    entries[#entries + 1], live[rec.aid] = e, true
  end
  for aid in pairs(state.entries) do
    if not live[aid] then state.entries[aid], state.log_since[aid] = nil, nil end
  end
  for aid in pairs(state.outstanding) do
    if not live[aid] then state.outstanding[aid] = nil end
  end
  local list = tree_order(own_entry(arbiter), entries)
  local point
  if timed then
    point = make_point(list, core.now(), arbiter.aid)
    keep_point(point)
  end
  keep_lines(fresh)
  state.snapshot = {time = wall_time(), pid = core.pid(), node = list[1].node, actors = list}
  return state.snapshot, point
end

local function tell_subscribers(snapshot, point)
  for sub in pairs(state.subscribers) do
    local ok, err = pcall(sub, snapshot, point)
    if not ok then log.warning("observer: a subscriber failed: %s", tostring(err)) end
  end
end

--- One round now (a task); a Future of the snapshot. Rounds never
-- overlap: one asked for while another runs gets that one's. Only a
-- `timed` round (the timer's) makes a point and tells the subscribers.
function M.refresh(arbiter, timed)
  if state.running then return state.running end
  local task = future.async(function()
    local snapshot, point = round(arbiter, timed)
    if timed then tell_subscribers(snapshot, point) end
    return snapshot
  end)
  state.running = task
  task:add_done_callback(function() state.running = nil end)
  return task
end

--- A Future of a snapshot made after this call: a round that was already
-- running may have asked before something the caller just did.
function M.fresh(arbiter)
  local running = state.running
  if not running then return M.refresh(arbiter) end
  return future.async(function()
    pcall(running.wait, running, POLL_TIMEOUT * 2)
    return M.refresh(arbiter):wait(POLL_TIMEOUT * 2)
  end)
end

--- Starts the rounds, every `interval` seconds (default 1). The timer
-- does not keep the arbiter alive.
function M.start(arbiter, interval)
  if state.timer then return end
  interval = interval or 1
  state.timer = core.timer(interval, function()
    if arbiter.state == "running" then M.refresh(arbiter, true) end
  end, interval)
  state.timer:unref()
  M.refresh(arbiter, true)
end

function M.stop()
  if state.timer then state.timer:cancel() end
  reset()
end

--- The last snapshot (nil before the first round ends) and the history.
function M.snapshot() return state.snapshot end
function M.history() return state.history end
function M.last_seq() return state.log_seq end

--- Calls fn(snapshot, point) after every round until unsubscribed.
function M.subscribe(fn) state.subscribers[fn] = true end
function M.unsubscribe(fn) state.subscribers[fn] = nil end

return M
