/**
 * Test layers for the SQL stores: each build gives an EMPTY store (a fresh SQLite file in a temp directory, a
 * fresh PostgreSQL database in the run's cluster) plus a second, raw SqlClient on the same database, which
 * tests use to look at or damage what is stored from outside the store.
 */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import * as SqlClient from "@effect/sql/SqlClient"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import { Effect, Layer, Redacted } from "effect"
import { inject } from "vitest"
import type { ObjectHash } from "../../src/domain/ObjectHash.js"
import { layerPg } from "../../src/services/PgStore.js"
import { layerSqlite } from "../../src/services/SqliteStore.js"
import { freshDatabase } from "../pg.js"
import type { Damage } from "./ObjectStoreConformance.js"

/** A fresh SQLite file (its path is returned too) in a scoped temp directory. */
export const sqliteFile = Effect.gen(function* () {
  const fs = yield* FileSystem.FileSystem
  const dir = yield* fs.makeTempDirectoryScoped({ prefix: "upm-sqlite-" })
  return `${dir}/store.db`
})

/** The SQLite store on `file` and a raw client on the same file, built after the store (its tables exist). */
export const sqliteAt = (file: string) =>
  SqliteClient.layer({ filename: file }).pipe(Layer.provideMerge(layerSqlite(file)), Layer.orDie)

export const layerSqliteTest = Layer.unwrapScoped(Effect.map(sqliteFile, sqliteAt)).pipe(
  Layer.provide(NodeContext.layer)
)

export const pgAt = (url: string, maxConnections = 10) =>
  PgClient.layer({ url: Redacted.make(url), maxConnections: 2 }).pipe(
    Layer.provideMerge(layerPg({ url, maxConnections })),
    Layer.orDie
  )

/** A fresh database in the run's cluster (test/pg.ts). */
export const freshPgUrl = Effect.suspend(() => freshDatabase(inject("upmPg")))

export const layerPgTest = Layer.unwrapEffect(Effect.map(freshPgUrl, (url) => pgAt(url)))

/** Damages one stored object in place, through the raw client: the store must notice on its next get. */
export const damageSql = (hash: ObjectHash, how: Damage) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const key = Buffer.from(hash, "hex")
    const [row] = yield* sql<{ readonly value: Uint8Array }>`SELECT value FROM objects WHERE hash = ${key}`
    if (row === undefined) return yield* Effect.dieMessage(`no object ${hash} to damage`)
    const value = Buffer.from(row.value)
    const damaged = how === "flip"
      ? Buffer.concat([value.subarray(0, -1), Buffer.from([value[value.length - 1]! ^ 0x01])])
      : value.subarray(0, value.length - 1)
    yield* sql`UPDATE objects SET value = ${damaged} WHERE hash = ${key}`
  })
