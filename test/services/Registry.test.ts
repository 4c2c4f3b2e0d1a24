import { assert, describe, it } from "@effect/vitest"
import { Chunk, Effect, Either, Fiber, Layer, Option, Stream } from "effect"
import { layerMemory, makeMemory, ObjectStore, RefName } from "../../src/services/ObjectStore.js"
import * as Owners from "../../src/services/Owners.js"
import { signRelease } from "../../src/services/Signer.js"
import * as Verifier from "../../src/services/Verifier.js"
import { ALICE } from "../e2e/release.js"
import { memoryKey, publicLine } from "./KeysFixtures.js"
import * as Registry from "../../src/services/Registry.js"
import { VerifiedRelease } from "../../src/services/Verifier.js"
import { importTree, makeRelease, pkg, ver } from "./SyncFixtures.js"

const MALLORY = memoryKey("mallory_ed25519")

const setup = Effect.gen(function* () {
  const store = yield* makeMemory
  const registry = yield* Registry.make.pipe(Effect.provideService(ObjectStore, store))
  const publish = (name: string, version: string, salt = "") =>
    Effect.gen(function* () {
      const { tag, tree } = yield* makeRelease(store, name, version, { "a.txt": `${name} ${version}${salt}` })
      const release = new VerifiedRelease({ tagHash: tag, tree, name: pkg(name), version: ver(version), signer: "unsigned" })
      return { release, result: yield* registry.seal(release) }
    })
  return { store, registry, publish }
})

