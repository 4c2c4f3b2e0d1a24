/**
 * PostgreSQL-specific behaviour, with several independent pools on one database standing in for several upm
 * nodes: migrations racing at start, the same release sealed through two nodes at once, writes through one
 * visible through the other at once, overlapping batches without deadlock.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Either, Layer, Option, Schema } from "effect"
import { hashOf } from "../../src/domain/GitObject.js"
import { ObjectStore, RefName, sealRef } from "../../src/services/ObjectStore.js"
import { layerPg, SCHEMA_VERSION } from "../../src/services/PgStore.js"
import { pgSkipMessage, pgTestsEnabled } from "../pg.js"
import { sampleGraph } from "./ObjectStoreConformance.js"
import { freshPgUrl, pgAt } from "./SqlStoresLayers.js"

const ref = Schema.decodeSync(RefName)
const text = (s: string) => new TextEncoder().encode(s)

/** A node: its own pool on the database. */
const node = (url: string) => Effect.map(Layer.build(layerPg({ url, maxConnections: 4 })), Context.get(ObjectStore))

describe.skipIf(!pgTestsEnabled)("PgStore", () => {
  it.scoped("nodes starting at once on an empty database migrate it exactly once", () =>
    Effect.gen(function* () {
      const url = yield* freshPgUrl
      const nodes = yield* Effect.all(Array.from({ length: 5 }, () => node(url)), { concurrency: "unbounded" })
      assert.strictEqual(nodes.length, 5)
      const raw = Context.get(yield* Layer.build(pgAt(url)), SqlClient.SqlClient)
      const versions = yield* raw<{ readonly version: number }>`SELECT version FROM upm_schema_version ORDER BY version`
      assert.deepStrictEqual(versions.map((v) => v.version), [SCHEMA_VERSION])
      // a later start finds it migrated and changes nothing
      yield* node(url)
      assert.strictEqual((yield* raw`SELECT version FROM upm_schema_version`).length, 1)
    }))

  it.scoped("a database from a newer upm is refused at start, not used", () =>
    Effect.gen(function* () {
      const url = yield* freshPgUrl
      const raw = Context.get(yield* Layer.build(pgAt(url)), SqlClient.SqlClient)
      yield* raw`INSERT INTO upm_schema_version (version) VALUES (${SCHEMA_VERSION + 1})`
      const error = yield* Effect.flip(node(url))
      assert.strictEqual(error._tag, "StoreError")
      assert.include(error.detail ?? "", "newer")
    }))

  it.scoped("the same release sealed through two nodes at once is sealed exactly once", () =>
    Effect.gen(function* () {
      const url = yield* freshPgUrl
      const [a, b] = yield* Effect.all([node(url), node(url)])
      for (let round = 0; round < 10; round++) {
        const g = sampleGraph(`race-${round}`)
        const other = sampleGraph(`race-other-${round}`)
        yield* Effect.all([a.putMany(g.all), b.putMany(other.all)], { concurrency: 2 })
        const name = ref(`refs/tags/alice/race-${round}/v1.0.0`)
        // node a seals g, node b seals the same graph (idempotent) and a different one (must lose if a won)
        const results = yield* Effect.all([
          Effect.either(sealRef(name, g.hashes.tag).pipe(Effect.provideService(ObjectStore, a))),
          Effect.either(sealRef(name, g.hashes.tag).pipe(Effect.provideService(ObjectStore, b))),
          Effect.either(b.setRef(name, Option.none(), other.hashes.tag))
        ], { concurrency: "unbounded" })
        const winner = yield* a.readRef(name)
        assert.isTrue(Option.isSome(winner))
        if (Option.contains(winner, g.hashes.tag)) {
          assert.isTrue(Either.isRight(results[0]) && Either.isRight(results[1]), `round ${round}`)
          assert.isTrue(Either.isLeft(results[2]), `round ${round}`)
        } else {
          assert.isTrue(Either.isLeft(results[0]) && Either.isLeft(results[1]), `round ${round}`)
          assert.isTrue(Either.isRight(results[2]), `round ${round}`)
        }
        assert.deepStrictEqual(yield* b.readRef(name), winner)
      }
    }))

  it.scoped("what one node writes the other reads at once", () =>
    Effect.gen(function* () {
      const url = yield* freshPgUrl
      const [a, b] = yield* Effect.all([node(url), node(url)])
      const g = sampleGraph("visible")
      yield* a.putMany(g.all)
      assert.deepStrictEqual(yield* b.missing(g.all.map((o) => hashOf(o.type, o.body))), [])
      assert.strictEqual((yield* b.get(g.hashes.tag)).type, "tag")
      const name = ref("refs/tags/alice/visible/v1.0.0")
      yield* sealRef(name, g.hashes.tag).pipe(Effect.provideService(ObjectStore, a))
      assert.deepStrictEqual(yield* b.readRef(name), Option.some(g.hashes.tag))
      assert.deepStrictEqual((yield* b.listRefs("refs/tags/alice/")).map((r) => r.name), [name])
      // and back: a pending ref moved by b is seen by a
      const pending = ref("refs/upm/pending/alice/visible")
      yield* b.setRef(pending, Option.none(), g.hashes.root)
      yield* a.setRef(pending, Option.some(g.hashes.root), g.hashes.lib)
      assert.deepStrictEqual(yield* b.readRef(pending), Option.some(g.hashes.lib))
    }))

  it.scoped("overlapping batches written through two nodes at once neither deadlock nor lose objects", () =>
    Effect.gen(function* () {
      const url = yield* freshPgUrl
      const [a, b] = yield* Effect.all([node(url), node(url)])
      const objects = Array.from({ length: 1500 }, (_, i) => ({ type: "blob" as const, body: text(`shared ${i}\n`) }))
      const reversed = [...objects].reverse()
      const [ha, hb] = yield* Effect.all([
        Effect.all([a.putMany(objects), a.putMany(reversed)], { concurrency: 2 }),
        Effect.all([b.putMany(reversed), b.putMany(objects)], { concurrency: 2 })
      ], { concurrency: 2 })
      assert.deepStrictEqual(ha[0], [...hb[0]].reverse())
      assert.deepStrictEqual(yield* a.missing(ha[0]), [])
      assert.strictEqual((yield* b.listObjects()).length, 1500)
    }))
})

if (!pgTestsEnabled) {
  describe("PgStore", () => {
    it.skip(pgSkipMessage, () => {})
  })
}
