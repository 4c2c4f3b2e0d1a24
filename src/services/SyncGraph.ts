/**
 * Graph walking shared by both ends of the sync protocol: which objects below one that just arrived are still
 * missing from the local store. A child that is already stored is not trusted to be complete (a previous push
 * or pull may have been cut off below it), so stored trees are walked for missing descendants; subtrees found
 * complete are remembered for the rest of the session.
 */
import { Effect, Either } from "effect"
import { children, decodeFramed, decodeObject, type GitObject, hashOf, type ObjectType } from "../domain/GitObject.js"
import type { ObjectHash } from "../domain/ObjectHash.js"
import {
  CorruptObject, DEFAULT_MAX_OBJECT, getDecoded, getDeflated, getFramed, inflateExact, inflateFramed, missingReachable,
  ObjectStore, type StoredObject
} from "./ObjectStore.js"

export interface Needed {
  readonly hash: ObjectHash
  /** The type its parent says it has (a tree entry's mode, a tag's `type`); undefined when unknown. */
  readonly type: ObjectType | undefined
}

export const makeFrontier = Effect.gen(function* () {
  const store = yield* ObjectStore
  const complete = new Set<string>()
  /** The missing objects below `object`: its absent children, and absent descendants of its stored children. */
  const below = (object: GitObject) =>
    Effect.gen(function* () {
      const kids = new Map<ObjectHash, ObjectType>()
      for (const child of children(object)) kids.set(child.hash, child.type)
      if (kids.size === 0) return [] as ReadonlyArray<Needed>
      const absent = new Set(yield* store.missing([...kids.keys()]))
      const needed: Array<Needed> = []
      for (const [hash, type] of kids) {
        if (absent.has(hash)) {
          needed.push({ hash, type })
        } else if (type !== "blob" && !complete.has(hash)) {
          const deep = yield* missingReachable(hash).pipe(Effect.provideService(ObjectStore, store))
          if (deep.length === 0) complete.add(hash)
          for (const h of deep) needed.push({ hash: h, type: undefined })
        }
      }
      return needed as ReadonlyArray<Needed>
    })
  return { below }
})

/**
 * The objects reachable from `roots` as far as the local store knows them: what the other side has when it
 * names these roots as complete releases. Trees (and tags) that are not stored locally cannot be looked into and
 * are left out with what is below them; blobs are listed without touching the store. Bounded by `limit`.
 */
export const closure = (roots: ReadonlyArray<ObjectHash>, limit = 1_000_000) =>
  Effect.gen(function* () {
    const seen = new Set<ObjectHash>()
    let frontier: Array<{ hash: ObjectHash; type: ObjectType | undefined }> = roots.map((hash) => ({ hash, type: undefined }))
    while (frontier.length > 0 && seen.size < limit) {
      const next: Array<{ hash: ObjectHash; type: ObjectType | undefined }> = []
      for (const item of frontier) {
        if (seen.has(item.hash)) continue
        if (item.type === "blob") {
          seen.add(item.hash)
          continue
        }
        const object = yield* getDecoded(item.hash).pipe(Effect.catchTag("ObjectNotFound", () => Effect.succeed(undefined)))
        if (object === undefined) continue
        seen.add(item.hash)
        for (const child of children(object)) if (!seen.has(child.hash)) next.push(child)
      }
      frontier = next
    }
    return seen as ReadonlySet<ObjectHash>
  })

/**
 * Visits the graph below `roots` parent first (breadth first), each object once, skipping whole subgraphs whose
 * root is in `skip`. Every visited object must be stored (ObjectNotFound otherwise). This is the order in which
 * protocol v2 streams a graph: the receiver can check each object against the trees it already has.
 */
