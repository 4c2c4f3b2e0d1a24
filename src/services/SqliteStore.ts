/**
 * The SQLite ObjectStore: one embedded file, the fast single-machine backend (seed 004's key-value store).
 *
 *   objects(hash BLOB PRIMARY KEY  -- the raw 20-byte hash
 *           value BLOB)            -- the raw git object, "<type> <size>\0<body>", not deflated
 *   refs(name TEXT PRIMARY KEY, hash BLOB)  -- ref name → raw 20-byte hash
 *
 * The same model as PostgreSQL (SqlStore.ts), but the statements run on one better-sqlite3 connection directly
 * rather than through @effect/sql: there each statement cost ~150–290 µs of Effect machinery (prepare cache,
 * spans, fiber hops), here ~5–10 µs, and single `get`/`has` and CAS are one statement or one short transaction
 * (figures in docs/storage-backends.md). better-sqlite3 is synchronous, so every operation — a compare-and-set
 * included — is one synchronous transaction that never stays open across an await: no other fiber can slip a
 * statement into it, and no lock is held while this thread does something else.
 *
 * Between processes (two `upm` processes on one file): WAL mode, and `BEGIN IMMEDIATE` for every write
 * transaction, so a compare-and-set takes the write lock before it reads. A lock held by another process is
 * waited for briefly inside SQLite (busy_timeout, which blocks this thread) and then retried asynchronously,
 * so a long write elsewhere does not freeze this process's other fibers.
 */
import { FileSystem, Path } from "@effect/platform"
import Database from "better-sqlite3"
import { Effect, Layer, Option, Schedule, Schema } from "effect"
import { frame, type ObjectType, unframe } from "../domain/GitObject.js"
import { hashFromBytes, hashToBytes, type ObjectHash, sha1 } from "../domain/ObjectHash.js"
import { batches } from "../domain/Batches.js"
import {
  casRefusal, CorruptObject, deleteRefusal, ObjectNotFound, ObjectStore, type RefEntry, RefName, StoreError,
  type StoredObject
} from "./ObjectStore.js"
import { prefixRange } from "./SqlStore.js"

const SCHEMA_VERSION = 1

/**
 * Pragmas for the connection. WAL lets readers go on while a push writes; synchronous=NORMAL in WAL mode
 * cannot corrupt the database on a crash or power loss (at worst the last transactions before it are lost,
 * and a lost object is fetched again; refs are only ever written after their objects).
 */
const PRAGMAS = [
  // Only takes effect on a new, empty file (before WAL): 16 KiB pages make bulk inserts of typical source files
  // ~1.5× faster than the default 4 KiB (fewer overflow pages per row) and the file no bigger.
  "page_size = 16384",
  "journal_mode = WAL",
  "wal_autocheckpoint = 256", // pages: with 16 KiB pages, a checkpoint every ~4 MiB of WAL, as SQLite's default does with 4 KiB
  "synchronous = NORMAL",
  `busy_timeout = ${50}`, // ms waited inside SQLite (blocking this thread) before SQLITE_BUSY; then retried below
  "cache_size = -16384", // 16 MiB of page cache
  "temp_store = MEMORY"
]

/** How long, in all, an operation retries while another process holds the lock (~10 s). */
const busyRetry = Schedule.spaced("20 millis").pipe(Schedule.intersect(Schedule.recurs(500)))

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

/** Writes are committed in transactions of at most this many rows / bytes, letting other fibers run in between. */
const TX_ROWS = 1000
const TX_BYTES = 16 * 1024 * 1024

const isRefName = Schema.is(RefName)

const key = (hash: ObjectHash): Buffer => {
  const bytes = hashToBytes(hash)
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length)
}

/** A raw hash read back from the database: 20 bytes, else the row is not ours to trust. */
const rawHash = (value: unknown): ObjectHash | undefined =>
  value instanceof Uint8Array && value.length === 20 ? hashFromBytes(value) : undefined

const codeOf = (e: unknown): string | undefined =>
  typeof e === "object" && e !== null && "code" in e && typeof e.code === "string" ? e.code : undefined

