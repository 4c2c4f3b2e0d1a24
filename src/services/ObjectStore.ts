/**
 * The ObjectStore: git objects by hash, and refs. One contract, several layers:
 * `layerMemory` here, `layerFs` (bare git repository) in FsStore.ts, SQLite and PostgreSQL in their own modules.
 * Every layer passes test/services/ObjectStoreConformance.ts.
 */
import { Context, Effect, Either, HashMap, Layer, Option, Ref, Schema } from "effect"
import {
  children, decodeObject, frame, type GitObject, hashOf, InvalidObject, type ObjectType, unframe
} from "../domain/GitObject.js"
import { ObjectHash } from "../domain/ObjectHash.js"
import { deflateSync, inflateSync } from "node:zlib"

// ---------------------------------------------------------------------------------------------
// Errors

export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  op: Schema.Literal("get", "put", "has", "missing", "readRef", "listRefs", "setRef", "deleteRef", "open", "listObjects"),
  detail: Schema.optional(Schema.String),
  cause: Schema.Defect
}) {}

export class ObjectNotFound extends Schema.TaggedError<ObjectNotFound>()("ObjectNotFound", {
  hash: ObjectHash
}) {}

/** A stored object whose bytes do not hash to its name, do not inflate, or do not decode. */
export class CorruptObject extends Schema.TaggedError<CorruptObject>()("CorruptObject", {
  hash: ObjectHash,
  detail: Schema.String
}) {}

/**
 * A compare-and-set found another value than expected. `actual` is what the ref holds now.
 * `reason` is "Immutable" when the ref is a tag (`refs/tags/…`), which no setRef/deleteRef may change once
 * written, whatever `expected` says; absent (or "Mismatch") for an ordinary compare-and-set failure.
 */
export class RefConflict extends Schema.TaggedError<RefConflict>()("RefConflict", {
  name: Schema.String,
  expected: Schema.optional(ObjectHash),
  actual: Schema.optional(ObjectHash),
  reason: Schema.optional(Schema.Literal("Mismatch", "Immutable"))
}) {}

/** A graph could not be sealed because objects it reaches are not stored yet. */
export class IncompleteGraph extends Schema.TaggedError<IncompleteGraph>()("IncompleteGraph", {
  root: ObjectHash,
  missing: Schema.Number
}) {}

// ---------------------------------------------------------------------------------------------
// The contract

/** A ref name: `refs/…`, slash-separated segments that git accepts (no `..`, no control chars, no `.lock`). */
export const RefName = Schema.String.pipe(
  Schema.filter((s) =>
    /^refs\/([A-Za-z0-9._+@-]+\/)*[A-Za-z0-9._+@-]+$/.test(s) &&
    !s.split("/").some((seg) => seg.startsWith(".") || seg.endsWith(".lock") || seg.endsWith(".")) &&
    !s.includes("..") && s.length <= 1024 ||
    `"${s}" is not a valid ref name`
  ),
  Schema.brand("RefName")
)
export type RefName = typeof RefName.Type

/**
 * Tags are immutable in every store: once `refs/tags/…` holds a hash, no setRef can change it and no deleteRef
 * can remove it (a RefConflict with reason "Immutable"). Release refs live there, so a published version can never
 * point at other content, even through a caller that passes the right `expected` value.
 */
export const isImmutableRef = (name: string): boolean => name.startsWith("refs/tags/")

export interface RefEntry {
  readonly name: RefName
  readonly hash: ObjectHash
}

export interface StoredObject {
  readonly type: ObjectType
  readonly body: Uint8Array
}

