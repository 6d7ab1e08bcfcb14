--- pulsar.apps: the batteries, Applications that serve sockets (docs/API.md §2
-- "Applications"). Each is loaded when first used, from the module its name
-- says: pulsar.apps.SocketServer from pulsar.apps.socket,
-- pulsar.apps.HttpServer from pulsar.apps.http. A module returns a table
-- holding the constructor under that name. A name in lower case is a module
-- of helpers, returned whole: pulsar.apps.rpc is require "pulsar.apps.rpc".
local apps = {}

local function exists(module) -- in the executable, or in PULSAR_LUA_DIR's sources
  return package.preload[module] or package.searchpath(module, package.path)
end

local function battery(name)
  if type(name) ~= "string" then return nil end
  if name:find("^%l+$") then -- a module of helpers: pulsar.apps.rpc
    local module = "pulsar.apps." .. name
    return exists(module) and require(module) or nil
  end
  local stem = name:match("^(%u%l+)Server$")
  if not stem then return nil end
  local module = "pulsar.apps." .. stem:lower()
  if not exists(module) then return nil end
  return require(module)[name]
end

return setmetatable(apps, {__index = function(t, name)
  local constructor = battery(name)
  if constructor then rawset(t, name, constructor) end
  return constructor
end})
