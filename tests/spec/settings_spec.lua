-- Settings (docs/API.md §4): `pulsar.cfg` is the current actor's cfg, the one
-- table the runtime and `config get/set` use; `config set log_level` changes
-- the level logged, not only the table. This busted process is an arbiter.
local support = require "support"

describe("pulsar.cfg", function()
  it("is the arbiter's cfg in the arbiter", function()
    assert.is_true(rawequal(pulsar.cfg, pulsar.arbiter().cfg))
    pulsar.cfg.settings_spec_mark = "seen"
    assert.are.equal("seen", pulsar.arbiter().cfg.settings_spec_mark)
    pulsar.cfg.settings_spec_mark = nil
  end)

  it("is what a script sets, for the arbiter and the actors it spawns", function()
    local r = support.run(support.quote(support.script([[
      pulsar.cfg.spec_setting = 7
      local p = pulsar.spawn{name = "child"}:wait(20)
      print(pulsar.arbiter().cfg.spec_setting,
            pulsar.send(p, "run", function(a) return a.cfg.spec_setting end):wait(10))
      pulsar.send(p, "stop")
    ]])))
    assert.are.equal(0, r.code, r.err)
    assert.matches("7\t7", r.out)
  end)

  for _, kind in ipairs {"process", "thread"} do
    it("is the actor's cfg in a " .. kind .. " actor", function()
      local p = pulsar.spawn{name = "cfg-" .. kind, concurrency = kind}:wait(20)
      local same = pulsar.send(p, "run", function(a)
        local pulsar = require "pulsar"
        return rawequal(pulsar.cfg, a.cfg)
      end):wait(10)
      assert.is_true(same)
      pulsar.send(p, "stop")
    end)
  end
end)

describe("config set log_level", function()
  it("changes the level a process actor logs at", function()
    local p = pulsar.spawn{name = "levels", concurrency = "process"}:wait(20)
    local enabled = function() return require("pulsar").log.enabled("debug") end
    assert.is_false(pulsar.send(p, "run", enabled):wait(10))
    assert.is_true(pulsar.send(p, "config", "set", "log_level", "debug"):wait(10))
    assert.is_true(pulsar.send(p, "run", enabled):wait(10))
    assert.are.equal("debug", pulsar.send(p, "config", "get", "log_level"):wait(10))
    pulsar.send(p, "stop")
  end)

  it("refuses an unknown level and leaves the setting as it was", function()
    local p = pulsar.spawn{name = "badlevel", concurrency = "process"}:wait(20)
    local before = pulsar.send(p, "config", "get", "log_level"):wait(10)
    local ok, err = pcall(function()
      return pulsar.send(p, "config", "set", "log_level", "loud"):wait(10)
    end)
    assert.is_false(ok)
    assert.matches("config: cannot set log_level", tostring(err))
    assert.are.equal(before, pulsar.send(p, "config", "get", "log_level"):wait(10))
    pulsar.send(p, "stop")
  end)
end)
