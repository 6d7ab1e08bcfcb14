--- pulsar.log: log lines in the host's format (time, level, actor).
--
--   pulsar.log.info("started %d workers", n)   -- string.format when args follow
--   pulsar.log.warning(some_value)             -- tostring otherwise
local core = require "pulsar.core"

-- Taken at load: a script may remove the standard globals (string = nil).
local string, ipairs, select, tostring = string, ipairs, select, tostring

local log = {}

local actor_name = "arbiter"

--- Names the actor in this VM's lines (set when the actor starts).
function log.set_actor_name(name) actor_name = name end

local function emit(level, msg, ...)
  if not core.log_enabled(level) then return end
  if select("#", ...) > 0 then msg = string.format(msg, ...) else msg = tostring(msg) end
  core.log(level, actor_name, msg)
end

for _, level in ipairs {"debug", "info", "warning", "error", "critical"} do
  log[level] = function(msg, ...) return emit(level, msg, ...) end
end

log.set_level = core.set_log_level
log.enabled = core.log_enabled

return log
