/**
 * The fs ObjectStore: a bare git repository (`HEAD`, `config`, `objects/xx/<38 hex>` zlib-deflated loose objects,
 * `refs/…` one file per ref, `packed-refs` read too). `git fsck`, `git cat-file`, `git for-each-ref` and
 * `git archive` work on it. Layout, contract and crash-safety guarantees: docs/storage.md.
 *
 * - Objects are written to `objects/xx/tmp_obj_<random>` and renamed into place, so a crash never leaves a half
 *   object under its final name, and concurrent writers of one object each rename a complete copy (same bytes).
 * - A ref is updated under git's lock protocol: `<ref>.lock` created exclusively, the new value written and
 *   fsynced into it, then renamed over the ref. git itself honours the same lock files. Inside one process a
 *   semaphore serialises ref updates, so the lock file is only contended between processes (then retried briefly).
 * - Reads verify: an object that does not inflate, frame or hash to its name is a CorruptObject naming it.
 * - The hot path (put, putMany, has, missing, get) makes synchronous node:fs calls for objects under 128 KiB
 *   (writes in slices that yield to other fibers in between), as git does on one thread: through the platform
 *   FileSystem each object cost several thread-pool round trips and a failed stat an error object
 *   (docs/storage.md has the figures). Bigger objects and refs go through the platform FileSystem.
 */
import { FileSystem, Path } from "@effect/platform"
import type { PlatformError } from "@effect/platform/Error"
import { Effect, Either, Layer, Option, Schedule, Schema } from "effect"
import { randomBytes } from "node:crypto"
import {
  closeSync, fstatSync, fsyncSync, mkdirSync, openSync, readSync, renameSync, statSync, unlinkSync, writeSync
} from "node:fs"
import { join } from "node:path"
import { deflate, deflateSync, inflate } from "node:zlib"
import { batches } from "../domain/Batches.js"
import { frame, hashOf, type ObjectType, unframe } from "../domain/GitObject.js"
import { type ObjectHash, trustedHash } from "../domain/ObjectHash.js"
import {
  casRefusal, CorruptObject, DEFAULT_MAX_OBJECT, deleteRefusal, inflateExact, inflateFramed, ObjectNotFound, ObjectStore,
  type RefConflict, type RefEntry, RefName, StoreError, type StoredObject
} from "./ObjectStore.js"

export interface FsStoreOptions {
  /**
   * fsync each object file before renaming it into place, for durability across power loss (not only process
   * crashes). Off by default, like git's default `core.fsync` (which leaves loose objects out): it costs a disk
   * flush per object. Ref files are always fsynced.
   */
  readonly fsyncObjects?: boolean
  /** How many files putMany / missing work on at once (default 32). */
  readonly concurrency?: number
  /** The largest object body `get` inflates (default 1 GiB); larger is a CorruptObject. */
  readonly maxObjectSize?: number
  /** zlib level for new loose objects (default 1, git's default `core.looseCompression`). */
  readonly compressionLevel?: number
}

/** Objects at least this large are deflated/inflated and written on libuv's thread pool, not on the main thread. */
const ASYNC_ZLIB = 128 * 1024

/** The synchronous write path works on at most this many objects / bytes before letting other fibers run. */
const SLICE_OBJECTS = 256
const SLICE_BYTES = 4 * 1024 * 1024

const HEX40 = /^[0-9a-f]{40}$/
const isRefName = Schema.is(RefName)

const CONFIG = `[core]
\trepositoryformatversion = 0
\tfilemode = true
\tbare = true
[gc]
\t# upm reads loose objects only: never let git pack them on its own
\tauto = 0
`

