/**
 * The ObjectStore contract, written once and run against every layer (memory, fs, sqlite, postgres):
 *
 * ```ts
 * objectStoreConformance("memory", () => ObjectStore.layerMemory)
 * objectStoreConformance("fs", fsLayer, { damage: damageFsObject })
 * ```
 *
 * `layer` is provided to each test on its own and must give an EMPTY store each time it is built (a fresh temp
 * directory, a fresh database or schema). `damage`, when the backend can be damaged from outside, corrupts one
 * stored object in place: "flip" changes one byte of what is stored, "truncate" cuts it short; it may need
 * services of its own (R), which `layer` must provide too (e.g. the temp root of the fs store).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, Exit, Fiber, Layer, Option, Schema } from "effect"
import { encodeTag, encodeTree, hashOf, type TreeEntry } from "../../src/domain/GitObject.js"
import type { ObjectHash } from "../../src/domain/ObjectHash.js"
import { deflateSync } from "node:zlib"
import * as ObjectStore from "../../src/services/ObjectStore.js"

export type Damage = "flip" | "truncate"

export interface ConformanceOptions<R> {
  readonly damage?: (hash: ObjectHash, how: Damage) => Effect.Effect<void, unknown, R | ObjectStore.ObjectStore>
}

/** The RefConflict an operation must fail with (any other outcome fails the test). */
const refConflict = <R2>(effect: Effect.Effect<void, ObjectStore.RefConflict | ObjectStore.StoreError, R2>) =>
  Effect.flip(effect).pipe(
    Effect.flatMap((e) => e._tag === "RefConflict" ? Effect.succeed(e) : Effect.die(e))
  )

const text = (s: string) => new TextEncoder().encode(s)
const ref = (s: string) => Schema.decodeSync(ObjectStore.RefName)(s)

/** A small package graph: tag → tree → (file, exec file, link, lib/ → file). Nothing is stored. */
export const sampleGraph = (seed: string) => {
  const file = text(`hello ${seed}\n`)
  const script = text(`#!/bin/sh\necho ${seed}\n`)
  const link = text("README.md")
  const inner = text(`export const seed = "${seed}"\n`)
  const blobs = [file, script, link, inner].map((body) => ({ type: "blob" as const, body }))
  const [fileH, scriptH, linkH, innerH] = blobs.map((b) => hashOf("blob", b.body)) as [
    ObjectHash, ObjectHash, ObjectHash, ObjectHash
  ]
  const libEntries: Array<TreeEntry> = [{ mode: "100644", name: "index.js", hash: innerH }]
  const lib = { type: "tree" as const, body: encodeTree(libEntries) }
  const libH = hashOf("tree", lib.body)
  const rootEntries: Array<TreeEntry> = [
    { mode: "100644", name: "README.md", hash: fileH },
    { mode: "100755", name: "run.sh", hash: scriptH },
    { mode: "120000", name: "link", hash: linkH },
    { mode: "40000", name: "lib", hash: libH }
  ]
  const root = { type: "tree" as const, body: encodeTree(rootEntries) }
  const rootH = hashOf("tree", root.body)
  const tag = {
    type: "tag" as const,
    body: encodeTag({
      object: rootH,
      type: "tree",
      tag: `alice/${seed}/v1.0.0`,
      tagger: "Alice <alice@example.com> 1700000000 +0000",
      message: `release ${seed}\n`,
      signature: undefined
    })
  }
  const tagH = hashOf("tag", tag.body)
  return {
    blobs, lib, root, tag,
    hashes: { file: fileH, script: scriptH, link: linkH, inner: innerH, lib: libH, root: rootH, tag: tagH },
    /** Every object, leaves first. */
    all: [...blobs, lib, root, tag]
  }
}