export class ObjectStore extends Context.Tag("upm/ObjectStore")<ObjectStore, {
  /** Stores an object; idempotent. Returns its hash. */
  readonly put: (type: ObjectType, body: Uint8Array) => Effect.Effect<ObjectHash, StoreError>
  /** Stores many objects at once (one transaction where the backend has them). */
  readonly putMany: (objects: ReadonlyArray<StoredObject>) => Effect.Effect<ReadonlyArray<ObjectHash>, StoreError>
  /** The object, its framing checked and its hash verified. */
  readonly get: (hash: ObjectHash) => Effect.Effect<StoredObject, ObjectNotFound | CorruptObject | StoreError>
  readonly has: (hash: ObjectHash) => Effect.Effect<boolean, StoreError>
  /** The given hashes that are not stored, in input order. */
  readonly missing: (hashes: ReadonlyArray<ObjectHash>) => Effect.Effect<ReadonlyArray<ObjectHash>, StoreError>
  readonly readRef: (name: RefName) => Effect.Effect<Option.Option<ObjectHash>, StoreError>
  /** Refs whose name starts with `prefix` (e.g. `refs/tags/alice/`), sorted by name. */
  readonly listRefs: (prefix: string) => Effect.Effect<ReadonlyArray<RefEntry>, StoreError>
  /**
   * Atomically sets `name` to `next` if it currently holds `expected` (None: does not exist).
   * Setting a ref to the value it already holds succeeds whatever `expected` says, so sealing is idempotent;
   * any other mismatch is a RefConflict carrying the actual value. A tag (`isImmutableRef`) that exists can never
   * be changed: RefConflict with reason "Immutable" even when `expected` matches.
   */
  readonly setRef: (
    name: RefName,
    expected: Option.Option<ObjectHash>,
    next: ObjectHash
  ) => Effect.Effect<void, RefConflict | StoreError>
  /** Atomically deletes `name` if it holds `expected`. Tags (`isImmutableRef`) are refused with reason "Immutable". */
  readonly deleteRef: (name: RefName, expected: ObjectHash) => Effect.Effect<void, RefConflict | StoreError>
  /** Every stored object's hash (for fsck, copy and gc). A stream would be nicer; stores are walked in batches. */
  readonly listObjects: () => Effect.Effect<ReadonlyArray<ObjectHash>, StoreError>
  /**
   * Optional: the object exactly as stored, zlib-deflated framed bytes (git's loose-object format), neither
   * inflated nor verified, so the sync protocol can serve it without recompressing (the receiver hashes what it
   * gets anyway). Stores that keep objects uncompressed leave it out; use `getDeflated` below, which falls back.
   */
  readonly getDeflated?: (hash: ObjectHash) => Effect.Effect<Uint8Array, ObjectNotFound | StoreError>
  /**
   * Optional: stores a zlib-deflated framed object as it arrived, without recompressing it. It is inflated once
   * (at most `maxSize` body bytes) to compute and check its hash; anything that does not inflate or frame is an
   * InvalidObject. Use `putDeflated` below, which falls back to inflate + put.
   */
  readonly putDeflated?: (
    deflated: Uint8Array,
    maxSize?: number
  ) => Effect.Effect<ObjectHash, InvalidObject | StoreError>
  /**
   * Optional: stores zlib-deflated framed objects whose hashes the caller has already computed from their inflated
   * bytes (the sync protocol inflates every deflated SEND to hash it), as they are: no second inflate, no
   * recompression. Reads still verify every object against its hash.
   */
  readonly putDeflatedMany?: (
    objects: ReadonlyArray<{ readonly hash: ObjectHash; readonly deflated: Uint8Array }>
  ) => Effect.Effect<void, StoreError>
}>() {}

// ---------------------------------------------------------------------------------------------
// Operations over any store

/** Reads and decodes an object; a body that does not decode is a CorruptObject. */
export const getDecoded = (hash: ObjectHash) =>
  Effect.flatMap(ObjectStore, (store) =>
    Effect.flatMap(store.get(hash), ({ type, body }) =>
      Either.match(decodeObject(type, body), {
        onLeft: (e) => Effect.fail(new CorruptObject({ hash, detail: `${e.reason}: ${e.detail}` })),
        onRight: (o): Effect.Effect<GitObject> => Effect.succeed(o)
      })))

/** Stores framed bytes (`"<type> <size>\0<body>"`, as a SEND carries them); the hash is computed here. */
export const putFramed = (framed: Uint8Array, maxSize?: number) =>
  Effect.flatMap(ObjectStore, (store) =>
    Either.match(unframe(framed, maxSize), {
      onLeft: (e): Effect.Effect<ObjectHash, InvalidObject | StoreError> => Effect.fail(e),
      onRight: ({ type, body }) => store.put(type, body)
    }))

/** The zlib-deflated framed bytes of a stored object: as stored where the store keeps them so, else deflated here. */
export const getDeflated = (hash: ObjectHash) =>
  Effect.flatMap(ObjectStore, (store) =>
    store.getDeflated !== undefined
      ? store.getDeflated(hash)
      : Effect.flatMap(store.get(hash), ({ type, body }) =>
        Effect.try({
          try: () => new Uint8Array(deflateSync(frame(type, body), { level: 1 })),
          catch: (cause) => new StoreError({ op: "get", detail: `deflating ${hash}`, cause })
        })))

/** Stores zlib-deflated framed bytes (at most `maxSize` body bytes once inflated); the hash is computed here. */
export const putDeflated = (deflated: Uint8Array, maxSize?: number) =>
  Effect.flatMap(ObjectStore, (store) =>
    store.putDeflated !== undefined
      ? store.putDeflated(deflated, maxSize)
      : Effect.flatMap(inflateFramed(deflated, maxSize), ({ type, body }) => store.put(type, body)))