/** Opens (creating it if needed) the bare repository at `root` as an ObjectStore. */
export const makeFs = (root: string, options: FsStoreOptions = {}) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const concurrency = options.concurrency ?? 32
    const maxObjectSize = options.maxObjectSize ?? DEFAULT_MAX_OBJECT
    const level = options.compressionLevel ?? 1
    const fsyncObjects = options.fsyncObjects ?? false
    const objectsDir = path.join(root, "objects")
    const refLock = yield* Effect.makeSemaphore(1)

    const isNotFound = (e: PlatformError) => e._tag === "SystemError" && e.reason === "NotFound"
    const fail = (op: StoreError["op"], detail?: string) => (cause: unknown) =>
      new StoreError({ op, cause, ...(detail !== undefined ? { detail } : {}) })

    // ------------------------------------------------------------------------------------------- init

    /** Writes a small file atomically (temp + rename) unless it already exists. */
    const writeIfAbsent = (file: string, content: string) =>
      Effect.flatMap(fs.exists(file), (exists) =>
        exists
          ? Effect.void
          : Effect.flatMap(Effect.sync(() => `${file}.tmp_${randomBytes(6).toString("hex")}`), (tmp) =>
            fs.writeFileString(tmp, content).pipe(Effect.zipRight(fs.rename(tmp, file)))))

    yield* Effect.all([
      fs.makeDirectory(path.join(objectsDir, "info"), { recursive: true }),
      fs.makeDirectory(path.join(objectsDir, "pack"), { recursive: true }),
      fs.makeDirectory(path.join(root, "refs", "tags"), { recursive: true }),
      fs.makeDirectory(path.join(root, "refs", "heads"), { recursive: true })
    ]).pipe(
      Effect.zipRight(writeIfAbsent(path.join(root, "config"), CONFIG)),
      Effect.zipRight(writeIfAbsent(path.join(root, "HEAD"), "ref: refs/heads/main\n")),
      Effect.mapError(fail("open", `cannot open or create the repository at ${root}`))
    )

    // ------------------------------------------------------------------------------------------- objects

    const dirOf = (hash: ObjectHash) => path.join(objectsDir, hash.slice(0, 2))
    const fileOf = (hash: ObjectHash) => path.join(objectsDir, hash.slice(0, 2), hash.slice(2))

    // The 256 fan-out directories are created once each per store instance, not once per object.
    const madeDirs = new Set<string>()
    // Temp names: a random prefix per store instance and a counter (exclusive create catches any clash).
    const tmpPrefix = `tmp_obj_${randomBytes(6).toString("hex")}_`
    let tmpCount = 0
    const ensureDir = (dir: string) =>
      madeDirs.has(dir)
        ? Effect.void
        : fs.makeDirectory(dir, { recursive: true }).pipe(Effect.tap(() => Effect.sync(() => madeDirs.add(dir))))

    const deflateBytes = (framed: Uint8Array): Effect.Effect<Uint8Array, StoreError> =>
      framed.length < ASYNC_ZLIB
        ? Effect.try({ try: () => deflateSync(framed, { level }), catch: fail("put", "deflate") })
        : Effect.async((resume) => {
          deflate(framed, { level }, (error, out) =>
            resume(error === null ? Effect.succeed(out) : Effect.fail(fail("put", "deflate")(error))))
        })

    const inflateBytes = (hash: ObjectHash, stored: Uint8Array): Effect.Effect<Uint8Array, CorruptObject> => {
      const corrupt = (detail: string) => new CorruptObject({ hash, detail })
      // Small objects inflate inline (and trailing garbage is refused); big ones on the thread pool. Either way the
      // hash is checked afterwards.
      return stored.length < ASYNC_ZLIB
        ? Either.match(inflateExact(stored, maxObjectSize + 32), {
          onLeft: (e) => Effect.fail(corrupt(`${e.reason}: ${e.detail}`)),
          onRight: Effect.succeed
        })
        : Effect.async((resume) => {
          inflate(stored, { maxOutputLength: maxObjectSize + 32 }, (error, out) =>
            resume(error === null ? Effect.succeed(out) : Effect.fail(corrupt(`does not inflate: ${error.message}`))))
        })
    }

    /** Stores already-deflated bytes under `hash`: temp file in the fan-out directory, then rename. */
    const writeObject = (hash: ObjectHash, deflated: Uint8Array): Effect.Effect<void, StoreError> => {
      const dir = dirOf(hash)
      const tmp = path.join(dir, `tmp_obj_${randomBytes(8).toString("hex")}`)
      const write = fsyncObjects
        ? Effect.scoped(Effect.flatMap(fs.open(tmp, { flag: "wx", mode: 0o444 }), (file) =>
          file.writeAll(deflated).pipe(Effect.zipRight(file.sync))))
        : fs.writeFile(tmp, deflated, { flag: "wx", mode: 0o444 })
      return ensureDir(dir).pipe(
        Effect.zipRight(write),
        Effect.zipRight(fs.rename(tmp, fileOf(hash))),
        Effect.onError(() => Effect.ignore(fs.remove(tmp))),
        Effect.mapError(fail("put", `writing ${hash}`))
      )
    }

    /**
     * Whether a usable file already holds `hash`. A zero-length file is what a power loss can leave of an object
     * that was renamed but never flushed: it counts as absent, so the next put repairs it. Synchronous: a missing
     * file is the common case of a fresh import, and `throwIfNoEntry: false` answers it without an exception.
     */
    const presentSync = (hash: ObjectHash): boolean => {
      const info = statSync(fileOf(hash), { throwIfNoEntry: false })
      return info !== undefined && info.isFile() && info.size > 0
    }

    const present = (hash: ObjectHash, op: StoreError["op"]): Effect.Effect<boolean, StoreError> =>
      Effect.try({ try: () => presentSync(hash), catch: fail(op, `stat ${hash}`) })

    /** Writes a small object synchronously: temp file (exclusive create, read-only), then rename. Throws. */
    const writeObjectSync = (hash: ObjectHash, deflated: Uint8Array): void => {
      const dir = dirOf(hash)
      if (!madeDirs.has(dir)) {
        mkdirSync(dir, { recursive: true })
        madeDirs.add(dir)
      }
      const tmp = join(dir, `${tmpPrefix}${tmpCount++}`)
      const fd = openSync(tmp, "wx", 0o444)
      // Closed exactly once: libuv's threads may reuse the number as soon as it is closed.
      let open = true
      try {
        for (let written = 0; written < deflated.length;) {
          written += writeSync(fd, deflated, written, deflated.length - written)
        }
        if (fsyncObjects) fsyncSync(fd)
        open = false
        closeSync(fd)
        renameSync(tmp, fileOf(hash))
      } catch (e) {
        if (open) {
          try {
            closeSync(fd)
          } catch { /* nothing more to do with it */ }
        }
        try {
          unlinkSync(tmp)
        } catch { /* already renamed or gone */ }
        throw e
      }
    }

    /** Stores small objects (already hashed) synchronously, skipping those present; fails naming the object. */
    const putSmallSync = (items: ReadonlyArray<{ readonly hash: ObjectHash; readonly object: StoredObject }>) =>
      Effect.suspend((): Effect.Effect<void, StoreError> => {
        for (const { hash, object } of items) {
          try {
            if (!presentSync(hash)) writeObjectSync(hash, deflateSync(frame(object.type, object.body), { level }))
          } catch (e) {
            return Effect.fail(fail("put", `writing ${hash}`)(e))
          }
        }
        return Effect.void
      })

    const putHashed = (hash: ObjectHash, type: ObjectType, body: Uint8Array): Effect.Effect<ObjectHash, StoreError> =>
      body.length < ASYNC_ZLIB
        ? Effect.as(putSmallSync([{ hash, object: { type, body } }]), hash)
        : present(hash, "put").pipe(
          Effect.flatMap((exists) =>
            exists ? Effect.void : Effect.flatMap(deflateBytes(frame(type, body)), (d) => writeObject(hash, d))),
          Effect.as(hash)
        )

    const put = (type: ObjectType, body: Uint8Array): Effect.Effect<ObjectHash, StoreError> =>
      Effect.suspend(() => putHashed(hashOf(type, body), type, body))

    /**
     * Small objects are written synchronously in slices (yielding between them, so a big batch does not hold up
     * other fibers for long); big ones on the thread pool, `concurrency` at a time. Duplicates are written once.
     */
    const putMany = (objects: ReadonlyArray<StoredObject>): Effect.Effect<ReadonlyArray<ObjectHash>, StoreError> =>
      Effect.suspend(() => {
        const hashes = objects.map((o) => hashOf(o.type, o.body))
        const seen = new Set<ObjectHash>()
        const small: Array<{ readonly hash: ObjectHash; readonly object: StoredObject }> = []
        const large: Array<{ readonly hash: ObjectHash; readonly object: StoredObject }> = []
        objects.forEach((object, i) => {
          const hash = hashes[i]!
          if (seen.has(hash)) return
          seen.add(hash)
          ;(object.body.length < ASYNC_ZLIB ? small : large).push({ hash, object })
        })
        const slices = batches(small, (item) => item.object.body.length, SLICE_OBJECTS, SLICE_BYTES)
        return Effect.forEach(slices, (slice, i) => i === 0 ? putSmallSync(slice) : Effect.zipRight(Effect.yieldNow(), putSmallSync(slice)), {
          discard: true
        }).pipe(
          Effect.zipRight(Effect.forEach(large, ({ hash, object }) => putHashed(hash, object.type, object.body), {
            concurrency,
            discard: true
          })),
          Effect.as(hashes)
        )
      })

    /**
     * The stored (deflated) bytes. A loose object under 128 KiB is read synchronously (open, fstat, read, close:
     * the same calls git makes); a bigger one, or one that grew past the fstat size, through the platform.
     */
    const readStored = (hash: ObjectHash, op: "get"): Effect.Effect<Uint8Array, ObjectNotFound | StoreError> =>
      Effect.suspend(() => {
        const file = fileOf(hash)
        let small: Uint8Array | undefined
        try {
          small = readSmallSync(file)
        } catch (e) {
          return Effect.fail(
            typeof e === "object" && e !== null && "code" in e && e.code === "ENOENT"
              ? new ObjectNotFound({ hash })
              : fail(op, `reading ${hash}`)(e)
          )
        }
        return small !== undefined ? Effect.succeed(small) : fs.readFile(file).pipe(
          Effect.mapError((e) => isNotFound(e) ? new ObjectNotFound({ hash }) : fail(op, `reading ${hash}`)(e))
        )
      })

    const get = (hash: ObjectHash): Effect.Effect<StoredObject, ObjectNotFound | CorruptObject | StoreError> =>
      readStored(hash, "get").pipe(
        Effect.flatMap((stored) => inflateBytes(hash, stored)),
        Effect.flatMap((framed) =>
          Either.match(unframe(framed, maxObjectSize), {
            onLeft: (e) => Effect.fail(new CorruptObject({ hash, detail: `${e.reason}: ${e.detail}` })),
            onRight: ({ type, body }) => {
              const actual = hashOf(type, body)
              return actual === hash
                ? Effect.succeed<StoredObject>({ type, body })
                : Effect.fail(new CorruptObject({ hash, detail: `content hashes to ${actual}` }))
            }
          }))
      )

    const missing = (hashes: ReadonlyArray<ObjectHash>) =>
      Effect.forEach(batches(hashes, () => 0, 4 * SLICE_OBJECTS, Infinity), (slice, i) =>
        Effect.zipRight(
          i === 0 ? Effect.void : Effect.yieldNow(),
          Effect.try({ try: () => slice.filter((h) => !presentSync(h)), catch: fail("missing") })
        )).pipe(Effect.map((slices) => slices.flat()))

    const listObjects = () =>
      Effect.gen(function* () {
        const fanout = (yield* fs.readDirectory(objectsDir)).filter((d) => /^[0-9a-f]{2}$/.test(d))
        const lists = yield* Effect.forEach(fanout, (d) =>
          Effect.map(fs.readDirectory(path.join(objectsDir, d)), (names) =>
            names.filter((n) => /^[0-9a-f]{38}$/.test(n)).map((n) => trustedHash(d + n))), { concurrency: 8 })
        return lists.flat()
      }).pipe(Effect.mapError(fail("listObjects")))

    // ------------------------------------------------------------------------------------------- refs

    const refFile = (name: RefName) => path.join(root, ...name.split("/"))
    const packedFile = path.join(root, "packed-refs")

    const parseRefValue = (name: string, text: string): Either.Either<ObjectHash, string> => {
      const value = text.trim()
      if (HEX40.test(value)) return Either.right(trustedHash(value))
      return Either.left(value.startsWith("ref: ")
        ? `${name} is a symbolic ref (${value}); upm only reads direct refs`
        : `${name} does not hold an object hash`)
    }

    /** The loose ref file's value; None when there is none (or the name is a directory of refs). */
    const readLoose = (name: RefName, op: StoreError["op"]) =>
      fs.readFileString(refFile(name)).pipe(
        Effect.map(Option.some),
        Effect.catchIf(
          (e) => e._tag === "SystemError" && (e.reason === "NotFound" || e.reason === "BadResource"),
          () => Effect.succeed(Option.none<string>())
        ),
        Effect.mapError(fail(op, `reading ${name}`)),
        Effect.flatMap(Option.match({
          onNone: () => Effect.succeed(Option.none<ObjectHash>()),
          onSome: (text) =>
            Either.match(parseRefValue(name, text), {
              onLeft: (detail) => Effect.fail(new StoreError({ op, detail, cause: undefined })),
              onRight: (hash) => Effect.succeed(Option.some(hash))
            })
        }))
      )

    /** `packed-refs` (written by `git pack-refs` / `git gc`): `<hash> <name>` lines, `^<hash>` peel lines, `#` comments. */
    const readPacked = (op: StoreError["op"]) =>
      fs.readFileString(packedFile).pipe(
        Effect.catchIf(isNotFound, () => Effect.succeed("")),
        Effect.mapError(fail(op, "reading packed-refs")),
        Effect.map((text) => {
          const refs = new Map<string, ObjectHash>()
          for (const line of text.split("\n")) {
            const match = /^([0-9a-f]{40}) (refs\/\S+)$/.exec(line)
            if (match !== null) refs.set(match[2]!, trustedHash(match[1]!))
          }
          return refs
        })
      )

    const readRef = (name: RefName, op: StoreError["op"] = "readRef") =>
      Effect.flatMap(readLoose(name, op), (loose) =>
        Option.isSome(loose)
          ? Effect.succeed(loose)
          : Effect.map(readPacked(op), (packed) => Option.fromNullable(packed.get(name))))

    /** Loose refs below `dir` (a path of ref segments), recursively. */
    const walkLoose = (segments: ReadonlyArray<string>): Effect.Effect<ReadonlyArray<RefEntry>, StoreError> =>
      fs.readDirectory(path.join(root, ...segments)).pipe(
        Effect.catchIf(
          (e) => e._tag === "SystemError" && (e.reason === "NotFound" || e.reason === "BadResource"),
          () => Effect.succeed<Array<string>>([])
        ),
        Effect.mapError(fail("listRefs")),
        Effect.flatMap((entries) =>
          Effect.forEach(entries, (entry) => {
            if (entry.endsWith(".lock") || entry.startsWith(".")) return Effect.succeed([])
            const child = [...segments, entry]
            const name = child.join("/")
            return fs.stat(path.join(root, ...child)).pipe(
              Effect.mapError(fail("listRefs")),
              Effect.flatMap((info): Effect.Effect<ReadonlyArray<RefEntry>, StoreError> => {
                if (info.type === "Directory") return walkLoose(child)
                if (info.type !== "File" || !isRefName(name)) return Effect.succeed([])
                return Effect.map(readLoose(name, "listRefs"), Option.match({
                  onNone: () => [],
                  onSome: (hash) => [{ name, hash }]
                }))
              }),
              Effect.catchIf((e) => e.cause !== undefined && isPlatformNotFound(e.cause), () => Effect.succeed([]))
            )
          }, { concurrency: 16 })),
        Effect.map((lists) => lists.flat())
      )

    const listRefs = (prefix: string) =>
      Effect.gen(function* () {
        // Walk only the deepest directory the prefix names (checked to be a valid ref path, so a prefix can never
        // lead the walk out of refs/); else all of refs/.
        const cut = prefix.lastIndexOf("/")
        const dir = cut > 0 ? prefix.slice(0, cut) : ""
        const start = dir === "refs" || isRefName(dir) ? dir.split("/") : ["refs"]
        const related = prefix.startsWith("refs/") || "refs/".startsWith(prefix)
        const loose = related ? yield* walkLoose(start) : []
        const packed = yield* readPacked("listRefs")
        const all = new Map<string, RefEntry>()
        for (const [name, hash] of packed) if (isRefName(name)) all.set(name, { name, hash })
        for (const entry of loose) all.set(entry.name, entry) // a loose ref overrides its packed value
        return [...all.values()]
          .filter((r) => r.name.startsWith(prefix))
          .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      })

    /**
     * Runs `body` holding git's lock on `file`: `<file>.lock`, created exclusively and holding `content`. `body`
     * gets `commit`, which renames the lock over `file` (the atomic update); if it does not commit, the lock is
     * removed. (Never removed after a commit: by then the name may already be another writer's lock.) Another
     * process holding the lock is waited for briefly (git's own default is 100 ms; we allow ~2 s), then it is an
     * error naming the lock file.
     */
    const withLock = <A, E>(
      file: string,
      op: StoreError["op"],
      content: string,
      body: (commit: Effect.Effect<void, StoreError>) => Effect.Effect<A, E>
    ): Effect.Effect<A, E | StoreError> => {
      const lock = `${file}.lock`
      const create = Effect.scoped(
        Effect.flatMap(fs.open(lock, { flag: "wx", mode: 0o644 }), (handle) =>
          handle.writeAll(new TextEncoder().encode(content)).pipe(Effect.zipRight(handle.sync)))
      ).pipe(
        Effect.retry({
          schedule: Schedule.spaced("10 millis").pipe(Schedule.intersect(Schedule.recurs(200))),
          while: (e) => e._tag === "SystemError" && e.reason === "AlreadyExists"
        }),
        Effect.mapError((e) =>
          e._tag === "SystemError" && e.reason === "AlreadyExists"
            ? new StoreError({
              op,
              detail: `${lock} exists: another process is updating it, or one crashed (then remove the file)`,
              cause: e
            })
            : fail(op, `creating ${lock}`)(e))
      )
      return fs.makeDirectory(path.dirname(file), { recursive: true }).pipe(
        Effect.mapError(fail(op, `creating the directory of ${file}`)),
        // Waiting for the lock can be interrupted; once it is ours, nothing stops us before rename or removal.
        Effect.zipRight(Effect.uninterruptibleMask((restore) =>
          Effect.zipRight(restore(create), Effect.suspend(() => {
            let committed = false
            const commit = fs.rename(lock, file).pipe(
              Effect.tap(() => Effect.sync(() => { committed = true })),
              Effect.mapError(fail(op, `renaming ${lock}`))
            )
            return body(commit).pipe(
              Effect.onExit(() => (committed ? Effect.void : Effect.ignore(fs.remove(lock))))
            )
          }))))
      )
    }

    const setRef = (name: RefName, expected: Option.Option<ObjectHash>, next: ObjectHash) =>
      refLock.withPermits(1)(
        withLock(refFile(name), "setRef", `${next}\n`, (commit) =>
          Effect.flatMap(readRef(name, "setRef"), (actual): Effect.Effect<void, RefConflict | StoreError> => {
            const refusal = casRefusal(name, expected, actual, next)
            if (refusal === "Same") return Effect.void
            if (refusal !== undefined) return Effect.fail(refusal)
            return commit
          }))
      )

    const deleteRef = (name: RefName, expected: ObjectHash) =>
      refLock.withPermits(1)(
        withLock(refFile(name), "deleteRef", `${expected}\n`, () =>
          Effect.gen(function* () {
            const actual = yield* readRef(name, "deleteRef")
            const refusal = deleteRefusal(name, expected, actual)
            if (refusal !== undefined) return yield* Effect.fail(refusal)
            // As git does: out of packed-refs first, then the loose file, so a crash between the two leaves the
            // current value visible rather than resurrecting an older packed one.
            const packed = yield* readPacked("deleteRef")
            if (packed.has(name)) yield* rewritePacked(name)
            yield* fs.remove(refFile(name)).pipe(
              Effect.catchIf(isNotFound, () => Effect.void),
              Effect.mapError(fail("deleteRef", `removing ${name}`))
            )
          }))
      )

    /** Rewrites packed-refs without `name` (and its peel line), under `packed-refs.lock`. */
    const rewritePacked = (name: string) =>
      Effect.gen(function* () {
        const text = yield* fs.readFileString(packedFile).pipe(Effect.mapError(fail("deleteRef", "reading packed-refs")))
        const out: Array<string> = []
        let dropping = false
        for (const line of text.split("\n")) {
          if (line.startsWith("^")) {
            if (!dropping) out.push(line)
            continue
          }
          dropping = line.endsWith(` ${name}`) && HEX40.test(line.slice(0, 40))
          if (!dropping) out.push(line)
        }
        yield* withLock(packedFile, "deleteRef", out.join("\n"), (commit) => commit)
      })

    // ------------------------------------------------------------------------------------------- raw deflated

    const getDeflated = (hash: ObjectHash) => readStored(hash, "get")

    const putDeflated = (deflated: Uint8Array, maxSize?: number) =>
      Effect.gen(function* () {
        const { type, body } = yield* inflateFramed(deflated, maxSize)
        const hash = hashOf(type, body)
        if (!(yield* present(hash, "put"))) yield* writeObject(hash, deflated)
        return hash
      })

    /** Deflated objects already hashed by the caller (sync SENDs), written as they are; small ones synchronously. */
    const putDeflatedMany = (objects: ReadonlyArray<{ readonly hash: ObjectHash; readonly deflated: Uint8Array }>) =>
      Effect.forEach(objects, ({ hash, deflated }) =>
        deflated.length < ASYNC_ZLIB
          ? Effect.try({
            try: () => {
              if (!presentSync(hash)) writeObjectSync(hash, deflated)
            },
            catch: fail("put", `writing ${hash}`)
          })
          : Effect.flatMap(present(hash, "put"), (exists) => (exists ? Effect.void : writeObject(hash, deflated))), { discard: true })

    return ObjectStore.of({
      put,
      putMany,
      putDeflatedMany,
      get,
      has: (hash) => present(hash, "has"),
      missing,
      readRef: (name) => readRef(name),
      listRefs,
      setRef,
      deleteRef,
      listObjects,
      getDeflated,
      putDeflated
    })
  })

/** A file's bytes when it is under ASYNC_ZLIB bytes, else undefined (read it asynchronously). Throws. */
const readSmallSync = (file: string): Uint8Array | undefined => {
  const fd = openSync(file, "r")
  try {
    const size = fstatSync(fd).size
    if (size >= ASYNC_ZLIB) return undefined
    const bytes = Buffer.allocUnsafe(size + 1) // one byte more: a file that grew since fstat is read asynchronously
    let read = 0
    for (let n = -1; n !== 0 && read < bytes.length;) {
      n = readSync(fd, bytes, read, bytes.length - read, null)
      read += n
    }
    return read > size ? undefined : new Uint8Array(bytes.buffer, bytes.byteOffset, read)
  } finally {
    closeSync(fd)
  }
}

const isPlatformNotFound = (cause: unknown): boolean =>
  typeof cause === "object" && cause !== null && "_tag" in cause && cause._tag === "SystemError" &&
  "reason" in cause && cause.reason === "NotFound"

/** The fs ObjectStore at `root` (created if absent). Needs the platform's FileSystem and Path. */
export const layerFs = (root: string, options: FsStoreOptions = {}) => Layer.effect(ObjectStore, makeFs(root, options))