export const walkParentFirst = <E, R>(
  roots: ReadonlyArray<ObjectHash>,
  skip: ReadonlySet<ObjectHash>,
  visit: (hash: ObjectHash, framed: Uint8Array, object: GitObject) => Effect.Effect<void, E, R>
) =>
  Effect.gen(function* () {
    const seen = new Set<ObjectHash>()
    let frontier = roots.filter((h) => !skip.has(h))
    let count = 0
    while (frontier.length > 0) {
      const next: Array<ObjectHash> = []
      const level: Array<ObjectHash> = []
      for (const hash of frontier) {
        if (seen.has(hash)) continue
        seen.add(hash)
        level.push(hash)
      }
      // Read a window of objects at once (the store's latency overlaps), visit them in order.
      for (let at = 0; at < level.length; at += READ_WINDOW) {
        const window = level.slice(at, at + READ_WINDOW)
        const read = yield* readFramed(window)
        for (const [hash, framed, object] of read) {
          yield* visit(hash, framed, object)
          count++
          for (const child of children(object)) if (!skip.has(child.hash) && !seen.has(child.hash)) next.push(child.hash)
        }
      }
      frontier = next
    }
    return count
  })

/**
 * Protocol version 3 (docs/protocol.md): a SEND carries the zlib-deflated framed object. The same walk as
 * walkParentFirst, visiting each object's deflated bytes as the store keeps them: blobs (their type known from
 * the tree that names them) are neither inflated nor hashed here (the receiver hashes what it gets); trees and
 * tags are inflated, checked and decoded to find their children.
 */
export const walkParentFirstDeflated = <E, R>(
  roots: ReadonlyArray<ObjectHash>,
  skip: ReadonlySet<ObjectHash>,
  visit: (hash: ObjectHash, deflated: Uint8Array) => Effect.Effect<void, E, R>
) =>
  Effect.gen(function* () {
    const seen = new Set<ObjectHash>()
    let frontier: Array<{ readonly hash: ObjectHash; readonly type: ObjectType | undefined }> =
      roots.filter((h) => !skip.has(h)).map((hash) => ({ hash, type: undefined }))
    let count = 0
    while (frontier.length > 0) {
      const next: Array<{ readonly hash: ObjectHash; readonly type: ObjectType | undefined }> = []
      const level = frontier.filter((item) => {
        if (seen.has(item.hash)) return false
        seen.add(item.hash)
        return true
      })
      // One object at a time, visited as soon as it is read: the fs store reads small objects synchronously (a
      // fiber per read costs more), and only one object's bytes are held here whatever their size.
      for (const item of level) {
        const [hash, deflated, object] = yield* readDeflated(item)
        yield* visit(hash, deflated)
        count++
        if (object === undefined) continue
        for (const child of children(object)) if (!skip.has(child.hash) && !seen.has(child.hash)) next.push(child)
      }
      frontier = next
    }
    return count
  })

/** An object's deflated bytes as stored; decoded (and its hash checked) unless its parent says it is a blob. */
export const readDeflated = (item: { readonly hash: ObjectHash; readonly type: ObjectType | undefined }) =>
  Effect.flatMap(
    getDeflated(item.hash),
    (deflated): Effect.Effect<readonly [ObjectHash, Uint8Array, GitObject | undefined], CorruptObject> => {
      if (item.type === "blob") return Effect.succeed([item.hash, deflated, undefined] as const)
      const corrupt = (detail: string) => new CorruptObject({ hash: item.hash, detail })
      return inflateFramed(deflated, DEFAULT_MAX_OBJECT).pipe(
        Effect.mapError((e) => corrupt(`${e.reason}: ${e.detail}`)),
        Effect.flatMap(({ type, body }) => {
          const actual = hashOf(type, body)
          if (actual !== item.hash) return Effect.fail(corrupt(`content hashes to ${actual}`))
          return Either.match(decodeObject(type, body), {
            onLeft: (e) => Effect.fail(corrupt(`${e.reason}: ${e.detail}`)),
            onRight: (object) => Effect.succeed([item.hash, deflated, object] as const)
          })
        })
      )
    }
  )

