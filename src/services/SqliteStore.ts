/**
 * The SQLite ObjectStore: one embedded file, the fast single-machine backend (seed 004's key-value store).
 * Objects keyed by their raw 20-byte hash, refs by name; the statements are shared with PostgreSQL in
 * SqlStore.ts. One connection per layer (better-sqlite3 is synchronous): writes from this process are
 * serialised by the client, writes from other processes wait on SQLite's lock (busy_timeout).
 */
import { FileSystem, Path } from "@effect/platform"
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import { Effect, Layer } from "effect"
import { ObjectStore, StoreError } from "./ObjectStore.js"
import { makeSqlStore } from "./SqlStore.js"

const SCHEMA_VERSION = 1

/**
 * Pragmas for the one connection. WAL lets readers go on while a push writes; synchronous=NORMAL in WAL mode
 * cannot corrupt the database on a crash or power loss (at worst the last transactions before it are lost,
 * and a lost object is fetched again; refs are only ever written after their objects).
 */
const PRAGMAS = [
  "PRAGMA journal_mode = WAL",
  "PRAGMA synchronous = NORMAL",
  "PRAGMA busy_timeout = 10000",
  "PRAGMA cache_size = -16384", // 16 MiB of page cache
  "PRAGMA temp_store = MEMORY"
]

/**
 * objects is a rowid table with a unique key rather than WITHOUT ROWID: most objects are bigger than the
 * 1/20 of a page where SQLite advises against WITHOUT ROWID. refs are small rows: WITHOUT ROWID.
 */
const MIGRATIONS: ReadonlyArray<ReadonlyArray<string>> = [
  [
    "CREATE TABLE IF NOT EXISTS objects (hash BLOB NOT NULL PRIMARY KEY CHECK (length(hash) = 20), value BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS refs (name TEXT NOT NULL PRIMARY KEY, hash BLOB NOT NULL CHECK (length(hash) = 20)) WITHOUT ROWID"
  ]
]

const migrate = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  for (const pragma of PRAGMAS) yield* sql.unsafe(pragma)
  yield* sql.withTransaction(Effect.gen(function* () {
    const [row] = yield* sql<{ readonly user_version: number }>`PRAGMA user_version`
    const version = row?.user_version ?? 0
    if (version > SCHEMA_VERSION) {
      return yield* Effect.fail(new StoreError({
        op: "open",
        detail: `the database has upm schema version ${version}, written by a newer upm; this one knows up to ${SCHEMA_VERSION}`,
        cause: null
      }))
    }
    for (const [i, statements] of MIGRATIONS.entries()) {
      if (i < version) continue
      for (const statement of statements) yield* sql.unsafe(statement)
    }
    if (version < SCHEMA_VERSION) yield* sql.unsafe(`PRAGMA user_version = ${SCHEMA_VERSION}`)
  }))
})

/** The store over an open SqlClient on SQLite (for callers that manage the client themselves). */
export const makeSqlite = Effect.gen(function* () {
  yield* migrate.pipe(Effect.catchTag("SqlError", (cause) => new StoreError({ op: "open", cause })))
  return yield* makeSqlStore({
    // SQLite binds at most 32766 parameters per statement; two per row.
    maxRows: 500,
    maxBytes: 16 * 1024 * 1024,
    retryable: () => false
  })
})

/**
 * The SQLite store in the file at `filename` (created with its directory if missing; `:memory:` for a
 * private in-memory database).
 */
export const layerSqlite = (filename: string): Layer.Layer<ObjectStore, StoreError, FileSystem.FileSystem | Path.Path> =>
  Layer.scoped(
    ObjectStore,
    Effect.gen(function* () {
      if (filename !== ":memory:") {
        const fs = yield* FileSystem.FileSystem
        const path = yield* Path.Path
        yield* fs.makeDirectory(path.dirname(path.resolve(filename)), { recursive: true }).pipe(
          Effect.mapError((cause) => new StoreError({ op: "open", detail: filename, cause }))
        )
      }
      // better-sqlite3 throws from its constructor when the file cannot be opened: that is an error
      // about the path the user gave, not a bug, so it becomes a StoreError here.
      const client = yield* SqliteClient.make({ filename }).pipe(
        Effect.catchAllDefect((cause) => new StoreError({ op: "open", detail: filename, cause }))
      )
      return yield* makeSqlite.pipe(Effect.provideService(SqlClient.SqlClient, client))
    })
  ).pipe(Layer.provide(Reactivity.layer))
