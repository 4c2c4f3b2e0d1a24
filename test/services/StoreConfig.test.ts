import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, Layer, Option, Redacted, Schema } from "effect"
import { ObjectStore, RefName } from "../../src/services/ObjectStore.js"
import { describeStoreSpec, layerFromSpec, StoreSpecFromString } from "../../src/services/StoreConfig.js"
import { freshPgUrl } from "./SqlStoresLayers.js"
import { pgTestsEnabled } from "../pg.js"
import { FileSystem } from "@effect/platform"

const decode = Schema.decodeUnknownEither(StoreSpecFromString)
const encode = Schema.encodeSync(StoreSpecFromString)

describe("StoreSpec", () => {
  it("parses every backend", () => {
    assert.deepStrictEqual(decode("fs:/var/lib/upm/store"), Either.right({ _tag: "fs", path: "/var/lib/upm/store" } as const))
    assert.deepStrictEqual(decode("sqlite:./store.db"), Either.right({ _tag: "sqlite", path: "./store.db" } as const))
    assert.deepStrictEqual(decode("memory"), Either.right({ _tag: "memory" } as const))
    // a path may itself contain colons
    assert.deepStrictEqual(decode("fs:C:/x:y"), Either.right({ _tag: "fs", path: "C:/x:y" } as const))
  })

  it("takes a PostgreSQL URL whole or after the prefix, and pool=N out of it", () => {
    const url = (input: string) =>
      Either.map(decode(input), (s) => (s._tag === "postgres" ? [Redacted.value(s.url), s.maxConnections] : undefined))
    assert.deepStrictEqual(url("postgres://u:pw@db:5432/upm"), Either.right(["postgres://u:pw@db:5432/upm", undefined]))
    assert.deepStrictEqual(url("postgresql://db/upm"), Either.right(["postgresql://db/upm", undefined]))
    assert.deepStrictEqual(url("postgres:postgresql://db/upm?sslmode=require"), Either.right(["postgresql://db/upm?sslmode=require", undefined]))
    assert.deepStrictEqual(url("postgres://db/upm?pool=25"), Either.right(["postgres://db/upm", 25]))
    assert.deepStrictEqual(url("postgres://db/upm?pool=3&sslmode=require"), Either.right(["postgres://db/upm?sslmode=require", 3]))
    assert.deepStrictEqual(url("postgres://db/upm?sslmode=require&pool=4"), Either.right(["postgres://db/upm?sslmode=require", 4]))
  })

  it("refuses what it does not understand, saying why", () => {
    const message = (input: string) => Either.match(decode(input), { onLeft: (e) => e.message, onRight: () => "accepted" })
    assert.include(message("fs:"), "needs a path")
    assert.include(message("sqlite"), "needs a path")
    assert.include(message("redis://x"), "unknown store")
    assert.include(message("/var/lib/upm"), "unknown store")
    assert.include(message("postgres:db/upm"), "not a PostgreSQL URL")
    assert.include(message("postgres://db/upm?pool=0"), "pool size")
    assert.include(message("postgres://db/upm?pool=many"), "pool size")
    assert.isTrue(Either.isLeft(decode(42)))
  })

  it("round-trips through its string form and never prints a password", () => {
    for (const input of ["fs:/a/b", "sqlite:/a/b.db", "memory", "postgres://u@db/upm", "postgres://db/upm?pool=7"]) {
      const spec = Either.getOrThrow(decode(input))
      assert.strictEqual(encode(spec), input)
    }
    const secret = Either.getOrThrow(decode("postgres://alice:s3cret@db/upm"))
    assert.notInclude(describeStoreSpec(secret), "s3cret")
    assert.include(describeStoreSpec(secret), "alice:***@db/upm")
    assert.notInclude(secret._tag === "postgres" ? String(secret.url) : "", "s3cret")
  })
})

/** Every spec opens a working store: a ref written is read back. */
const roundTrip = Effect.gen(function* () {
  const store = yield* ObjectStore
  const hash = yield* store.put("blob", new TextEncoder().encode("spec\n"))
  const ref = Schema.decodeSync(RefName)("refs/heads/spec")
  yield* store.setRef(ref, Option.none(), hash)
  assert.deepStrictEqual(yield* store.readRef(ref), Option.some(hash))
})

describe("layerFromSpec", () => {
  it.scoped("opens fs, sqlite and memory stores", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      for (const input of [`fs:${dir}/fs`, `sqlite:${dir}/deep/er/store.db`, "memory"]) {
        const spec = Either.getOrThrow(decode(input))
        yield* roundTrip.pipe(Effect.provide(layerFromSpec(spec)))
      }
      assert.isTrue(yield* fs.exists(`${dir}/fs/objects`))
      assert.isTrue(yield* fs.exists(`${dir}/deep/er/store.db`))
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped.skipIf(!pgTestsEnabled)("opens a postgres store", () =>
    Effect.gen(function* () {
      const url = yield* freshPgUrl
      const spec = Either.getOrThrow(decode(`${url}?pool=2`))
      yield* roundTrip.pipe(Effect.provide(layerFromSpec(spec)))
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("an unreachable database or unusable path is a StoreError, not a crash", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      yield* fs.writeFileString(`${dir}/file`, "not a directory")
      const bad = [
        `sqlite:${dir}/file/store.db`,
        "postgres://nobody@127.0.0.1:1/none"
      ]
      for (const input of bad) {
        const error = yield* Effect.flip(Layer.build(layerFromSpec(Either.getOrThrow(decode(input)))))
        assert.strictEqual(error._tag, "StoreError", input)
        assert.strictEqual(error.op, "open", input)
      }
      // a file that is not a SQLite database
      yield* fs.writeFileString(`${dir}/garbage.db`, "x".repeat(4096))
      const garbage = yield* Effect.flip(Layer.build(layerFromSpec(Either.getOrThrow(decode(`sqlite:${dir}/garbage.db`)))))
      assert.strictEqual(garbage._tag, "StoreError")
    }).pipe(Effect.provide(NodeContext.layer)))
})