/**
 * Inflates a version-3 SEND (zlib-deflated framed object) under two limits: at most `maxObjectSize` body bytes,
 * and at most `maxInflateRatio` bytes out per byte in (a few bytes of a hostile zlib stream can stand for
 * gigabytes). Also refused: a stream that does not inflate, or is followed by garbage.
 */
export const inflateSend = (
  deflated: Uint8Array,
  limits: { readonly maxObjectSize: number; readonly maxInflateRatio: number }
): Either.Either<Uint8Array, { readonly reason: "Limit" | "BadObject"; readonly detail: string }> => {
  const byRatio = Math.ceil(deflated.length * limits.maxInflateRatio)
  const max = Math.min(limits.maxObjectSize + 32, byRatio)
  return Either.mapLeft(inflateExact(deflated, max), (e) =>
    e.reason === "TooLarge"
      ? {
        reason: "Limit" as const,
        detail: byRatio < limits.maxObjectSize + 32
          ? `deflated SEND of ${deflated.length} bytes inflates past ${max} bytes (inflate ratio limit ${limits.maxInflateRatio})`
          : `deflated SEND inflates past the object size limit of ${limits.maxObjectSize} bytes`
      }
      : { reason: "BadObject" as const, detail: `deflated SEND: ${e.detail}` })
}

/** Objects read at once by walkParentFirst and readFramed callers: bounds memory to this many objects. */
export const READ_WINDOW = 64

/** Reads (concurrently) and decodes framed objects, in the order given. */
export const readFramed = (hashes: ReadonlyArray<ObjectHash>) =>
  Effect.forEach(hashes, (hash) =>
    Effect.flatMap(getFramed(hash), (framed) =>
      Either.match(decodeFramed(framed), {
        onLeft: (e) => Effect.fail(new CorruptObject({ hash, detail: `${e.reason}: ${e.detail}` })),
        onRight: (object) => Effect.succeed([hash, framed, object] as const)
      })), { concurrency: 16 })

/**
 * Objects received but not yet written, written together with `putMany` (one transaction on SQL stores,
 * synchronous small writes on the fs store) once `maxObjects` or `maxBytes` are waiting, or when the caller
 * flushes (before it waits on the network, before it looks at the store, at the end). An object that arrived
 * deflated (protocol version 3) is given with those bytes: a store with `putDeflated` keeps them as they are,
 * without compressing the object again.
 */
export const makePutBuffer = (store: ObjectStore["Type"], maxObjects = 256, maxBytes = 8 * 1024 * 1024) => {
  let pending: Array<StoredObject> = []
  let deflated: Array<{ readonly hash: ObjectHash; readonly deflated: Uint8Array }> = []
  let bytes = 0
  const putDeflatedMany = store.putDeflatedMany
  const flush = Effect.suspend(() => {
    if (pending.length === 0 && deflated.length === 0) return Effect.void
    const plain = pending
    const raw = deflated
    pending = []
    deflated = []
    bytes = 0
    return Effect.zipRight(
      plain.length === 0 ? Effect.void : Effect.asVoid(store.putMany(plain)),
      raw.length === 0 || putDeflatedMany === undefined ? Effect.void : putDeflatedMany(raw)
    )
  })
  /** `asReceived`: the object's hash and the deflated bytes it arrived as (checked to inflate to it). */
  const add = (object: StoredObject, asReceived?: { readonly hash: ObjectHash; readonly deflated: Uint8Array }) =>
    Effect.suspend(() => {
      if (asReceived !== undefined && putDeflatedMany !== undefined) {
        deflated.push(asReceived)
        bytes += asReceived.deflated.length
      } else {
        pending.push(object)
        bytes += object.body.length
      }
      return pending.length + deflated.length >= maxObjects || bytes >= maxBytes ? flush : Effect.void
    })
  return { add, flush, size: () => pending.length + deflated.length }
}
