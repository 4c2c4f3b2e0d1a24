import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, FastCheck as fc, Ref } from "effect"
import semver from "semver"
import { PackageName, Range, Version } from "../../src/domain/Package.js"
import {
  compatClass, describeFailure, findCycles, type Resolution, resolve, type RootRequirement, type Source
} from "../../src/services/Resolver.js"

// ---------------------------------------------------------------------------------------------
// An in-memory registry: name → version → dependencies

type Registry = Record<string, Record<string, Record<string, string>>>

const fake = (registry: Registry, calls?: Ref.Ref<Array<string>>): Source<never> => ({
  versions: (name) =>
    Effect.gen(function* () {
      if (calls) yield* Ref.update(calls, (c) => [...c, `versions ${name}`])
      return Object.keys(registry[name] ?? {}).map((v) => Version.make(v))
    }),
  dependencies: (name, version) =>
    Effect.gen(function* () {
      if (calls) yield* Ref.update(calls, (c) => [...c, `deps ${name}@${version}`])
      const deps = registry[name]?.[version] ?? {}
      return Object.fromEntries(Object.entries(deps).map(([n, r]) => [n, Range.make(r)]))
    })
})

const roots = (reqs: Record<string, string>): Array<RootRequirement> =>
  Object.entries(reqs).map(([name, range]) => ({ name: PackageName.make(name), range: Range.make(range) }))

/** `name@version` of every chosen package, and the root edges, for compact assertions. */
const summary = (r: Resolution) => ({
  roots: Object.fromEntries([...r.roots].map(([n, v]): [string, string] => [n, v])),
  packages: r.packages.map((p) => `${p.name}@${p.version}`)
})

const run = (registry: Registry, reqs: Record<string, string>, prefer?: Record<string, Array<string>>) =>
  resolve(fake(registry), roots(reqs), {
    ...(prefer === undefined ? {} : {
      prefer: new Map(Object.entries(prefer).map(([n, vs]) => [PackageName.make(n), vs.map((v) => Version.make(v))]))
    })
  })

