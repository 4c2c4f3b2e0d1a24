import { assert, describe, it } from "@effect/vitest"
import { Either, FastCheck as fc } from "effect"
import {
  decodeLockfile, encodeLockfile, type Lockfile, preferences, requirementChanges
} from "../../src/domain/Lockfile.js"
import { ObjectHash } from "../../src/domain/ObjectHash.js"
import { PackageName, Range, Version } from "../../src/domain/Package.js"

const h = (c: string) => ObjectHash.make(c.repeat(40))
const lock: Lockfile = {
  lockfileVersion: 1,
  dependencies: { [PackageName.make("b/colors")]: { range: Range.make("^2.0.0"), version: Version.make("2.1.0") } },
  packages: [
    { name: PackageName.make("c/x"), version: Version.make("1.0.0"), tag: h("b"), signer: "SHA256:bbb", dependencies: {} },
    {
      name: PackageName.make("b/colors"), version: Version.make("2.1.0"), tag: h("a"), signer: "SHA256:aaa",
      dependencies: { [PackageName.make("c/x")]: Version.make("1.0.0") }
    }
  ]
}

describe("Lockfile", () => {
  it("round-trips and writes canonical text (sorted, stable)", () => {
    const text = encodeLockfile(lock)
    const back = Either.getOrThrow(decodeLockfile(text, "upm.lock"))
    assert.strictEqual(encodeLockfile(back), text)
    assert.isTrue(text.endsWith("}\n"))
    assert.isBelow(text.indexOf(`"b/colors"`, text.indexOf(`"packages"`)), text.indexOf(`"c/x"`, text.indexOf(`"packages"`)))
    // Order of the input does not matter.
    assert.strictEqual(encodeLockfile({ ...lock, packages: [...lock.packages].reverse() }), text)
  })

  it.prop("encoding is deterministic under any package order", [fc.array(fc.integer({ min: 0, max: 9 }), { maxLength: 8 })], ([order]) => {
    const packages = Array.from({ length: 6 }, (_, i) => ({
      name: PackageName.make(`o/p${i % 3}`), version: Version.make(`1.${i}.0`), tag: h(String(i)), signer: "SHA256:k", dependencies: {}
    }))
    const shuffled = [...packages].sort((a, b) => ((order[packages.indexOf(a)] ?? 0) - (order[packages.indexOf(b)] ?? 0)))
    const l: Lockfile = { lockfileVersion: 1, dependencies: {}, packages }
    assert.strictEqual(encodeLockfile({ ...l, packages: shuffled }), encodeLockfile(l))
  })

  it("rejects bad files with the field and a fix", () => {
    const bad = (text: string) => {
      const r = decodeLockfile(text, "/p/upm.lock")
      assert.isTrue(Either.isLeft(r))
      return Either.isLeft(r) ? r.left.message : ""
    }
    assert.include(bad("{"), "/p/upm.lock")
    assert.include(bad(JSON.stringify({ lockfileVersion: 2, dependencies: {}, packages: [] })), "lockfileVersion")
    const wrongHash = JSON.parse(encodeLockfile(lock))
    wrongHash.packages[0].tag = "xyz"
    assert.include(bad(JSON.stringify(wrongHash)), "tag")
    const dangling = JSON.parse(encodeLockfile(lock))
    dangling.packages = dangling.packages.slice(0, 1) // drops c/x, still referenced
    assert.include(bad(JSON.stringify(dangling)), "c/x@1.0.0, which is not in packages")
    const unsat = JSON.parse(encodeLockfile(lock))
    unsat.dependencies["b/colors"].range = "^3.0.0"
    assert.include(bad(JSON.stringify(unsat)), "does not satisfy")
    assert.include(bad("x".repeat(17 * 1024 * 1024)), "larger than")
  })

  it("says what changed in the requirements", () => {
    assert.deepStrictEqual(requirementChanges(lock, { "b/colors": "^2.0.0" }), [])
    assert.deepStrictEqual(requirementChanges(lock, { "b/colors": "^2.1.0", "d/new": "*" }), [
      `b/colors: the lockfile has "^2.0.0", upm.json asks for "^2.1.0"`,
      "d/new@* is not in the lockfile"
    ])
    assert.deepStrictEqual(requirementChanges(lock, {}), ["b/colors is in the lockfile but no longer required"])
  })

  it("prefers the locked versions", () => {
    assert.deepStrictEqual([...preferences(lock)].map(([n, vs]) => `${n}:${vs.join(",")}`).sort(), ["b/colors:2.1.0", "c/x:1.0.0"])
  })
})
