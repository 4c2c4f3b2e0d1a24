/**
 * Graph walking shared by both ends of the sync protocol: which objects below one that just arrived are still
 * missing from the local store. A child that is already stored is not trusted to be complete (a previous push
 * or pull may have been cut off below it), so stored trees are walked for missing descendants; subtrees found
 * complete are remembered for the rest of the session.
 */
import { Effect, Either } from "effect"
import { children, decodeFramed, type GitObject, type ObjectType } from "../domain/GitObject.js"
import type { ObjectHash } from "../domain/ObjectHash.js"
import { CorruptObject, getDecoded, getFramed, missingReachable, ObjectStore, type StoredObject } from "./ObjectStore.js"

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
 * parallel files on the fs store) once `maxObjects` or `maxBytes` are waiting, or when the caller flushes
 * (before it waits on the network, before it looks at the store, at the end).
 */
export const makePutBuffer = (store: ObjectStore["Type"], maxObjects = 256, maxBytes = 8 * 1024 * 1024) => {
  let pending: Array<StoredObject> = []
  let bytes = 0
  const flush = Effect.suspend(() => {
    if (pending.length === 0) return Effect.void
    const batch = pending
    pending = []
    bytes = 0
    return Effect.asVoid(store.putMany(batch))
  })
  const add = (object: StoredObject) =>
    Effect.suspend(() => {
      pending.push(object)
      bytes += object.body.length
      return pending.length >= maxObjects || bytes >= maxBytes ? flush : Effect.void
    })
  return { add, flush, size: () => pending.length }
}
