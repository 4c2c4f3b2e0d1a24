/** What only the fs store has: its on-disk layout, crash leftovers, locks, and damage the contract suite can't make. */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Option, Schema } from "effect"
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { deflateSync, inflateSync } from "node:zlib"
import { frame, hashOf } from "../../src/domain/GitObject.js"
import { layerFs, makeFs } from "../../src/services/FsStore.js"
import * as ObjectStore from "../../src/services/ObjectStore.js"

const root = mkdtempSync(join(tmpdir(), "upm-fsstore-"))
let n = 0
const freshRoot = () => join(root, `repo-${n++}`)
const storeAt = (dir: string) => layerFs(dir).pipe(Layer.provideMerge(NodeContext.layer))
const text = (s: string) => new TextEncoder().encode(s)
const ref = Schema.decodeSync(ObjectStore.RefName)
const objectFile = (dir: string, hash: string) => join(dir, "objects", hash.slice(0, 2), hash.slice(2))

describe("fs store", () => {
  afterAll(() => rmSync(root, { recursive: true, force: true }))

  it.effect("lays out a bare git repository with read-only, level-1 deflated loose objects and no temp files", () =>
    Effect.gen(function* () {
      const dir = freshRoot()
      const hashes = yield* Effect.provide(
        Effect.flatMap(ObjectStore.ObjectStore, (store) =>
          store.putMany(Array.from({ length: 100 }, (_, i) => ({ type: "blob" as const, body: text(`blob ${i}\n`.repeat(i)) })))),
        storeAt(dir)
      )
      assert.strictEqual(readFileSync(join(dir, "HEAD"), "utf8"), "ref: refs/heads/main\n")
      assert.include(readFileSync(join(dir, "config"), "utf8"), "bare = true")
      assert.include(readFileSync(join(dir, "config"), "utf8"), "auto = 0")
      for (const sub of ["objects/info", "objects/pack", "refs/tags", "refs/heads"]) assert.isTrue(existsSync(join(dir, sub)))
      const file = objectFile(dir, hashes[7]!)
      assert.strictEqual(statSync(file).mode & 0o777, 0o444)
      const stored = readFileSync(file)
      assert.strictEqual(stored[0], 0x78)
      assert.strictEqual(stored[1], 0x01) // zlib header of level 1
      assert.deepStrictEqual(new Uint8Array(inflateSync(stored)), frame("blob", text("blob 7\n".repeat(7))))
      const leftovers = readdirSync(join(dir, "objects")).flatMap((d) =>
        /^[0-9a-f]{2}$/.test(d) ? readdirSync(join(dir, "objects", d)).filter((f) => !/^[0-9a-f]{38}$/.test(f)) : [])
      assert.deepStrictEqual(leftovers, [])
    }))

  it.effect("reopens what it wrote; ignores tmp_obj_ leftovers of a crashed writer; repairs a torn (empty) object", () =>
    Effect.gen(function* () {
      const dir = freshRoot()
      const body = text("survives a restart\n")
      const hash = hashOf("blob", body)
      const name = ref("refs/tags/alice/p/v1.0.0")
      yield* Effect.provide(
        Effect.flatMap(ObjectStore.ObjectStore, (store) =>
          Effect.zipRight(store.put("blob", body), store.setRef(name, Option.none(), hash))),
        storeAt(dir)
      )
      // a writer killed mid-write leaves only a temp file, never a half object under its final name
      writeFileSync(join(dir, "objects", hash.slice(0, 2), "tmp_obj_crashed"), "half")
      const after = yield* Effect.provide(
        Effect.gen(function* () {
          const store = yield* ObjectStore.ObjectStore
          return {
            body: (yield* store.get(hash)).body,
            ref: yield* store.readRef(name),
            listed: yield* store.listObjects()
          }
        }),
        storeAt(dir)
      )
      assert.deepStrictEqual(Buffer.from(after.body).toString(), "survives a restart\n")
      assert.deepStrictEqual(after.ref, Option.some(hash))
      assert.deepStrictEqual(after.listed, [hash])
      // power loss after rename but before the data reached the disk: a zero-length object. It reads as corrupt,
      // and the next put of the same object writes it again.
      chmodSync(objectFile(dir, hash), 0o644)
      writeFileSync(objectFile(dir, hash), "")
      yield* Effect.provide(
        Effect.gen(function* () {
          const store = yield* ObjectStore.ObjectStore
          assert.strictEqual((yield* Effect.flip(store.get(hash)))._tag, "CorruptObject")
          yield* store.put("blob", body)
          assert.strictEqual(Buffer.from((yield* store.get(hash)).body).toString(), "survives a restart\n")
        }),
        storeAt(dir)
      )
    }))

  it.effect("trailing garbage after the zlib stream and an object stored under the wrong name are CorruptObject", () =>
    Effect.gen(function* () {
      const dir = freshRoot()
      yield* Effect.provide(
        Effect.gen(function* () {
          const store = yield* ObjectStore.ObjectStore
          const hash = yield* store.put("blob", text("x\n"))
          chmodSync(objectFile(dir, hash), 0o644)
          writeFileSync(objectFile(dir, hash), Buffer.concat([deflateSync(frame("blob", text("x\n"))), Buffer.from("junk")]))
          const garbage = yield* Effect.flip(store.get(hash))
          assert.strictEqual(garbage._tag, "CorruptObject")
          assert.include(garbage._tag === "CorruptObject" ? garbage.detail : "", "garbage")
          const other = hashOf("blob", text("y\n"))
          mkdirSync(join(dir, "objects", other.slice(0, 2)), { recursive: true })
          writeFileSync(objectFile(dir, other), deflateSync(frame("blob", text("x\n"))))
          const swapped = yield* Effect.flip(store.get(other))
          assert.include(swapped._tag === "CorruptObject" ? swapped.detail : "", `hashes to ${hash}`)
          // getDeflated serves the stored bytes as they are
          const fresh = yield* store.put("blob", text("served as stored\n"))
          assert.deepStrictEqual(
            Buffer.from(yield* ObjectStore.getDeflated(fresh)),
            readFileSync(objectFile(dir, fresh))
          )
        }),
        storeAt(dir)
      )
    }))

  it.effect("putMany: small (synchronous) and large (thread pool) objects and duplicates, each stored once as a loose object", () =>
    Effect.gen(function* () {
      const dir = freshRoot()
      const store = yield* Effect.provide(makeFs(dir), NodeContext.layer)
      const large = new Uint8Array(300 * 1024).map((_, i) => (i * 7) % 251) // past the 128 KiB synchronous limit
      const objects = [
        { type: "blob" as const, body: text("small\n") },
        { type: "blob" as const, body: large },
        { type: "blob" as const, body: text("small\n") },
        ...Array.from({ length: 600 }, (_, i) => ({ type: "blob" as const, body: text(`many ${i}\n`) })) // several slices
      ]
      const hashes = yield* store.putMany(objects)
      assert.deepStrictEqual(hashes, objects.map((o) => hashOf(o.type, o.body)))
      assert.strictEqual(hashes[0], hashes[2])
      assert.strictEqual((yield* store.listObjects()).length, 602)
      assert.deepStrictEqual(new Uint8Array(inflateSync(readFileSync(objectFile(dir, hashes[1]!)))), frame("blob", large))
      assert.deepStrictEqual((yield* store.get(hashes[1]!)).body, large)
      assert.deepStrictEqual(yield* store.missing([hashes[0]!, hashOf("blob", text("absent"))]), [hashOf("blob", text("absent"))])
    }).pipe(Effect.provide(NodeContext.layer)))

  it.effect("a write that fails is a StoreError naming the object and leaves no temp file", () =>
    Effect.gen(function* () {
      const dir = freshRoot()
      const store = yield* Effect.provide(makeFs(dir), NodeContext.layer)
      const body = text("cannot be renamed into place\n")
      const hash = hashOf("blob", body)
      mkdirSync(objectFile(dir, hash), { recursive: true }) // a directory where the object file goes: rename fails
      const error = yield* Effect.flip(store.putMany([{ type: "blob", body }, { type: "blob", body: text("other\n") }]))
      assert.strictEqual(error._tag, "StoreError")
      assert.include(error.detail ?? "", hash)
      assert.deepStrictEqual(readdirSync(join(dir, "objects", hash.slice(0, 2))), [hash.slice(2)])
      const single = yield* Effect.flip(store.put("blob", body))
      assert.strictEqual(single._tag, "StoreError")
      assert.deepStrictEqual(readdirSync(join(dir, "objects", hash.slice(0, 2))), [hash.slice(2)])
    }).pipe(Effect.provide(NodeContext.layer)))

  it.live("a ref lock held by another process is waited for, then reported naming the lock file", () =>
    Effect.gen(function* () {
      const dir = freshRoot()
      const store = yield* Effect.provide(makeFs(dir), NodeContext.layer)
      const name = ref("refs/upm/locked")
      const hash = hashOf("blob", text("v"))
      mkdirSync(join(dir, "refs", "upm"), { recursive: true })
      writeFileSync(join(dir, "refs", "upm", "locked.lock"), "")
      const error = yield* Effect.flip(store.setRef(name, Option.none(), hash))
      assert.strictEqual(error._tag, "StoreError")
      assert.include(error._tag === "StoreError" ? error.detail ?? "" : "", "locked.lock")
      assert.isTrue(Option.isNone(yield* store.readRef(name)))
      // once the other writer is gone, the update goes through and leaves no lock behind
      rmSync(join(dir, "refs", "upm", "locked.lock"))
      yield* store.setRef(name, Option.none(), hash)
      assert.deepStrictEqual(readdirSync(join(dir, "refs", "upm")), ["locked"])
      assert.strictEqual(readFileSync(join(dir, "refs", "upm", "locked"), "utf8"), `${hash}\n`)
      // a refused compare-and-set removes its lock too
      yield* Effect.flip(store.setRef(name, Option.none(), hashOf("blob", text("w"))))
      assert.deepStrictEqual(readdirSync(join(dir, "refs", "upm")), ["locked"])
    }))

  it.effect("listRefs never leaves refs/, skips lock files, and reports a symbolic ref as an error", () =>
    Effect.gen(function* () {
      const dir = freshRoot()
      yield* Effect.provide(
        Effect.gen(function* () {
          const store = yield* ObjectStore.ObjectStore
          const fs = yield* FileSystem.FileSystem
          const hash = hashOf("blob", text("v"))
          yield* store.setRef(ref("refs/tags/a/b/v1.0.0"), Option.none(), hash)
          yield* fs.writeFileString(join(dir, "refs", "tags", "a", "b", "v2.0.0.lock"), `${hash}\n`)
          writeFileSync(join(root, "secret"), `${hash}\n`)
          assert.deepStrictEqual((yield* store.listRefs("refs/tags/")).map((r) => r.name), ["refs/tags/a/b/v1.0.0"])
          assert.deepStrictEqual(yield* store.listRefs("refs/../../"), [])
          assert.deepStrictEqual(yield* store.listRefs("../"), [])
          yield* fs.writeFileString(join(dir, "refs", "heads", "main"), "ref: refs/heads/other\n")
          const symbolic = yield* Effect.flip(store.readRef(ref("refs/heads/main")))
          assert.include(symbolic._tag === "StoreError" ? symbolic.detail ?? "" : "", "symbolic")
        }),
        storeAt(dir)
      )
    }))
})