/**
 * Inflates a loose object and unframes it, refusing to inflate past the declared limit (a small deflated input
 * can expand enormously). The header is read first, so the output limit is the declared size.
 */
export const inflateFramed = (
  deflated: Uint8Array,
  maxSize = DEFAULT_MAX_OBJECT
): Effect.Effect<{ readonly type: ObjectType; readonly body: Uint8Array }, InvalidObject> =>
  Effect.flatMap(inflateExact(deflated, maxSize + 32), (framed) => unframe(framed, maxSize))

/**
 * Inflates one complete zlib stream of at most `maxOutputLength` bytes. Fails when the stream is damaged or
 * truncated, inflates past the limit ("TooLarge"), or is followed by trailing bytes (git's fsck calls that
 * "garbage at end of loose object"; zlib alone would ignore them).
 */
export const inflateExact = (deflated: Uint8Array, maxOutputLength: number): Either.Either<Uint8Array, InvalidObject> =>
  Either.flatMap(
    Either.try({
      // `info: true` makes zlib return { buffer, engine } (its typings don't say so): engine.bytesWritten is the input read.
      try: (): unknown => inflateSync(deflated, { maxOutputLength, info: true }),
      catch: (cause) =>
        cause instanceof RangeError
          ? new InvalidObject({ reason: "TooLarge", detail: `inflates past the limit of ${maxOutputLength} bytes` })
          : new InvalidObject({ reason: "BadFraming", detail: `does not inflate: ${String(cause)}` })
    }),
    (result) => {
      if (typeof result !== "object" || result === null || !("buffer" in result) || !("engine" in result)) {
        return Either.left(new InvalidObject({ reason: "BadFraming", detail: "zlib gave no result" }))
      }
      const { buffer, engine } = result
      const read = typeof engine === "object" && engine !== null && "bytesWritten" in engine ? engine.bytesWritten : undefined
      if (read !== deflated.length) {
        return Either.left(new InvalidObject({
          reason: "BadFraming",
          detail: `${deflated.length - Number(read)} bytes of garbage after the zlib stream`
        }))
      }
      return buffer instanceof Uint8Array
        ? Either.right(buffer)
        : Either.left(new InvalidObject({ reason: "BadFraming", detail: "zlib gave no buffer" }))
    }
  )

/** The default largest object body a store reads back or accepts deflated (1 GiB). */
export const DEFAULT_MAX_OBJECT = 1024 * 1024 * 1024

/** The framed bytes of a stored object. */
export const getFramed = (hash: ObjectHash) =>
  Effect.flatMap(ObjectStore, (store) => Effect.map(store.get(hash), ({ type, body }) => frame(type, body)))

/**
 * The objects reachable from `root` that are not stored, walking only what is stored
 * (a missing tree's children are unknown until it arrives). This is what a resumed push or pull still needs.
 */
export const missingReachable = (root: ObjectHash) =>
  Effect.gen(function* () {
    const store = yield* ObjectStore
    const missing: Array<ObjectHash> = []
    const seen = new Set<string>([root])
    let frontier: Array<{ hash: ObjectHash; type: ObjectType | undefined }> = [{ hash: root, type: undefined }]
    while (frontier.length > 0) {
      const absent = new Set(yield* store.missing(frontier.map((f) => f.hash)))
      const next: Array<{ hash: ObjectHash; type: ObjectType | undefined }> = []
      for (const item of frontier) {
        if (absent.has(item.hash)) {
          missing.push(item.hash)
          continue
        }
        if (item.type === "blob") continue // blobs have no children: skip reading them
        const object = yield* getDecoded(item.hash)
        for (const child of children(object)) {
          if (!seen.has(child.hash)) {
            seen.add(child.hash)
            next.push(child)
          }
        }
      }
      frontier = next
    }
    return missing as ReadonlyArray<ObjectHash>
  })

/**
 * Seals a ref: writes it only if every object reachable from `hash` is stored.
 * For release refs `expected` is None, so an existing release can never change.
 */
export const sealRef = (name: RefName, hash: ObjectHash, expected: Option.Option<ObjectHash> = Option.none()) =>
  Effect.gen(function* () {
    const store = yield* ObjectStore
    const missing = yield* missingReachable(hash)
    if (missing.length > 0) return yield* Effect.fail(new IncompleteGraph({ root: hash, missing: missing.length }))
    yield* store.setRef(name, expected, hash)
  })

// ---------------------------------------------------------------------------------------------
// Memory layer: same contract, for tests and simulations

