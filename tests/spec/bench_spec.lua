-- scripts/bench's command line (docs/BENCHMARKS.md): a benchmark name it
-- does not know is refused before anything builds or runs, with the names
-- it knows, and exit status 2. (The benchmarks themselves are not run here.)
local support = require "support"

describe("scripts/bench", function()
  for _, name in ipairs {"B8", "B9", "B0", "Bx"} do
    it("refuses the unknown benchmark " .. name, function()
      local r = support.run("--no-build " .. name, nil, "scripts/bench")
      assert.are.equal(2, r.code, r.out .. r.err)
      assert.matches("bench: unknown benchmark " .. name .. "; known: B1 B2 B4 B5 B6", r.err)
      assert.are.equal("", r.out)
    end)
  end
end)