describe("Resolver", () => {
  it("compatibility classes follow semver's caret", () => {
    assert.strictEqual(compatClass("1.2.3"), "1")
    assert.strictEqual(compatClass("2.0.0-beta.1"), "2")
    assert.strictEqual(compatClass("0.3.9"), "0.3")
    assert.strictEqual(compatClass("0.0.7"), "0.0.7")
  })

  it.effect("picks the highest satisfying version, transitively", () =>
    Effect.gen(function* () {
      const r = yield* run({
        "a/app": { "1.0.0": { "b/lib": "^1.0.0" }, "1.5.0": { "b/lib": "^1.2.0" }, "2.0.0": {} },
        "b/lib": { "1.0.0": {}, "1.2.0": {}, "1.9.1": {}, "2.0.0": {} }
      }, { "a/app": "^1.0.0" })
      assert.deepStrictEqual(summary(r), { roots: { "a/app": "1.5.0" }, packages: ["a/app@1.5.0", "b/lib@1.9.1"] })
      assert.deepStrictEqual([...r.packages[0]!.dependencies].map(([n, v]) => `${n}@${v}`), ["b/lib@1.9.1"])
      assert.deepStrictEqual(r.cycles, [])
    }))

  it.effect("compatible ranges share one copy; incompatible ones get one each", () =>
    Effect.gen(function* () {
      const r = yield* run({
        "a/x": { "1.0.0": { "c/z": "^1.2.0" } },
        "a/y": { "1.0.0": { "c/z": "^1.4.0" } },
        "a/w": { "1.0.0": { "c/z": "^2.0.0" } },
        "c/z": { "1.2.0": {}, "1.4.0": {}, "1.6.0": {}, "2.0.0": {}, "2.1.0": {} }
      }, { "a/x": "*", "a/y": "*", "a/w": "*" })
      assert.deepStrictEqual(summary(r).packages, ["a/w@1.0.0", "a/x@1.0.0", "a/y@1.0.0", "c/z@1.6.0", "c/z@2.1.0"])
      const depOf = (name: string) => r.packages.find((p) => p.name === name)!.dependencies.get(PackageName.make("c/z"))
      assert.strictEqual(depOf("a/x"), "1.6.0")
      assert.strictEqual(depOf("a/y"), "1.6.0")
      assert.strictEqual(depOf("a/w"), "2.1.0")
    }))

  it.effect("reuses a chosen version rather than adding a copy when it satisfies", () =>
    Effect.gen(function* () {
      const r = yield* run({
        "a/x": { "1.0.0": { "c/z": "^1.0.0" } },
        "a/y": { "1.0.0": { "c/z": ">=1.0.0" } },
        "c/z": { "1.0.0": {}, "2.0.0": {} }
      }, { "a/x": "*", "a/y": "*" })
      assert.deepStrictEqual(summary(r).packages, ["a/x@1.0.0", "a/y@1.0.0", "c/z@1.0.0"])
    }))

  it.effect("backtracks to an older version of a dependent to avoid a conflict", () =>
    Effect.gen(function* () {
      // The newest b/lib needs c/z ^1.5 but a/app pins c/z 1.2.x: b/lib 1.0.0 (c/z ^1.0) fits.
      const r = yield* run({
        "a/app": { "1.0.0": { "b/lib": "^1.0.0", "c/z": "~1.2.0" } },
        "b/lib": { "1.0.0": { "c/z": "^1.0.0" }, "1.1.0": { "c/z": "^1.5.0" } },
        "c/z": { "1.2.0": {}, "1.2.3": {}, "1.5.0": {} }
      }, { "a/app": "1.0.0" })
      assert.deepStrictEqual(summary(r).packages, ["a/app@1.0.0", "b/lib@1.0.0", "c/z@1.2.3"])
    }))

  it.effect("explains a conflict with both paths from the root", () =>
    Effect.gen(function* () {
      const error = yield* run({
        "a/app": { "1.0.0": { "b/x": "^1.0.0", "b/y": "^1.0.0" } },
        "b/x": { "1.0.0": { "c/z": "~1.2.0" } },
        "b/y": { "1.0.0": { "c/z": "^1.5.0" } },
        "c/z": { "1.2.0": {}, "1.5.0": {} }
      }, { "a/app": "^1.0.0" }).pipe(Effect.flip)
      assert.strictEqual(error._tag, "DependencyConflict")
      if (error._tag !== "DependencyConflict") return
      assert.strictEqual(error.name, "c/z")
      assert.strictEqual(error.chosen, "1.2.0")
      assert.deepStrictEqual(error.first, {
        path: [{ name: "a/app", version: "1.0.0" }, { name: "b/x", version: "1.0.0" }],
        range: "~1.2.0"
      })
      assert.deepStrictEqual(error.second, {
        path: [{ name: "a/app", version: "1.0.0" }, { name: "b/y", version: "1.0.0" }],
        range: "^1.5.0"
      })
      const text = describeFailure(error)
      assert.include(text, "(root) → a/app@1.0.0 → b/x@1.0.0 requires c/z@~1.2.0")
      assert.include(text, "(root) → a/app@1.0.0 → b/y@1.0.0 requires c/z@^1.5.0")
    }))

  it.effect("a range nothing satisfies lists the versions that exist", () =>
    Effect.gen(function* () {
      const error = yield* run({ "a/x": { "1.0.0": {}, "1.1.0": {} } }, { "a/x": "^3.0.0" }).pipe(Effect.flip)
      assert.strictEqual(error._tag, "NoMatchingVersion")
      if (error._tag !== "NoMatchingVersion") return
      assert.deepStrictEqual(error.available, ["1.0.0", "1.1.0"])
      assert.include(describeFailure(error), "versions that exist: 1.0.0, 1.1.0")
    }))

  it.effect("an unknown package is PackageNotFound with who required it", () =>
    Effect.gen(function* () {
      const error = yield* run({ "a/x": { "1.0.0": { "a/typo": "^1.0.0" } } }, { "a/x": "^1.0.0" }).pipe(Effect.flip)
      assert.strictEqual(error._tag, "PackageNotFound")
      if (error._tag !== "PackageNotFound") return
      assert.strictEqual(error.name, "a/typo")
      assert.deepStrictEqual(error.path, [{ name: "a/x", version: "1.0.0" }])
    }))

  it.effect("prereleases only when the range names one", () =>
    Effect.gen(function* () {
      const registry = { "a/x": { "1.0.0": {}, "1.1.0-beta.1": {} } }
      assert.deepStrictEqual(summary(yield* run(registry, { "a/x": "^1.0.0" })).packages, ["a/x@1.0.0"])
      assert.deepStrictEqual(summary(yield* run(registry, { "a/x": "^1.1.0-beta.0" })).packages, ["a/x@1.1.0-beta.1"])
    }))

  it.effect("resolves cycles and reports them", () =>
    Effect.gen(function* () {
      const r = yield* run({
        "a/a": { "1.0.0": { "a/b": "^1.0.0" } },
        "a/b": { "1.0.0": { "a/c": "^1.0.0" } },
        "a/c": { "1.0.0": { "a/a": "^1.0.0" } },
        "a/self": { "1.0.0": { "a/self": "^1.0.0" } }
      }, { "a/a": "*", "a/self": "*" })
      assert.deepStrictEqual(summary(r).packages, ["a/a@1.0.0", "a/b@1.0.0", "a/c@1.0.0", "a/self@1.0.0"])
      assert.deepStrictEqual(r.cycles, [["a/a@1.0.0", "a/b@1.0.0", "a/c@1.0.0"], ["a/self@1.0.0"]])
    }))

  it.effect("preferred (locked) versions win while they satisfy", () =>
    Effect.gen(function* () {
      const registry = { "a/x": { "1.0.0": { "a/y": "^1.0.0" }, "1.3.0": {} }, "a/y": { "1.0.0": {}, "1.2.0": {} } }
      const locked = yield* run(registry, { "a/x": "^1.0.0" }, { "a/x": ["1.0.0"], "a/y": ["1.0.0"] })
      assert.deepStrictEqual(summary(locked).packages, ["a/x@1.0.0", "a/y@1.0.0"])
      // A pin that no longer satisfies the range is ignored.
      const moved = yield* run(registry, { "a/x": "^1.2.0" }, { "a/x": ["1.0.0"] })
      assert.deepStrictEqual(summary(moved).packages, ["a/x@1.3.0"])
    }))

  it.effect("asks the source once per name and per release", () =>
    Effect.gen(function* () {
      const calls = yield* Ref.make<Array<string>>([])
      const registry = {
        "a/x": { "1.0.0": { "c/z": "^1.0.0" } },
        "a/y": { "1.0.0": { "c/z": "^1.0.0" } },
        "c/z": { "1.0.0": {} }
      }
      yield* resolve(fake(registry, calls), roots({ "a/x": "*", "a/y": "*" }))
      const seen = yield* Ref.get(calls)
      assert.deepStrictEqual([...seen].sort(), [...new Set(seen)].sort())
    }))

  it.effect("gives up with ResolutionTooComplex past maxSteps", () =>
    Effect.gen(function* () {
      // Every b/lib version needs c/z ~1.1.0 but the root holds class 1 with 1.0.0: each one is tried.
      const tight = yield* resolve(
        fake({ "b/lib": Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`1.${i}.0`, { "c/z": "~1.1.0" }])),
          "c/z": { "1.0.0": {}, "1.1.0": {} } }),
        roots({ "c/z": "1.0.0", "b/lib": "^1.0.0" }),
        { maxSteps: 5 }
      ).pipe(Effect.flip)
      assert.strictEqual(tight._tag, "ResolutionTooComplex")
      assert.include(describeFailure(tight), "c/z")
    }))

  it("finds cycles in deep chains without overflowing the stack", () => {
    const n = 20_000
    const pkgs = Array.from({ length: n }, (_, i) => ({
      name: PackageName.make(`a/p${i}`),
      version: Version.make("1.0.0"),
      dependencies: new Map([[PackageName.make(`a/p${(i + 1) % n}`), Version.make("1.0.0")]])
    }))
    const cycles = findCycles(pkgs)
    assert.strictEqual(cycles.length, 1)
    assert.strictEqual(cycles[0]!.length, n)
  })

  // -------------------------------------------------------------------------------------------
  // Properties over random small registries, checked against brute force

  const NAMES = ["o/a", "o/b", "o/c"]
  const VERSIONS = ["0.1.0", "1.0.0", "1.1.0", "2.0.0"]
  const RANGES = ["^1.0.0", "^1.1.0", "~1.0.0", ">=1.0.0", "^0.1.0", "^2.0.0", "*", "1.0.0", "<1.1.0"]

  const arbRegistry: fc.Arbitrary<Registry> = fc.record({
    "o/a": fc.dictionary(fc.constantFrom(...VERSIONS), fc.dictionary(fc.constantFrom(...NAMES), fc.constantFrom(...RANGES), { maxKeys: 2 }), { maxKeys: 4 }),
    "o/b": fc.dictionary(fc.constantFrom(...VERSIONS), fc.dictionary(fc.constantFrom(...NAMES), fc.constantFrom(...RANGES), { maxKeys: 2 }), { maxKeys: 4 }),
    "o/c": fc.dictionary(fc.constantFrom(...VERSIONS), fc.dictionary(fc.constantFrom(...NAMES), fc.constantFrom(...RANGES), { maxKeys: 2 }), { maxKeys: 4 })
  })
  const arbRoots = fc.dictionary(fc.constantFrom(...NAMES), fc.constantFrom(...RANGES), { minKeys: 1, maxKeys: 3 })

  /** Does any set of versions (one per package and class at most) satisfy every requirement? */
  const bruteForce = (registry: Registry, reqs: Record<string, string>): boolean => {
    const slots: Array<Array<string | undefined>> = []
    const slotNames: Array<string> = []
    for (const name of NAMES) {
      const byClass = new Map<string, Array<string>>()
      for (const v of Object.keys(registry[name] ?? {})) byClass.set(compatClass(v), [...(byClass.get(compatClass(v)) ?? []), v])
      for (const vs of byClass.values()) {
        slots.push([undefined, ...vs])
        slotNames.push(name)
      }
    }
    const chosen: Array<[string, string]> = []
    const ok = () => {
      const has = (name: string, range: string) => chosen.some(([n, v]) => n === name && semver.satisfies(v, range))
      return Object.entries(reqs).every(([n, r]) => has(n, r)) &&
        chosen.every(([n, v]) => Object.entries(registry[n]?.[v] ?? {}).every(([dn, dr]) => has(dn, dr)))
    }
    const go = (i: number): boolean => {
      if (i === slots.length) return ok()
      for (const v of slots[i]!) {
        if (v !== undefined) chosen.push([slotNames[i]!, v])
        const found = go(i + 1)
        if (v !== undefined) chosen.pop()
        if (found) return true
      }
      return false
    }
    return go(0)
  }

  it.effect.prop(
    "a resolution satisfies every requirement, one version per class; it exists exactly when brute force finds one",
    [arbRegistry, arbRoots],
    ([registry, reqs]) =>
      Effect.gen(function* () {
        const result = yield* run(registry, reqs).pipe(Effect.either)
        const exists = bruteForce(registry, reqs)
        if (Either.isLeft(result)) {
          const e = result.left
          // A missing package is reported at once; otherwise a failure means no assignment exists.
          if (e._tag !== "PackageNotFound") assert.isFalse(exists, `resolver failed (${describeFailure(e)}) but a solution exists`)
          return
        }
        assert.isTrue(exists)
        const r = result.right
        const chosen = new Set(r.packages.map((p) => `${p.name}@${p.version}`))
        const classes = r.packages.map((p) => `${p.name}#${compatClass(p.version)}`)
        assert.strictEqual(new Set(classes).size, classes.length, "two versions in one class")
        for (const [name, range] of Object.entries(reqs)) {
          const v = r.roots.get(PackageName.make(name))
          assert.isDefined(v)
          assert.isTrue(semver.satisfies(v!, range) && chosen.has(`${name}@${v}`))
        }
        for (const p of r.packages) {
          const deps = registry[p.name]?.[p.version] ?? {}
          assert.deepStrictEqual([...p.dependencies.keys()].sort(), Object.keys(deps).sort())
          for (const [dn, dr] of Object.entries(deps)) {
            const v = p.dependencies.get(PackageName.make(dn))!
            assert.isTrue(semver.satisfies(v, dr) && chosen.has(`${dn}@${v}`))
          }
        }
        // Deterministic: the same input, the same output.
        assert.deepStrictEqual(summary(yield* run(registry, reqs)), summary(r))
      }),
    { fastCheck: { numRuns: 200, seed: 42 } }
  )

  it.effect.prop(
    "without conflicts, each root requirement gets the highest version in range",
    [fc.dictionary(fc.constantFrom(...NAMES), fc.subarray(VERSIONS, { minLength: 1 }), { minKeys: 1 }), arbRoots],
    ([versions, reqs]) =>
      Effect.gen(function* () {
        // No dependencies: nothing can conflict.
        const registry: Registry = Object.fromEntries(
          Object.entries(versions).map(([n, vs]) => [n, Object.fromEntries(vs.map((v) => [v, {}]))])
        )
        const result = yield* run(registry, reqs).pipe(Effect.either)
        for (const [name, range] of Object.entries(reqs)) {
          const best = semver.maxSatisfying(Object.keys(registry[name] ?? {}), range)
          if (Either.isRight(result)) assert.strictEqual(result.right.roots.get(PackageName.make(name)), best)
          else assert.isTrue(best === null || Object.entries(reqs).some(([n, r]) => semver.maxSatisfying(Object.keys(registry[n] ?? {}), r) === null))
        }
      }),
    { fastCheck: { numRuns: 100, seed: 7 } }
  )
})