/** Another connection (process) holds the lock: worth retrying. */
const isBusy = (e: StoreError) => {
  const code = codeOf(e.cause)
  return code !== undefined && (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED"))
}

/**
 * Runs `f` synchronously, turning what it throws into a StoreError; retries while the database is busy (the
 * retry is only set up after a failure: building a schedule on every call would cost more than the statement).
 */
const attempt = <A>(op: StoreError["op"], f: () => A, detail?: string): Effect.Effect<A, StoreError> => {
  const once = Effect.try({
    try: f,
    catch: (cause) => new StoreError({ op, cause, ...(detail === undefined ? {} : { detail }) })
  })
  return Effect.catchIf(once, isBusy, () => Effect.retry(once, { schedule: busyRetry, while: isBusy }))
}

/** Opens the database, sets the pragmas and brings the schema up to date (or refuses a newer one). */
const open = (filename: string) =>
  Effect.acquireRelease(
    attempt("open", () => new Database(filename), filename),
    (db) => Effect.sync(() => db.close())
  ).pipe(
    Effect.tap((db) =>
      attempt("open", () => {
        for (const pragma of PRAGMAS) db.pragma(pragma)
        return db.transaction(() => {
          const version = Number(db.pragma("user_version", { simple: true }))
          if (version > SCHEMA_VERSION) return version
          for (const [i, statements] of MIGRATIONS.entries()) {
            if (i < version) continue
            for (const statement of statements) db.exec(statement)
          }
          if (version < SCHEMA_VERSION) db.pragma(`user_version = ${SCHEMA_VERSION}`)
          return version
        }).immediate()
      }, filename).pipe(
        Effect.filterOrFail(
          (version) => version <= SCHEMA_VERSION,
          (version) =>
            new StoreError({
              op: "open",
              detail: `the database has upm schema version ${version}, written by a newer upm; this one knows up to ${SCHEMA_VERSION}`,
              cause: null
            })
        )
      ))
  )

/** The store over an open better-sqlite3 connection (schema in place). */
const makeOn = (db: Database.Database) =>
  Effect.sync(() => {
    const statements = {
      get: db.prepare<[Buffer], unknown>("SELECT value FROM objects WHERE hash = ?").pluck(),
      has: db.prepare<[Buffer], unknown>("SELECT 1 FROM objects WHERE hash = ?").pluck(),
      insert: db.prepare<[Buffer, Buffer]>("INSERT INTO objects (hash, value) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING"),
      listObjects: db.prepare<[], unknown>("SELECT hash FROM objects ORDER BY hash").pluck(),
      readRef: db.prepare<[string], unknown>("SELECT hash FROM refs WHERE name = ?").pluck(),
      refsFrom: db.prepare<[string], { readonly name: unknown; readonly hash: unknown }>(
        "SELECT name, hash FROM refs WHERE name >= ? ORDER BY name"
      ),
      refsBetween: db.prepare<[string, string], { readonly name: unknown; readonly hash: unknown }>(
        "SELECT name, hash FROM refs WHERE name >= ? AND name < ? ORDER BY name"
      ),
      upsertRef: db.prepare<[string, Buffer]>(
        "INSERT INTO refs (name, hash) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET hash = excluded.hash"
      ),
      deleteRef: db.prepare<[string]>("DELETE FROM refs WHERE name = ?")
    }

    interface Row {
      readonly key: Buffer
      readonly value: Buffer
    }
    const rowOf = (type: ObjectType, body: Uint8Array): Row & { readonly hash: ObjectHash } => {
      const value = frame(type, body)
      const hash = sha1(value)
      return { hash, key: key(hash), value: Buffer.from(value.buffer, value.byteOffset, value.length) }
    }
    const insertAll = db.transaction((rows: ReadonlyArray<Row>) => {
      for (const row of rows) statements.insert.run(row.key, row.value)
    })

    const putMany = (objects: ReadonlyArray<StoredObject>) =>
      Effect.suspend(() => {
        const rows = objects.map((o) => rowOf(o.type, o.body))
        const hashes: ReadonlyArray<ObjectHash> = rows.map((r) => r.hash)
        const chunks = batches(rows, (r) => r.value.length, TX_ROWS, TX_BYTES)
        return Effect.forEach(chunks, (chunk, i) =>
          Effect.zipRight(
            i === 0 ? Effect.void : Effect.yieldNow(),
            attempt("put", () => insertAll.immediate(chunk))
          ), { discard: true }).pipe(Effect.as(hashes))
      })

    const put = (type: ObjectType, body: Uint8Array) =>
      Effect.suspend(() => {
        const row = rowOf(type, body)
        return Effect.as(attempt("put", () => statements.insert.run(row.key, row.value), `writing ${row.hash}`), row.hash)
      })

    const get = (hash: ObjectHash) =>
      Effect.flatMap(
        attempt("get", () => statements.get.get(key(hash)), `reading ${hash}`),
        (value): Effect.Effect<StoredObject, ObjectNotFound | CorruptObject> => {
          if (value === undefined) return Effect.fail(new ObjectNotFound({ hash }))
          if (!(value instanceof Uint8Array)) return Effect.fail(new CorruptObject({ hash, detail: "the stored value is not a blob" }))
          const parts = unframe(value)
          if (parts._tag === "Left") {
            return Effect.fail(new CorruptObject({ hash, detail: `${parts.left.reason}: ${parts.left.detail}` }))
          }
          const actual = sha1(value)
          if (actual !== hash) return Effect.fail(new CorruptObject({ hash, detail: `content hashes to ${actual}` }))
          const body = parts.right.body // a plain Uint8Array view, like every other store returns
          return Effect.succeed({ type: parts.right.type, body: new Uint8Array(body.buffer, body.byteOffset, body.length) })
        }
      )

    const has = (hash: ObjectHash) => attempt("has", () => statements.has.get(key(hash)) !== undefined)

    // One lookup per hash on the primary key (~µs each), in slices with other fibers let in between.
    const missing = (hashes: ReadonlyArray<ObjectHash>) =>
      Effect.forEach(batches(hashes, () => 0, 4 * TX_ROWS, Infinity), (slice, i) =>
        Effect.zipRight(
          i === 0 ? Effect.void : Effect.yieldNow(),
          attempt("missing", () => slice.filter((h) => statements.has.get(key(h)) === undefined))
        )).pipe(Effect.map((slices) => slices.flat()))

    /**
     * The ref's value as stored; a row that is not a 20-byte hash is an error, not a value. (Inside these
     * synchronous functions a throw is how a better-sqlite3 transaction is rolled back; `attempt` turns it into
     * a StoreError.)
     */
    const readRefSync = (name: RefName): Option.Option<ObjectHash> => {
      const value = statements.readRef.get(name)
      if (value === undefined) return Option.none()
      const hash = rawHash(value)
      if (hash === undefined) throw new Error(`ref ${name} does not hold a 20-byte hash`)
      return Option.some(hash)
    }

    const listRefs = (prefix: string) =>
      Option.match(prefixRange(prefix), {
        onNone: () => Effect.succeed<ReadonlyArray<RefEntry>>([]),
        onSome: ({ from, to }) =>
          attempt("listRefs", () => {
            const rows = to === undefined ? statements.refsFrom.all(from) : statements.refsBetween.all(from, to)
            return rows.map((row): RefEntry => {
              const hash = rawHash(row.hash)
              if (typeof row.name !== "string" || !isRefName(row.name) || hash === undefined) {
                throw new Error(`a refs row is not a ref name and a 20-byte hash: ${String(row.name)}`)
              }
              return { name: row.name, hash }
            })
          })
      })

    // Compare-and-set: read and write in one IMMEDIATE transaction (the write lock is taken at BEGIN, so no other
    // connection can write between the read and the write), judged by the rule every store shares.
    const setRefTx = db.transaction((name: RefName, expected: Option.Option<ObjectHash>, next: ObjectHash) => {
      const refusal = casRefusal(name, expected, readRefSync(name), next)
      if (refusal === undefined) statements.upsertRef.run(name, key(next))
      return refusal === "Same" ? undefined : refusal
    })
    const setRef = (name: RefName, expected: Option.Option<ObjectHash>, next: ObjectHash) =>
      Effect.flatMap(attempt("setRef", () => setRefTx.immediate(name, expected, next), name), (refusal) =>
        refusal === undefined ? Effect.void : Effect.fail(refusal))

    const deleteRefTx = db.transaction((name: RefName, expected: ObjectHash) => {
      const refusal = deleteRefusal(name, expected, readRefSync(name))
      if (refusal === undefined) statements.deleteRef.run(name)
      return refusal
    })
    const deleteRef = (name: RefName, expected: ObjectHash) =>
      Effect.flatMap(attempt("deleteRef", () => deleteRefTx.immediate(name, expected), name), (refusal) =>
        refusal === undefined ? Effect.void : Effect.fail(refusal))

    const listObjects = () =>
      attempt("listObjects", () =>
        statements.listObjects.all().map((value) => {
          const hash = rawHash(value)
          if (hash === undefined) throw new Error("an objects row has no 20-byte hash")
          return hash
        }))

    return ObjectStore.of({
      put,
      putMany,
      get,
      has,
      missing,
      readRef: (name) => attempt("readRef", () => readRefSync(name), name),
      listRefs,
      setRef,
      deleteRef,
      listObjects
    })
  })

/**
 * The SQLite store in the file at `filename` (created with its directory if missing; `:memory:` for a
 * private in-memory database). One connection per layer; open one layer per file in a process.
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
      return yield* Effect.flatMap(open(filename), makeOn)
    })
  )
