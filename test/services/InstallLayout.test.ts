import { assert, describe, it } from "@effect/vitest"
import { PackageName, Version } from "../../src/domain/Package.js"
import { layout } from "../../src/services/Install.js"

const n = PackageName.make
const v = Version.make
const pkg = (name: string, version: string, deps: Record<string, string> = {}) => ({
  name: n(name),
  version: v(version),
  dependencies: new Map(Object.entries(deps).map(([a, b]) => [n(a), v(b)]))
})

describe("install layout", () => {
  it("puts one version per name at the top and nests the incompatible one under its dependent", () => {
    const placements = layout(new Map([[n("a/app"), v("1.0.0")], [n("c/z"), v("1.6.0")]]), [
      pkg("a/app", "1.0.0", { "b/old": "1.0.0", "c/z": "1.6.0" }),
      pkg("b/old", "1.0.0", { "c/z": "2.1.0" }),
      pkg("c/z", "1.6.0"),
      pkg("c/z", "2.1.0")
    ])
    assert.deepStrictEqual(placements.map((p) => `${p.dir} ${p.version}`).sort(), [
      "a/app 1.0.0",
      "b/old 1.0.0",
      "b/old/upm_modules/c/z 2.1.0",
      "c/z 1.6.0"
    ])
  })

  it("terminates on cycles", () => {
    const placements = layout(new Map([[n("a/a"), v("1.0.0")]]), [
      pkg("a/a", "1.0.0", { "a/b": "1.0.0" }),
      pkg("a/b", "1.0.0", { "a/a": "1.0.0" })
    ])
    assert.deepStrictEqual(placements.map((p) => p.dir).sort(), ["a/a", "a/b"])
  })
})
