/**
 * The key-value model of seed 004 on SQL through @effect/sql, for the PostgreSQL layer (SQLite keeps the same
 * tables but runs its statements on better-sqlite3 directly, SqliteStore.ts; `prefixRange` is shared):
 *
 *   objects(hash BLOB/bytea PRIMARY KEY  -- the raw 20-byte hash
 *           value BLOB/bytea)            -- the raw git object, "<type> <size>\0<body>", not deflated
 *   refs(name TEXT PRIMARY KEY           -- "refs/tags/<owner>/<name>/v<version>", byte-ordered
 *        hash BLOB/bytea)                -- the raw 20-byte hash it points at
 *
 * The value is what git hashes, so `get` verifies it with one SHA-1 and `getFramed` is a copy. It is stored
 * uncompressed: deflate is most of the cost of an import (docs/storage-backends.md has the figures).
 *
 * Only the statements live here; each layer opens its client, creates its schema and says how big a batch is.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlError from "@effect/sql/SqlError"
import { Chunk, Deferred, Effect, Option, Queue, Schedule, Schema } from "effect"
import { type ObjectType, unframe, frame } from "../domain/GitObject.js"
import { hashFromBytes, hashToBytes, type ObjectHash, sha1 } from "../domain/ObjectHash.js"
import { batches } from "../domain/Batches.js"
import {
  casRefusal, conflict, CorruptObject, deleteRefusal, isImmutableRef, ObjectNotFound, ObjectStore, RefName, StoreError, type StoredObject
} from "./ObjectStore.js"

export interface SqlStoreOptions {
  /** Most rows in one multi-row INSERT or IN list (bound parameters are limited per statement). */
  readonly maxRows: number
  /** Most value bytes in one multi-row INSERT. */
  readonly maxBytes: number
  /** How many statements of one batch run at once, each on a connection of the pool (default 4). */
  readonly parallel?: number
  /** Whether a failed transaction may be retried (PostgreSQL deadlock / serialization failure). */
  readonly retryable: (error: SqlError.SqlError) => boolean
}

// Rows are outside input like any other: decoded, never cast.
const RawHash = Schema.Uint8ArrayFromSelf.pipe(
  Schema.filter((b) => b.length === 20 || `a raw hash is 20 bytes, got ${b.length}`)
)
const ValueRow = Schema.Struct({ value: Schema.Uint8ArrayFromSelf })
const HashRow = Schema.Struct({ hash: RawHash })
const RefRow = Schema.Struct({ name: RefName, hash: RawHash })
const NameRow = Schema.Struct({ name: Schema.String })
const decodeValues = Schema.decodeUnknown(Schema.Array(ValueRow))
const decodeHashes = Schema.decodeUnknown(Schema.Array(HashRow))
const decodeRefs = Schema.decodeUnknown(Schema.Array(RefRow))
const decodeNames = Schema.decodeUnknown(Schema.Array(NameRow))

interface Row {
  readonly hash: ObjectHash
  readonly key: Buffer
  readonly value: Buffer
}

const buf = (bytes: Uint8Array): Buffer => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length)
const key = (hash: ObjectHash): Buffer => buf(hashToBytes(hash))

/**
 * The bounds of a prefix scan in byte order. Ref names are ASCII (RefName), so a prefix with any other
 * character matches nothing, and for an ASCII prefix every match lies in [prefix, prefix with its last
 * character incremented) under both SQLite's BINARY and PostgreSQL's "C" collation.
 */
export const prefixRange = (prefix: string): Option.Option<{ readonly from: string; readonly to: string | undefined }> => {
  if (!/^[\x20-\x7e]*$/.test(prefix)) return Option.none()
  if (prefix.length === 0) return Option.some({ from: "", to: undefined })
  const last = prefix.charCodeAt(prefix.length - 1)
  return Option.some({ from: prefix, to: prefix.slice(0, -1) + String.fromCharCode(last + 1) })
}

export { batches }

/** A batch is not split into statements of fewer rows than this (each statement is a round trip). */
const MIN_STATEMENT_ROWS = 64

