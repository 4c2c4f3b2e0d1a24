/** SQLite-specific behaviour: durability across reopen, two connections on one file, schema versions, helpers. */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import * as SqlClient from "@effect/sql/SqlClient"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Option, Schedule, Schema } from "effect"
import { trustedHash } from "../../src/domain/ObjectHash.js"
import { ObjectStore, RefName } from "../../src/services/ObjectStore.js"
import { layerSqlite } from "../../src/services/SqliteStore.js"
import { batches, prefixRange } from "../../src/services/SqlStore.js"
import { sampleGraph } from "./ObjectStoreConformance.js"
import { sqliteFile } from "./SqlStoresLayers.js"
import { execFile } from "node:child_process"
import { existsSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

const WORKER = fileURLToPath(new URL("./SqliteCasWorker.ts", import.meta.url))

const ref = Schema.decodeSync(RefName)
const open = (file: string) => Effect.map(Layer.build(layerSqlite(file)), Context.get(ObjectStore))

describe("SqliteStore", () => {
  it.scoped("what was written is there after the store is closed and opened again", () =>
    Effect.gen(function* () {
      const file = yield* sqliteFile
      const g = sampleGraph("durable")
      const name = ref("refs/tags/alice/durable/v1.0.0")
      yield* Effect.scoped(Effect.gen(function* () {
        const store = yield* open(file)
        yield* store.putMany(g.all)
        yield* store.setRef(name, Option.none(), g.hashes.tag)
      }))
      const again = yield* open(file)
      assert.deepStrictEqual(yield* again.readRef(name), Option.some(g.hashes.tag))
      assert.strictEqual((yield* again.get(g.hashes.root)).type, "tree")
      // the file is in WAL mode (a property of the file, seen by any connection)
      const raw = Context.get(yield* Layer.build(SqliteClient.layer({ filename: file }).pipe(Layer.orDie)), SqlClient.SqlClient)
      const [mode] = yield* raw<{ readonly journal_mode: string }>`PRAGMA journal_mode`
      assert.strictEqual(mode?.journal_mode, "wal")
    }).pipe(Effect.provide(NodeContext.layer)))

  // Two connections on one file, as two processes would have (in one process they would block each other's
  // thread while waiting for SQLite's lock, so one process opens one layer per file).
  it.scoped("two stores on one file: writes through one are seen by the other, compare-and-set sees them", () =>
    Effect.gen(function* () {
      const file = yield* sqliteFile
      const a = yield* open(file)
      const b = yield* open(file)
      const g = sampleGraph("two")
      const other = sampleGraph("two-other")
      yield* a.putMany(g.all)
      yield* b.putMany(other.all)
      assert.deepStrictEqual(yield* a.missing([other.hashes.tag, g.hashes.tag]), [])
      const name = ref("refs/tags/alice/two/v1.0.0")
      yield* a.setRef(name, Option.none(), g.hashes.tag)
      assert.deepStrictEqual(yield* b.readRef(name), Option.some(g.hashes.tag))
      const lost = yield* Effect.flip(b.setRef(name, Option.none(), other.hashes.tag))
      assert.strictEqual(lost._tag === "RefConflict" ? lost.actual : lost._tag, g.hashes.tag)
      yield* b.setRef(name, Option.none(), g.hashes.tag) // the same value: idempotent through either
    }).pipe(Effect.provide(NodeContext.layer)))

  // Two real processes (each with its own connection) racing compare-and-set on one ref: each new value names the
  // one it replaced, so a lost update (two writers both replacing the same value) would shorten the chain.
  it.scopedLive("two processes advancing one ref by compare-and-set lose no update", () =>
    Effect.gen(function* () {
      const file = yield* sqliteFile
      const name = ref("refs/heads/counter")
      const start = yield* Effect.scoped(Effect.gen(function* () {
        const store = yield* open(file)
        const hash = yield* store.put("blob", new TextEncoder().encode("start\n"))
        yield* store.setRef(name, Option.none(), hash)
        return hash
      }))
      const perWorker = 150
      const dir = dirname(file)
      const worker = (id: string) =>
        Effect.async<void, Error>((resume) => {
          const child = execFile(process.execPath, ["--import", "tsx", WORKER, file, name, id, String(perWorker), dir],
            { timeout: 120_000 }, (error, _out, stderr) =>
              resume(error === null ? Effect.void : Effect.fail(new Error(`worker ${id}: ${error.message}\n${stderr}`))))
          return Effect.sync(() => child.kill())
        })
      // both open, then both go at once
      const go = Effect.sync(() => existsSync(join(dir, "ready-a")) && existsSync(join(dir, "ready-b"))).pipe(
        Effect.repeat({ schedule: Schedule.spaced("20 millis"), until: (ready) => ready }),
        Effect.zipRight(Effect.sync(() => writeFileSync(join(dir, "go"), "")))
      )
      yield* Effect.all([worker("a"), worker("b"), go], { concurrency: 3 })
      const store = yield* open(file)
      let at = Option.getOrThrow(yield* store.readRef(name))
      const seen: Array<string> = []
      while (at !== start) {
        const text = new TextDecoder().decode((yield* store.get(at)).body)
        const [previous = "", step = ""] = text.split("\n")
        seen.push(step)
        at = trustedHash(previous)
        if (seen.length > 2 * perWorker) break
      }
      assert.strictEqual(seen.length, 2 * perWorker)
      assert.deepStrictEqual(new Set(seen).size, 2 * perWorker)
    }).pipe(Effect.provide(NodeContext.layer)), 180_000)

  it.scoped("a database from a newer upm is refused at open", () =>
    Effect.gen(function* () {
      const file = yield* sqliteFile
      yield* Effect.scoped(open(file))
      const raw = Context.get(yield* Layer.build(SqliteClient.layer({ filename: file }).pipe(Layer.orDie)), SqlClient.SqlClient)
      yield* raw.unsafe("PRAGMA user_version = 99")
      const error = yield* Effect.flip(open(file))
      assert.strictEqual(error._tag, "StoreError")
      assert.include(error.detail ?? "", "newer upm")
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("a path that cannot hold a database is a StoreError naming it", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      yield* fs.makeDirectory(`${dir}/store.db`) // a directory where the file should be
      const error = yield* Effect.flip(open(`${dir}/store.db`))
      assert.strictEqual(error._tag, "StoreError")
      assert.strictEqual(error.op, "open")
    }).pipe(Effect.provide(NodeContext.layer)))

  it("prefixRange: byte-order bounds for ASCII prefixes, nothing for others", () => {
    assert.deepStrictEqual(prefixRange(""), Option.some({ from: "", to: undefined }))
    assert.deepStrictEqual(prefixRange("refs/tags/alice/"), Option.some({ from: "refs/tags/alice/", to: "refs/tags/alice0" }))
    assert.deepStrictEqual(prefixRange("refs/tags/alic"), Option.some({ from: "refs/tags/alic", to: "refs/tags/alid" }))
    assert.isTrue(Option.isNone(prefixRange("refs/tags/é")))
    assert.isTrue(Option.isNone(prefixRange("refs/\n")))
  })

  it("batches: by count and by bytes, an oversized item alone", () => {
    assert.deepStrictEqual(batches([1, 2, 3, 4, 5], () => 1, 2, Infinity), [[1, 2], [3, 4], [5]])
    assert.deepStrictEqual(batches([5, 5, 20, 1], (n) => n, 100, 10), [[5, 5], [20], [1]])
    assert.deepStrictEqual(batches([], () => 1, 2, 2), [])
  })
})