describe("Registry", () => {
  it.effect("versions sort by semver; match picks the newest stable, or what the range allows", () =>
    Effect.gen(function* () {
      const { registry, publish } = yield* setup
      for (const v of ["1.10.0", "1.2.0", "2.0.0-rc.1", "1.9.3"]) yield* publish("alice/one", v)
      assert.deepStrictEqual((yield* registry.versions(pkg("alice/one"))).map((r) => r.version), ["1.2.0", "1.9.3", "1.10.0", "2.0.0-rc.1"])
      const best = (range?: string) =>
        Effect.map(registry.match(pkg("alice/one"), range as never), Option.map((r) => r.version))
      assert.deepStrictEqual(yield* best(), Option.some(ver("1.10.0")))
      assert.deepStrictEqual(yield* best("~1.9"), Option.some(ver("1.9.3")))
      assert.deepStrictEqual(yield* best("^2"), Option.none())
      assert.deepStrictEqual(yield* best(">=2.0.0-rc.0"), Option.some(ver("2.0.0-rc.1")))
      assert.deepStrictEqual(yield* registry.match(pkg("alice/none"), undefined), Option.none())
    }))

  it.effect("owners, packages and search", () =>
    Effect.gen(function* () {
      const { registry, publish } = yield* setup
      yield* publish("alice/one", "1.0.0")
      yield* publish("alice/two", "1.0.0")
      yield* publish("bob/tool", "0.1.0")
      assert.deepStrictEqual<ReadonlyArray<string>>(yield* registry.owners(), ["alice", "bob"])
      assert.deepStrictEqual<ReadonlyArray<string>>(yield* registry.packages("alice"), ["alice/one", "alice/two"])
      assert.deepStrictEqual<ReadonlyArray<string>>(yield* registry.packages(undefined), ["alice/one", "alice/two", "bob/tool"])
      assert.deepStrictEqual<ReadonlyArray<string>>(yield* registry.search("O", 10), ["alice/one", "alice/two", "bob/tool"])
      assert.deepStrictEqual<ReadonlyArray<string>>(yield* registry.search("tw", 10), ["alice/two"])
      assert.deepStrictEqual<ReadonlyArray<string>>(yield* registry.search("o", 1), ["alice/one"])
    }))

  it.effect("seal: idempotent for the same tag, a conflict for another, refused while the graph is incomplete", () =>
    Effect.gen(function* () {
      const { store, registry, publish } = yield* setup
      const first = yield* publish("alice/one", "1.0.0")
      assert.strictEqual(first.result, "Sealed")
      assert.strictEqual(yield* registry.seal(first.release), "AlreadySealed")
      const other = yield* makeRelease(store, "alice/one", "1.0.0", { "a.txt": "different" })
      const conflict = yield* registry.seal(new VerifiedRelease({
        tagHash: other.tag, tree: other.tree, name: pkg("alice/one"), version: ver("1.0.0"), signer: "unsigned"
      })).pipe(Effect.either)
      assert.isTrue(Either.isLeft(conflict) && conflict.left._tag === "RefConflict")
      // A tag whose tree is not stored cannot be sealed.
      const missingTree = yield* makeRelease(yield* makeMemory, "alice/one", "2.0.0", { "b.txt": "b" })
      const incomplete = yield* registry.seal(new VerifiedRelease({
        tagHash: missingTree.tag, tree: missingTree.tree, name: pkg("alice/one"), version: ver("2.0.0"), signer: "unsigned"
      })).pipe(Effect.either)
      assert.isTrue(Either.isLeft(incomplete) && incomplete.left._tag === "IncompleteGraph")
      assert.deepStrictEqual((yield* registry.versions(pkg("alice/one"))).map((r) => r.version), ["1.0.0"])
    }))

  it.scoped("sealed publishes each new seal once", () =>
    Effect.gen(function* () {
      const { registry, publish } = yield* setup
      const fiber = yield* registry.sealed.pipe(Stream.take(2), Stream.runCollect, Effect.fork)
      // Let the subscriber fiber subscribe before anything is sealed.
      yield* Effect.repeatN(Effect.yieldNow(), 20)
      const a = yield* publish("alice/one", "1.0.0")
      yield* registry.seal(a.release) // AlreadySealed: not published again
      yield* publish("alice/one", "1.1.0")
      const seen = Chunk.toArray(yield* Fiber.join(fiber)).map((r) => r.version)
      assert.deepStrictEqual(seen, ["1.0.0", "1.1.0"])
    }))

  it.effect("the server registry authorizes every seal: two fresh-namespace claims verified at once, only the first to seal wins", () =>
    Effect.gen(function* () {
      const store = yield* ObjectStore
      const registry = yield* Registry.Registry
      const verifier = yield* Verifier.Verifier
      const release = (key: typeof ALICE, name: string) =>
        Effect.gen(function* () {
          const tree = yield* importTree(store, { "a.txt": name })
          const signed = yield* signRelease(key, {
            tree,
            metadata: { name: pkg(name), version: ver("1.0.0") },
            tagger: { name: "T", email: "t@example.com" },
            time: { seconds: 1_700_000_000 }
          }).pipe(Effect.orDie)
          const hash = yield* store.put("tag", signed.body)
          return yield* verifier.verifyTag(hash, signed.tag)
        })
      // Both verify while the namespace is still fresh: each would claim it.
      const first = yield* release(ALICE, "shared/one")
      const second = yield* release(MALLORY, "shared/two")
      assert.isTrue(first.claim === true && second.claim === true)
      assert.strictEqual(yield* registry.seal(first), "Sealed")
      const refused = yield* Effect.flip(registry.seal(second))
      assert.strictEqual(refused._tag, "VerificationError")
      assert.isTrue(Option.isNone(yield* store.readRef(RefName.make("refs/tags/shared/two/v1.0.0"))))
      const owner = yield* Effect.flatMap(Owners.Owners, (o) => o.get("shared"))
      assert.isTrue(Option.isSome(owner))
      // What the sync query `keys shared` reports to clients: the claimant's key only.
      assert.deepStrictEqual(yield* verifier.ownerKeys("shared"), [publicLine(ALICE)])
      assert.deepStrictEqual(yield* verifier.ownerKeys("nobody"), [])
    }).pipe(Effect.provide(Layer.mergeAll(Registry.layer, Verifier.layer).pipe(
      Layer.provideMerge(Owners.layer), Layer.provideMerge(layerMemory)))))
})
