--- pulsar.host: what the C host calls in a new VM (host.c, spawn.c).
--
-- main(request) and loop_ended() are the arbiter's (pulsar.main);
-- actor_main(request) is the body of every other actor (pulsar.worker). A
-- VM loads only the half it runs: a thread actor never compiles the
-- arbiter's command line, script runner and REPL start.
local require = require -- a script may replace the global before loop_ended

local M = {}

function M.main(request) return require("pulsar.main").main(request) end

function M.actor_main(request) return require("pulsar.worker").main(request) end

function M.loop_ended() return require("pulsar.main").loop_ended() end

return M
