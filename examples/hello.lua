-- hello.lua: the arbiter's loop, coroutines and futures in a few lines.
--
--   build/pulsar-lua examples/hello.lua [name]
--
-- Three tasks run at once; the main chunk waits for all of them with
-- pulsar.gather, then a timer fires after the main chunk has returned (the
-- arbiter exits once nothing is left to do).
local name = ... or "world"

local function greeter(word, delay)
  pulsar.sleep(delay)
  print(("%-8s after %.1f s"):format(word, delay))
  return word
end

local t0 = pulsar.time()
local words = pulsar.gather(
  pulsar.async(greeter, "actors", 0.3),
  pulsar.async(greeter, "hello", 0.1),
  pulsar.async(greeter, name, 0.2)
):wait()

print(("gathered %q in %.1f s, not %.1f"):format(table.concat(words, " "),
                                                pulsar.time() - t0, 0.6))
pulsar.call_later(0.1, function() print("and a timer, after the main chunk") end)
