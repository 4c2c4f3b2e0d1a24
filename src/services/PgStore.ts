/**
 * The PostgreSQL ObjectStore: for several upm server processes, on one or several hosts, sharing one database.
 * Same model and statements as SQLite (SqlStore.ts): objects(hash bytea, value bytea), refs(name text, hash bytea).
 *
 * Nothing is cached in the process: every read goes to the database, so a release sealed through one node is
 * visible through every other as soon as its transaction commits (no LISTEN/NOTIFY needed: there is nothing to
 * invalidate). Objects are immutable, so the only shared mutable state is a ref, changed by a compare-and-set in
 * a transaction whose conditional INSERT/UPDATE waits for a concurrent writer of the same row: of two nodes
 * sealing the same release at once, exactly one writes and the other finds it already sealed.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlError from "@effect/sql/SqlError"
import * as PgClient from "@effect/sql-pg/PgClient"
import { Duration, Effect, Layer, Redacted } from "effect"
import { ObjectStore, StoreError } from "./ObjectStore.js"
import { makeSqlStore } from "./SqlStore.js"

export interface PgStoreOptions {
  /** `postgresql://user:password@host:port/database?sslmode=…` */
  readonly url: string | Redacted.Redacted<string>
  /** Connections in this process's pool (default 10). */
  readonly maxConnections?: number
  /** How long to wait for a connection (default 10 s). */
  readonly connectTimeout?: Duration.DurationInput
}

export const SCHEMA_VERSION = 1

/** A constant key for pg_advisory_xact_lock: "upm" in ASCII. Serialises migrations of nodes starting at once. */
const MIGRATION_LOCK = 0x75706d

/**
 * Migration n takes the schema from version n to n + 1. Applied in order inside one transaction under the
 * advisory lock, and recorded in upm_schema_version, so starting any number of nodes at once is safe and a
 * started database is never migrated twice.
 *
 * `value` uses STORAGE EXTERNAL: stored out of line without pglz compression, which costs CPU on every write
 * and saves little on package contents that are often already compressed (see docs/storage-backends.md).
 * refs are compared byte-wise (COLLATE "C"), as git and the other stores order them.
 */
const MIGRATIONS: ReadonlyArray<ReadonlyArray<string>> = [
  [
    `CREATE TABLE objects (
       hash bytea PRIMARY KEY CHECK (octet_length(hash) = 20),
       value bytea NOT NULL
     )`,
    "ALTER TABLE objects ALTER COLUMN value SET STORAGE EXTERNAL",
    `CREATE TABLE refs (
       name text COLLATE "C" PRIMARY KEY,
       hash bytea NOT NULL CHECK (octet_length(hash) = 20)
     )`
  ]
]

const migrate = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  return yield* sql.withTransaction(Effect.gen(function* () {
    yield* sql`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`
    yield* sql`CREATE TABLE IF NOT EXISTS upm_schema_version (version integer NOT NULL)`
    const [row] = yield* sql<{ readonly version: number | null }>`SELECT max(version) AS version FROM upm_schema_version`
    const version = row?.version ?? 0
    if (version > SCHEMA_VERSION) {
      return yield* new StoreError({
        op: "open",
        detail: `the database has upm schema version ${version}, written by a newer upm; this one knows up to ${SCHEMA_VERSION}`,
        cause: null
      })
    }
    for (const [i, statements] of MIGRATIONS.entries()) {
      if (i < version) continue
      for (const statement of statements) yield* sql.unsafe(statement)
      yield* sql`INSERT INTO upm_schema_version (version) VALUES (${i + 1})`
    }
    return version
  }))
})

/** Deadlock and serialization failures: the transaction did nothing and may run again. */
const retryable = (e: SqlError.SqlError): boolean => {
  const cause: unknown = e.cause
  return typeof cause === "object" && cause !== null && "code" in cause &&
    (cause.code === "40P01" || cause.code === "40001")
}

/** The store over an open SqlClient on PostgreSQL; migrates the schema first. */
export const makePg = Effect.gen(function* () {
  const from = yield* migrate.pipe(Effect.catchTag("SqlError", (cause) => new StoreError({ op: "open", detail: "migrating the schema", cause })))
  if (from < SCHEMA_VERSION) yield* Effect.logInfo("postgres store schema migrated", { from, to: SCHEMA_VERSION })
  return yield* makeSqlStore({
    // PostgreSQL binds at most 65535 parameters per statement; two per row.
    maxRows: 1000,
    maxBytes: 16 * 1024 * 1024,
    retryable
  })
})

export const layerPg = (options: PgStoreOptions): Layer.Layer<ObjectStore, StoreError> =>
  Layer.scoped(
    ObjectStore,
    Effect.gen(function* () {
      const url = typeof options.url === "string" ? Redacted.make(options.url) : options.url
      const client = yield* PgClient.make({
        url,
        maxConnections: options.maxConnections ?? 10,
        connectTimeout: options.connectTimeout ?? Duration.seconds(10),
        applicationName: "upm"
      }).pipe(Effect.mapError((cause) => new StoreError({ op: "open", detail: "connecting to PostgreSQL", cause })))
      return yield* makePg.pipe(Effect.provideService(SqlClient.SqlClient, client))
    })
  ).pipe(Layer.provide(Reactivity.layer))
