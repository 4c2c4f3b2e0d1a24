/** `upm store copy` end to end: the built CLI (dist/, made by globalSetup) run as a process. */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Option, Schema } from "effect"
import { spawnSync } from "node:child_process"
import { join } from "node:path"
import { layerFs } from "../../src/services/FsStore.js"
import { ObjectStore, RefName, sealRef } from "../../src/services/ObjectStore.js"
import { layerSqlite } from "../../src/services/SqliteStore.js"
import { sampleGraph } from "./ObjectStoreConformance.js"

const upm = (...args: ReadonlyArray<string>) => {
  const result = spawnSync("node", ["bin/upm.js", ...args], { encoding: "utf8", timeout: 60_000 })
  return { status: result.status, stdout: result.stdout, stderr: result.stderr }
}

const storeOf = <E, R>(layer: Layer.Layer<ObjectStore, E, R>) => Effect.map(Layer.build(layer), Context.get(ObjectStore))

describe("upm store copy", () => {
  it.scoped("copies an fs store into SQLite, prints what it did, and resumes to a no-op", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped({ prefix: "upm-cli-copy-" })
      const g = sampleGraph("cli")
      const name = Schema.decodeSync(RefName)("refs/tags/alice/cli/v1.0.0")
      yield* Effect.scoped(Effect.gen(function* () {
        const source = yield* storeOf(layerFs(join(dir, "src")))
        yield* source.putMany(g.all)
        yield* sealRef(name, g.hashes.tag).pipe(Effect.provideService(ObjectStore, source))
      }))

      const first = upm("store", "copy", "--from", `fs:${join(dir, "src")}`, "--to", `sqlite:${join(dir, "db", "store.db")}`)
      assert.strictEqual(first.status, 0, first.stderr)
      assert.include(first.stdout, `objects: ${g.all.length} (${g.all.length} copied, 0 already there)`)
      assert.include(first.stdout, "refs: 1 (1 written, 0 unchanged)")
      assert.include(first.stdout, `verified: ${g.all.length} objects hash-checked, 1 refs identical`)

      const second = upm("store", "copy", "--from", `fs:${join(dir, "src")}`, "--to", `sqlite:${join(dir, "db", "store.db")}`)
      assert.strictEqual(second.status, 0, second.stderr)
      assert.include(second.stdout, `(0 copied, ${g.all.length} already there)`)

      const copied = yield* storeOf(layerSqlite(join(dir, "db", "store.db")))
      assert.deepStrictEqual(yield* copied.readRef(name), Option.some(g.hashes.tag))
    }).pipe(Effect.provide(NodeContext.layer)))

  it("refuses a spec it does not understand, and fails (exit 1) on a store it cannot open", () => {
    const bad = upm("store", "copy", "--from", "bogus:x", "--to", "memory")
    assert.notStrictEqual(bad.status, 0)
    assert.include(bad.stdout + bad.stderr, "unknown store")
    const unreachable = upm("store", "copy", "--from", "memory", "--to", "postgres://nobody@127.0.0.1:1/none")
    assert.strictEqual(unreachable.status, 1)
    assert.include(unreachable.stderr, "upm store copy failed: StoreError")
  })
})