export const makeMemory = Effect.gen(function* () {
  const objects = yield* Ref.make(HashMap.empty<ObjectHash, StoredObject>())
  const refs = yield* Ref.make(HashMap.empty<RefName, ObjectHash>())
  // Bodies are copied (the caller may reuse its buffer): `new Uint8Array(body)` is a memcpy, `Uint8Array.from` a
  // loop per byte.
  const stored = (type: ObjectType, body: Uint8Array): StoredObject => ({ type, body: new Uint8Array(body) })
  const put = (type: ObjectType, body: Uint8Array) =>
    Effect.sync(() => hashOf(type, body)).pipe(
      Effect.tap((hash) => Ref.update(objects, HashMap.set(hash, stored(type, body))))
    )
  return ObjectStore.of({
    put,
    putMany: (items) =>
      Effect.suspend(() => {
        const hashes = items.map((o) => hashOf(o.type, o.body))
        return Ref.update(objects, HashMap.mutate((m) => {
          items.forEach((o, i) => HashMap.set(m, hashes[i]!, stored(o.type, o.body)))
        })).pipe(Effect.as(hashes))
      }),
    get: (hash) =>
      Effect.flatMap(Ref.get(objects), (m) =>
        Option.match(HashMap.get(m, hash), {
          onNone: () => Effect.fail(new ObjectNotFound({ hash })),
          onSome: (o) => Effect.succeed(o)
        })),
    has: (hash) => Effect.map(Ref.get(objects), HashMap.has(hash)),
    missing: (hashes) => Effect.map(Ref.get(objects), (m) => hashes.filter((h) => !HashMap.has(m, h))),
    readRef: (name) => Effect.map(Ref.get(refs), HashMap.get(name)),
    listRefs: (prefix) =>
      Effect.map(Ref.get(refs), (m) =>
        [...m].filter(([name]) => name.startsWith(prefix))
          .map(([name, hash]) => ({ name, hash }))
          .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))),
    setRef: (name, expected, next) =>
      Ref.modify(refs, (m): readonly [Effect.Effect<void, RefConflict>, HashMap.HashMap<RefName, ObjectHash>] => {
        const refusal = casRefusal(name, expected, HashMap.get(m, name), next)
        return refusal === undefined
          ? [Effect.void, HashMap.set(m, name, next)] as const
          : [refusal === "Same" ? Effect.void : Effect.fail(refusal), m] as const
      }).pipe(Effect.flatten),
    deleteRef: (name, expected) =>
      Ref.modify(refs, (m): readonly [Effect.Effect<void, RefConflict>, HashMap.HashMap<RefName, ObjectHash>] => {
        const refusal = deleteRefusal(name, expected, HashMap.get(m, name))
        return refusal === undefined
          ? [Effect.void, HashMap.remove(m, name)] as const
          : [Effect.fail(refusal), m] as const
      }).pipe(Effect.flatten),
    listObjects: () => Effect.map(Ref.get(objects), (m) => [...HashMap.keys(m)])
  })
})

export const conflict = (
  name: string,
  expected: Option.Option<ObjectHash>,
  actual: Option.Option<ObjectHash>,
  reason?: "Mismatch" | "Immutable"
) =>
  new RefConflict({
    name,
    ...(Option.isSome(expected) ? { expected: expected.value } : {}),
    ...(Option.isSome(actual) ? { actual: actual.value } : {}),
    ...(reason !== undefined ? { reason } : {})
  })

/**
 * The compare-and-set rule every layer applies, given the ref's current value: undefined to write `next`,
 * "Same" when it already holds `next` (succeed without writing), or the RefConflict to fail with.
 */
export const casRefusal = (
  name: RefName,
  expected: Option.Option<ObjectHash>,
  actual: Option.Option<ObjectHash>,
  next: ObjectHash
): RefConflict | "Same" | undefined => {
  if (Option.contains(actual, next)) return "Same"
  if (Option.isSome(actual) && isImmutableRef(name)) return conflict(name, expected, actual, "Immutable")
  if (!Option.getEquivalence<ObjectHash>((a, b) => a === b)(actual, expected)) {
    return conflict(name, expected, actual, "Mismatch")
  }
  return undefined
}

/** The delete rule every layer applies: undefined to delete, or the RefConflict to fail with. */
export const deleteRefusal = (
  name: RefName,
  expected: ObjectHash,
  actual: Option.Option<ObjectHash>
): RefConflict | undefined => {
  if (!Option.contains(actual, expected)) return conflict(name, Option.some(expected), actual, "Mismatch")
  if (isImmutableRef(name)) return conflict(name, Option.some(expected), actual, "Immutable")
  return undefined
}

export const layerMemory = Layer.effect(ObjectStore, makeMemory)