/** The ObjectStore over the current SqlClient; the tables must exist. */
export const makeSqlStore = (options: SqlStoreOptions) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const parallel = options.parallel ?? 4

    const fail = (op: StoreError["op"], detail?: string) => (cause: unknown) =>
      new StoreError({ op, cause, ...(detail === undefined ? {} : { detail }) })

    // A transaction that lost a deadlock or serialization race did nothing: run it again.
    const transaction = <A, E>(effect: Effect.Effect<A, E | SqlError.SqlError>) =>
      sql.withTransaction(effect).pipe(
        Effect.retry({
          while: (e) => isSqlError(e) && options.retryable(e),
          schedule: Schedule.exponential("5 millis").pipe(Schedule.jittered, Schedule.intersect(Schedule.recurs(8)))
        })
      )

    const insertRows = (rows: ReadonlyArray<Row>) =>
      sql`INSERT INTO objects ${sql.insert(rows.map((r) => ({ hash: r.key, value: r.value })))} ON CONFLICT (hash) DO NOTHING`

    // A batch is written as several statements at once, each on its own pooled connection and atomic on its own
    // (objects are content-addressed: a batch cut short leaves only whole objects, which a retry skips). The rows
    // are sorted and the statements cover disjoint ranges, each inserting in ascending key order, so two nodes
    // storing overlapping graphs at once wait for each other instead of deadlocking.
    const writeRows = (rows: ReadonlyArray<Row>) => {
      const unique = new Map<ObjectHash, Row>()
      for (const row of rows) unique.set(row.hash, row)
      const sorted = [...unique.values()].sort((a, b) => (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : 0))
      const perStatement = Math.min(options.maxRows, Math.max(MIN_STATEMENT_ROWS, Math.ceil(sorted.length / parallel)))
      const chunks = batches(sorted, (r) => r.value.length, perStatement, options.maxBytes / parallel)
      return Effect.forEach(chunks, insertRows, { concurrency: parallel, discard: true }).pipe(
        Effect.mapError(fail("put"))
      )
    }

    const rowOf = (type: ObjectType, body: Uint8Array): Row => {
      const value = frame(type, body)
      const hash = sha1(value)
      return { hash, key: key(hash), value: buf(value) }
    }

    // Group commit: puts from concurrent fibers (an import stores 32 files at once, a server several pushes) are
    // written together, one transaction and one multi-row INSERT per batch, instead of one transaction each.
    // Each put returns once the transaction holding its row has committed.
    const pending = yield* Queue.bounded<{ readonly row: Row; readonly done: Deferred.Deferred<void, StoreError> }>(
      options.maxRows
    )
    yield* Effect.addFinalizer(() => Queue.shutdown(pending))
    yield* Effect.forkScoped(Effect.forever(Effect.gen(function* () {
      const batch = yield* Queue.takeBetween(pending, 1, options.maxRows)
      const exit = yield* Effect.exit(writeRows(Chunk.toReadonlyArray(batch).map((p) => p.row)))
      yield* Effect.forEach(batch, (p) => Deferred.done(p.done, exit), { discard: true })
    })))

    const put = (type: ObjectType, body: Uint8Array) =>
      Effect.gen(function* () {
        const row = rowOf(type, body)
        const done = yield* Deferred.make<void, StoreError>()
        yield* Queue.offer(pending, { row, done })
        yield* Deferred.await(done)
        return row.hash
      })

    const putMany = (objects: ReadonlyArray<StoredObject>) =>
      Effect.suspend(() => {
        const rows = objects.map((o) => rowOf(o.type, o.body))
        const hashes: ReadonlyArray<ObjectHash> = rows.map((r) => r.hash)
        return rows.length === 0 ? Effect.succeed(hashes) : Effect.as(writeRows(rows), hashes)
      })

    const get = (hash: ObjectHash) =>
      sql`SELECT value FROM objects WHERE hash = ${key(hash)}`.pipe(
        Effect.flatMap(decodeValues),
        Effect.mapError(fail("get")),
        Effect.flatMap((rows): Effect.Effect<StoredObject, ObjectNotFound | CorruptObject> => {
          const row = rows[0]
          if (row === undefined) return Effect.fail(new ObjectNotFound({ hash }))
          const parts = unframe(row.value)
          if (parts._tag === "Left") {
            return Effect.fail(new CorruptObject({ hash, detail: `${parts.left.reason}: ${parts.left.detail}` }))
          }
          const actual = sha1(row.value)
          if (actual !== hash) return Effect.fail(new CorruptObject({ hash, detail: `content hashes to ${actual}` }))
          const body = parts.right.body // a plain Uint8Array view, like every other store returns
          return Effect.succeed({ type: parts.right.type, body: new Uint8Array(body.buffer, body.byteOffset, body.length) })
        })
      )

    const has = (hash: ObjectHash) =>
      sql`SELECT 1 AS found FROM objects WHERE hash = ${key(hash)}`.pipe(
        Effect.map((rows) => rows.length > 0),
        Effect.mapError(fail("has"))
      )

    const missing = (hashes: ReadonlyArray<ObjectHash>) =>
      Effect.forEach(
        batches(hashes, () => 0, options.maxRows, Infinity),
        (chunk) =>
          sql`SELECT hash FROM objects WHERE hash IN ${sql.in(chunk.map(key))}`.pipe(Effect.flatMap(decodeHashes))
      ).pipe(
        Effect.map((results) => {
          const present = new Set<string>()
          for (const rows of results) for (const row of rows) present.add(hashFromBytes(row.hash))
          return hashes.filter((h) => !present.has(h))
        }),
        Effect.mapError(fail("missing"))
      )

    const readRefWith = (name: RefName) =>
      sql`SELECT hash FROM refs WHERE name = ${name}`.pipe(
        Effect.flatMap(decodeHashes),
        Effect.map((rows) => Option.map(Option.fromNullable(rows[0]), (row) => hashFromBytes(row.hash)))
      )

    const readRef = (name: RefName) => readRefWith(name).pipe(Effect.mapError(fail("readRef")))

    const listRefs = (prefix: string) =>
      Option.match(prefixRange(prefix), {
        onNone: () => Effect.succeed([]),
        onSome: ({ from, to }) =>
          (to === undefined
            ? sql`SELECT name, hash FROM refs WHERE name >= ${from} ORDER BY name`
            : sql`SELECT name, hash FROM refs WHERE name >= ${from} AND name < ${to} ORDER BY name`
          ).pipe(
            Effect.flatMap(decodeRefs),
            Effect.map((rows) => rows.map((row) => ({ name: row.name, hash: hashFromBytes(row.hash) }))),
            Effect.mapError(fail("listRefs"))
          )
      })

    // Compare-and-set: one conditional write, then (only when it wrote nothing) a read inside the same
    // transaction, judged by the rule every store shares (casRefusal: already holds `next` is a success, so
    // sealing is idempotent; an existing tag never changes). The write comes first so SQLite takes its write
    // lock at once instead of upgrading a read lock, and PostgreSQL's INSERT … ON CONFLICT / UPDATE … WHERE
    // wait for a concurrent writer of the same row and then see its result: of two racing writers exactly
    // one writes.
    const setRef = (name: RefName, expected: Option.Option<ObjectHash>, next: ObjectHash) =>
      transaction(Effect.gen(function* () {
        const written = yield* Option.match(expected, {
          onNone: () =>
            sql`INSERT INTO refs (name, hash) VALUES (${name}, ${key(next)}) ON CONFLICT (name) DO NOTHING RETURNING name`,
          onSome: (old) =>
            isImmutableRef(name)
              ? Effect.succeed([])
              : sql`UPDATE refs SET hash = ${key(next)} WHERE name = ${name} AND hash = ${key(old)} RETURNING name`
        }).pipe(Effect.flatMap(decodeNames))
        if (written.length > 0) return Option.none()
        const actual = yield* readRefWith(name)
        const refusal = casRefusal(name, expected, actual, next)
        // undefined: the write should have applied but the row changed between the two statements
        // (a concurrent delete); report it as the conflict it is.
        return refusal === "Same" ? Option.none() : Option.some(refusal ?? conflict(name, expected, actual, "Mismatch"))
      })).pipe(
        Effect.mapError(fail("setRef")),
        Effect.flatMap(Option.match({ onNone: () => Effect.void, onSome: Effect.fail }))
      )

    const deleteRef = (name: RefName, expected: ObjectHash) =>
      transaction(Effect.gen(function* () {
        const deleted = isImmutableRef(name)
          ? []
          : yield* sql`DELETE FROM refs WHERE name = ${name} AND hash = ${key(expected)} RETURNING name`.pipe(
            Effect.flatMap(decodeNames)
          )
        if (deleted.length > 0) return Option.none()
        const actual = yield* readRefWith(name)
        return Option.some(deleteRefusal(name, expected, actual) ?? conflict(name, Option.some(expected), actual, "Mismatch"))
      })).pipe(
        Effect.mapError(fail("deleteRef")),
        Effect.flatMap(Option.match({ onNone: () => Effect.void, onSome: Effect.fail }))
      )

    const listObjects = () =>
      sql`SELECT hash FROM objects ORDER BY hash`.pipe(
        Effect.flatMap(decodeHashes),
        Effect.map((rows) => rows.map((row) => hashFromBytes(row.hash))),
        Effect.mapError(fail("listObjects"))
      )

    return ObjectStore.of({ put, putMany, get, has, missing, readRef, listRefs, setRef, deleteRef, listObjects })
  })

const isSqlError = (e: unknown): e is SqlError.SqlError =>
  typeof e === "object" && e !== null && "_tag" in e && e._tag === "SqlError"
