--- pulsar.apps: the batteries, Applications that serve sockets (docs/API.md §2
-- "Applications"). Each is loaded when first used, from the module its name
-- says: pulsar.apps.SocketServer from pulsar.apps.socket,
-- pulsar.apps.HttpServer from pulsar.apps.http. A module returns a table
-- holding the constructor under that name.
local apps = {}

local function battery(name)
  local stem = type(name) == "string" and name:match("^(%u%l+)Server$")
  if not stem then return nil end
  local module = "pulsar.apps." .. stem:lower()
  -- in the executable (package.preload), or in PULSAR_LUA_DIR's sources
  if not package.preload[module] and not package.searchpath(module, package.path) then return nil end
  return require(module)[name]
end

return setmetatable(apps, {__index = function(t, name)
  local constructor = battery(name)
  if constructor then rawset(t, name, constructor) end
  return constructor
end})
