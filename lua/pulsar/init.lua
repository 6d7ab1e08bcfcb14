--- pulsar: the module every actor's VM sees as `require "pulsar"` (API.md §2).
local core = require "pulsar.core"
local future = require "pulsar.future"
local actor = require "pulsar.actor"

local pulsar = {
  VERSION = core.versions().pulsar,
  versions = core.versions(),
  cfg = core.config(),
  log = require "pulsar.log",

  Future = future.Future,
  is_future = future.is_future,
  async = future.async,
  gather = future.gather,
  sleep = future.sleep,
  call_later = future.call_later,
  call_soon = future.call_soon,
  time = core.now,
}

--- The Actor of the current VM.
pulsar.get_actor = actor.current

--- The Arbiter, in the arbiter's VM; nil elsewhere.
function pulsar.arbiter()
  local a = actor.current()
  if a and a.kind == "arbiter" then return a end
  return nil
end

return pulsar