export const objectStoreConformance = <E, R>(
  name: string,
  layer: Layer.Layer<ObjectStore.ObjectStore | R, E>,
  options: ConformanceOptions<R> = {}
) =>
  describe(`ObjectStore conformance: ${name}`, () => {
    const run = <A, E2>(body: Effect.Effect<A, E2, ObjectStore.ObjectStore | R>) =>
      Effect.provide(body, layer)

    // ---------------------------------------------------------------------------------------------
    // Objects

    it.effect("put returns git's hash and get gives back type and body", () =>
      run(Effect.gen(function* () {
        const store = yield* ObjectStore.ObjectStore
        const g = sampleGraph("put")
        for (const o of g.all) {
          const hash = yield* store.put(o.type, o.body)
          assert.strictEqual(hash, hashOf(o.type, o.body))
          const back = yield* store.get(hash)
          assert.strictEqual(back.type, o.type)
          assert.deepStrictEqual(Buffer.from(back.body), Buffer.from(o.body))
        }
        // the well-known empty blob and empty tree
        assert.strictEqual(yield* store.put("blob", new Uint8Array(0)), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391")
        assert.strictEqual(yield* store.put("tree", new Uint8Array(0)), "4b825dc642cb6eb9a060e54bf8d69288fbee4904")
        assert.strictEqual((yield* store.get(hashOf("blob", new Uint8Array(0)))).body.length, 0)
      })))

    it.effect("stores a 3 MiB binary blob intact", () =>
      run(Effect.gen(function* () {
        const store = yield* ObjectStore.ObjectStore
        const body = new Uint8Array(3 * 1024 * 1024)
        let x = 12345
        for (let i = 0; i < body.length; i++) {
          x = (x * 1103515245 + 12345) >>> 0
          body[i] = x >>> 24
        }
        const hash = yield* store.put("blob", body)
        const back = yield* store.get(hash)
        assert.isTrue(Buffer.from(back.body).equals(Buffer.from(body)))
      })))

    it.effect("put is idempotent, has and missing see what is stored (missing keeps input order)", () =>
      run(Effect.gen(function* () {
        const store = yield* ObjectStore.ObjectStore
        const g = sampleGraph("has")
        const a = yield* store.put("blob", g.blobs[0]!.body)
        assert.strictEqual(yield* store.put("blob", g.blobs[0]!.body), a)
        assert.isTrue(yield* store.has(a))
        assert.isFalse(yield* store.has(g.hashes.script))
        assert.deepStrictEqual(
          yield* store.missing([g.hashes.root, a, g.hashes.script, g.hashes.lib]),
          [g.hashes.root, g.hashes.script, g.hashes.lib]
        )
        assert.deepStrictEqual(yield* store.missing([]), [])
        assert.deepStrictEqual(yield* store.missing([a]), [])
      })))

    it.effect("putMany stores everything and returns the hashes in order", () =>
      run(Effect.gen(function* () {
        const store = yield* ObjectStore.ObjectStore
        const g = sampleGraph("many")
        const objects = [...g.all, g.all[0]!] // a duplicate in the batch is fine
        const hashes = yield* store.putMany(objects)
        assert.deepStrictEqual(hashes, objects.map((o) => hashOf(o.type, o.body)))
        assert.deepStrictEqual(yield* store.missing(hashes), [])
        assert.deepStrictEqual(yield* store.putMany([]), [])
        const many = Array.from({ length: 300 }, (_, i) => ({ type: "blob" as const, body: text(`object ${i}\n`) }))
        const manyHashes = yield* store.putMany(many)
        assert.strictEqual(new Set(manyHashes).size, 300)
        assert.deepStrictEqual(yield* store.missing(manyHashes), [])
        assert.strictEqual((yield* store.get(manyHashes[299]!)).body.length, text("object 299\n").length)
      })))

    it.effect("get of an unknown hash is ObjectNotFound naming it", () =>
      run(Effect.gen(function* () {
        const store = yield* ObjectStore.ObjectStore
        const hash = hashOf("blob", text("never stored"))
        const error = yield* Effect.flip(store.get(hash))
        assert.strictEqual(error._tag, "ObjectNotFound")
        assert.strictEqual(error._tag === "ObjectNotFound" ? error.hash : undefined, hash)
      })))

    it.effect("concurrent puts of the same and of different objects are safe", () =>
      run(Effect.gen(function* () {
        const store = yield* ObjectStore.ObjectStore
        const body = text("written by many fibers at once\n".repeat(1000))
        const hashes = yield* Effect.all(
          Array.from({ length: 16 }, (_, i) => i % 2 === 0 ? store.put("blob", body) : store.put("blob", text(`${i}`))),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(hashes[0], hashOf("blob", body))
        assert.deepStrictEqual(Buffer.from((yield* store.get(hashes[0]!)).body), Buffer.from(body))
        assert.deepStrictEqual(yield* store.missing(hashes), [])
      })))

    it.effect("listObjects lists exactly what is stored", () =>
      run(Effect.gen(function* () {
        const store = yield* ObjectStore.ObjectStore
        assert.deepStrictEqual(yield* store.listObjects(), [])
        const g = sampleGraph("list")
        const hashes = yield* store.putMany(g.all)
        const listed = yield* store.listObjects()
        assert.deepStrictEqual([...listed].sort(), [...new Set(hashes)].sort())
      })))

    it.effect("getDecoded, getFramed/putFramed and getDeflated/putDeflated round-trip", () =>
      run(Effect.gen(function* () {
        const store = yield* ObjectStore.ObjectStore
        const g = sampleGraph("framed")
        yield* store.putMany(g.all)
        const root = yield* ObjectStore.getDecoded(g.hashes.root)
        assert.strictEqual(root.type, "tree")
        assert.deepStrictEqual(root.type === "tree" ? root.entries.map((e) => e.name) : [], ["README.md", "lib", "link", "run.sh"])
        const tag = yield* ObjectStore.getDecoded(g.hashes.tag)
        assert.strictEqual(tag.type === "tag" ? tag.tag.object : undefined, g.hashes.root)

        const framed = yield* ObjectStore.getFramed(g.hashes.lib)
        const deflated = yield* ObjectStore.getDeflated(g.hashes.lib)
        assert.strictEqual(yield* ObjectStore.putFramed(framed), g.hashes.lib)
        assert.strictEqual(yield* ObjectStore.putDeflated(deflated), g.hashes.lib)

        // a deflated object that was never stored is stored by putDeflated
        const fresh = text("blob 6\0fresh\n")
        const freshHash = yield* ObjectStore.putDeflated(deflateSync(fresh))
        assert.strictEqual(freshHash, hashOf("blob", text("fresh\n")))
        assert.strictEqual(Buffer.from((yield* store.get(freshHash)).body).toString(), "fresh\n")

        // garbage and bombs are InvalidObject, and nothing is stored
        const garbage = yield* Effect.flip(ObjectStore.putDeflated(text("not zlib at all")))
        assert.strictEqual(garbage._tag, "InvalidObject")
        const bomb = deflateSync(Buffer.concat([text("blob 2000000\0"), Buffer.alloc(2_000_000)]))
        const tooLarge = yield* Effect.flip(ObjectStore.putDeflated(bomb, 1000))
        assert.strictEqual(tooLarge._tag === "InvalidObject" ? tooLarge.reason : tooLarge._tag, "TooLarge")
        const badSize = yield* Effect.flip(ObjectStore.putDeflated(deflateSync(text("blob 9\0short"))))
        assert.strictEqual(badSize._tag === "InvalidObject" ? badSize.reason : badSize._tag, "SizeMismatch")
      })))

    if (options.damage !== undefined) {
      const damage = options.damage
      for (const how of ["flip", "truncate"] as const) {
        it.effect(`a damaged object (${how}) is CorruptObject naming its hash, never returned`, () =>
          run(Effect.gen(function* () {
            const store = yield* ObjectStore.ObjectStore
            const g = sampleGraph(`damage-${how}`)
            yield* store.putMany(g.all)
            for (const hash of [g.hashes.file, g.hashes.root, g.hashes.tag]) {
              yield* damage(hash, how)
              const error = yield* Effect.flip(store.get(hash))
              assert.strictEqual(error._tag, "CorruptObject", `${how} ${hash}`)
              assert.strictEqual(error._tag === "CorruptObject" ? error.hash : undefined, hash)
            }
            // the walk that seals a graph meets the corrupt tree and fails instead of trusting it
            const walk = yield* Effect.exit(ObjectStore.missingReachable(g.hashes.tag))
            assert.isTrue(Exit.isFailure(walk))
            // untouched objects still read fine
            assert.strictEqual((yield* store.get(g.hashes.inner)).type, "blob")
          })))
      }
    }

    // ---------------------------------------------------------------------------------------------
    // Reachability and sealing

    it.effect("missingReachable walks only what is stored and shrinks as objects arrive", () =>
      run(Effect.gen(function* () {
        const store = yield* ObjectStore.ObjectStore
        const g = sampleGraph("reach")
        assert.deepStrictEqual(yield* ObjectStore.missingReachable(g.hashes.tag), [g.hashes.tag])
        yield* store.put("tag", g.tag.body)
        assert.deepStrictEqual(yield* ObjectStore.missingReachable(g.hashes.tag), [g.hashes.root])
        yield* store.put("tree", g.root.body)
        assert.deepStrictEqual(
          [...(yield* ObjectStore.missingReachable(g.hashes.tag))].sort(),
          [g.hashes.file, g.hashes.script, g.hashes.link, g.hashes.lib].sort()
        )
        yield* store.putMany([g.lib, ...g.blobs.slice(0, 3)])
        assert.deepStrictEqual(yield* ObjectStore.missingReachable(g.hashes.tag), [g.hashes.inner])
        yield* store.put("blob", g.blobs[3]!.body)
        assert.deepStrictEqual(yield* ObjectStore.missingReachable(g.hashes.tag), [])
      })))

    it.effect("sealRef refuses an incomplete graph and writes nothing; seals a complete one idempotently", () =>
      run(Effect.gen(function* () {
        const store = yield* ObjectStore.ObjectStore
        const g = sampleGraph("seal")
        const name = ref("refs/tags/alice/seal/v1.0.0")
        yield* store.putMany([g.tag, g.root, g.lib, ...g.blobs.slice(1)]) // README.md's blob is missing
        const error = yield* Effect.flip(ObjectStore.sealRef(name, g.hashes.tag))
        assert.strictEqual(error._tag, "IncompleteGraph")
        assert.strictEqual(error._tag === "IncompleteGraph" ? error.missing : -1, 1)
        assert.isTrue(Option.isNone(yield* store.readRef(name)))
        yield* store.put("blob", g.blobs[0]!.body)
        yield* ObjectStore.sealRef(name, g.hashes.tag)
        assert.deepStrictEqual(yield* store.readRef(name), Option.some(g.hashes.tag))
        yield* ObjectStore.sealRef(name, g.hashes.tag) // again: same value, fine
        // another graph under the same release name: refused, the release keeps its content
        const other = sampleGraph("seal-other")
        yield* store.putMany(other.all)
        const conflict = yield* Effect.flip(ObjectStore.sealRef(name, other.hashes.tag))
        assert.strictEqual(conflict._tag, "RefConflict")
        assert.deepStrictEqual(yield* store.readRef(name), Option.some(g.hashes.tag))
      })))

    // ---------------------------------------------------------------------------------------------
    // Refs

    it.effect("readRef and listRefs by prefix, sorted, prefix is a plain string prefix", () =>
      run(Effect.gen(function* () {
        const store = yield* ObjectStore.ObjectStore
        const g = sampleGraph("refs")
        yield* store.putMany(g.all)
        assert.isTrue(Option.isNone(yield* store.readRef(ref("refs/tags/alice/x/v1.0.0"))))
        assert.deepStrictEqual(yield* store.listRefs("refs/"), [])
        const names = [
          "refs/tags/bob/b/v1.0.0",
          "refs/tags/alice/x/v1.10.0",
          "refs/tags/alice/x/v1.2.0",
          "refs/tags/alicex/y/v0.1.0",
          "refs/upm/pending/alice/x"
        ]
        for (const n of names) yield* store.setRef(ref(n), Option.none(), g.hashes.tag)
        assert.deepStrictEqual(yield* store.readRef(ref("refs/tags/alice/x/v1.2.0")), Option.some(g.hashes.tag))
        assert.deepStrictEqual(
          (yield* store.listRefs("refs/tags/alice/")).map((r) => r.name),
          ["refs/tags/alice/x/v1.10.0", "refs/tags/alice/x/v1.2.0"]
        )
        assert.deepStrictEqual(
          (yield* store.listRefs("refs/tags/alice")).map((r) => r.name),
          ["refs/tags/alice/x/v1.10.0", "refs/tags/alice/x/v1.2.0", "refs/tags/alicex/y/v0.1.0"]
        )
        assert.deepStrictEqual((yield* store.listRefs("refs/")).map((r) => r.name), [...names].sort())
        assert.deepStrictEqual((yield* store.listRefs("refs/tags/carol/")), [])
        assert.deepStrictEqual((yield* store.listRefs("refs/tags/bob/b/v1.0.0")).map((r) => r.hash), [g.hashes.tag])
        // a directory of refs is not itself a ref
        assert.isTrue(Option.isNone(yield* store.readRef(ref("refs/tags/alice/x"))))
      })))

    it.effect("setRef: create, idempotent re-set, compare-and-set update, conflicts carry the actual value", () =>
      run(Effect.gen(function* () {
        const store = yield* ObjectStore.ObjectStore
        const [a, b, c] = ["1", "2", "3"].map((s) => hashOf("blob", text(s))) as [ObjectHash, ObjectHash, ObjectHash]
        const name = ref("refs/upm/pending/alice/pkg")
        yield* store.setRef(name, Option.none(), a)
        yield* store.setRef(name, Option.none(), a) // already holds a: succeeds whatever expected says
        yield* store.setRef(name, Option.some(c), a)
        const exists = yield* refConflict(store.setRef(name, Option.none(), b))
        assert.strictEqual(exists._tag, "RefConflict")
        assert.strictEqual(exists.actual, a)
        assert.isUndefined(exists.expected)
        const wrong = yield* refConflict(store.setRef(name, Option.some(c), b))
        assert.strictEqual(wrong.actual, a)
        assert.strictEqual(wrong.expected, c)
        yield* store.setRef(name, Option.some(a), b)
        assert.deepStrictEqual(yield* store.readRef(name), Option.some(b))
        const absent = yield* refConflict(store.setRef(ref("refs/upm/pending/nobody"), Option.some(a), b))
        assert.strictEqual(absent._tag, "RefConflict")
        assert.isUndefined(absent.actual)
        assert.isTrue(Option.isNone(yield* store.readRef(ref("refs/upm/pending/nobody"))))
      })))

    it.effect("tags are immutable: no compare-and-set and no delete can change an existing tag", () =>
      run(Effect.gen(function* () {
        const store = yield* ObjectStore.ObjectStore
        const [a, b] = ["1", "2"].map((s) => hashOf("blob", text(s))) as [ObjectHash, ObjectHash]
        const name = ref("refs/tags/alice/pkg/v1.0.0")
        yield* store.setRef(name, Option.none(), a)
        const change = yield* refConflict(store.setRef(name, Option.some(a), b))
        assert.strictEqual(change.reason, "Immutable")
        assert.strictEqual(change.actual, a)
        const remove = yield* refConflict(store.deleteRef(name, a))
        assert.strictEqual(remove.reason, "Immutable")
        assert.deepStrictEqual(yield* store.readRef(name), Option.some(a))
      })))

    it.effect("deleteRef deletes only when the ref holds the expected value", () =>
      run(Effect.gen(function* () {
        const store = yield* ObjectStore.ObjectStore
        const [a, b] = ["1", "2"].map((s) => hashOf("blob", text(s))) as [ObjectHash, ObjectHash]
        const name = ref("refs/upm/pending/alice/del")
        const missing = yield* refConflict(store.deleteRef(name, a))
        assert.strictEqual(missing._tag, "RefConflict")
        yield* store.setRef(name, Option.none(), a)
        const wrong = yield* refConflict(store.deleteRef(name, b))
        assert.strictEqual(wrong.actual, a)
        assert.deepStrictEqual(yield* store.readRef(name), Option.some(a))
        yield* store.deleteRef(name, a)
        assert.isTrue(Option.isNone(yield* store.readRef(name)))
        assert.deepStrictEqual(yield* store.listRefs("refs/upm/"), [])
        yield* store.setRef(name, Option.none(), b) // it can be created again
        assert.deepStrictEqual(yield* store.readRef(name), Option.some(b))
      })))

    it.effect("concurrent compare-and-set on one ref: exactly one winner, the others see its value", () =>
      run(Effect.gen(function* () {
        const store = yield* ObjectStore.ObjectStore
        const name = ref("refs/tags/alice/race/v1.0.0")
        const candidates = Array.from({ length: 12 }, (_, i) => hashOf("blob", text(`candidate ${i}`)))
        const fibers = yield* Effect.forEach(candidates, (h) => Effect.fork(Effect.either(store.setRef(name, Option.none(), h))))
        const results = yield* Fiber.joinAll(fibers)
        const winners = candidates.filter((_, i) => Either.isRight(results[i]!))
        assert.strictEqual(winners.length, 1)
        const winner = winners[0]!
        assert.deepStrictEqual(yield* store.readRef(name), Option.some(winner))
        for (const r of results) {
          if (Either.isLeft(r)) {
            assert.strictEqual(r.left._tag, "RefConflict")
            assert.strictEqual(r.left._tag === "RefConflict" ? r.left.actual : undefined, winner)
          }
        }

        // a chain of read-modify-write updates from many fibers loses none of them
        const counter = ref("refs/upm/counter")
        const values = Array.from({ length: 9 }, (_, i) => hashOf("blob", text(`step ${i}`)))
        yield* store.setRef(counter, Option.none(), values[0]!)
        const advance = (i: number): Effect.Effect<void, ObjectStore.StoreError | ObjectStore.RefConflict> =>
          store.setRef(counter, Option.some(values[i - 1]!), values[i]!).pipe(
            Effect.catchTag("RefConflict", () => Effect.yieldNow().pipe(Effect.zipRight(advance(i))))
          )
        yield* Effect.forEach(values.slice(1), (_, k) => advance(k + 1), { concurrency: "unbounded" })
        assert.deepStrictEqual(yield* store.readRef(counter), Option.some(values[8]!))
      })))
  })
