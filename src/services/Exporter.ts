/**
 * Export a tree from the ObjectStore: into a directory, or as a `.tar.gz` / `.zip` stream.
 *
 * Safety first: the whole tree is walked and checked (`planTree`) before a single byte is written, and every
 * problem is an ExportError naming the entry. Refused: names git's fsck or our decoder refuses (`..`, `.git`, `/`,
 * NUL, …), two names in one directory that a case-insensitive or normalising file system would merge, symlinks
 * whose target is absolute, leaves the tree, or passes through another symlink of the tree (where a lexical check
 * can no longer prove where it lands), entries whose object has the wrong type.
 *
 * Writing a directory: everything goes into a fresh temp directory beside the target, created by us; every file
 * is created exclusively (`wx`: fails on anything already there, symlinks included, so nothing is ever written
 * through a symlink), directories with a non-recursive mkdir, symlinks last of all (so no write can pass through
 * one). Then one rename moves the result into place. On any failure or interruption the temp directory is removed:
 * the target is either absent/untouched or complete.
 */
import { FileSystem, Path } from "@effect/platform"
import * as NodeStream from "@effect/platform-node/NodeStream" // subpath: the index loads all of platform-node
import { Clock, Deferred, Effect, Either, Schema, Stream } from "effect"
import { randomBytes } from "node:crypto"
import type { Readable } from "node:stream"
import { PassThrough } from "node:stream"
import { createGzip } from "node:zlib"
import tar from "tar-stream"
import yazl from "yazl"
import { decodeTree } from "../domain/GitObject.js"
import type { ObjectHash } from "../domain/ObjectHash.js"
import { type CorruptObject, type ObjectNotFound, ObjectStore, type StoreError } from "./ObjectStore.js"

export class ExportError extends Schema.TaggedError<ExportError>()("ExportError", {
  reason: Schema.Literal(
    "BadEntry", "NameCollision", "UnsafeSymlink", "TypeMismatch", "TooLarge", "TargetExists", "WriteFailed", "ArchiveFailed"
  ),
  /** The entry's path inside the tree ("" for the root or the target itself). */
  path: Schema.String,
  detail: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {}

export type ExportFailure = ExportError | ObjectNotFound | CorruptObject | StoreError

export interface PlanLimits {
  /** Most entries (files, symlinks, directories) a tree may have (default 1,000,000). */
  readonly maxEntries?: number
  /** Deepest directory nesting (default 256). */
  readonly maxDepth?: number
}

/** One checked entry, in walk order (a directory always comes before what it contains). */
export type PlannedEntry =
  | { readonly kind: "directory"; readonly path: string }
  | { readonly kind: "file"; readonly path: string; readonly mode: "100644" | "100755"; readonly hash: ObjectHash }
  | { readonly kind: "symlink"; readonly path: string; readonly target: string }

const MAX_LINK = 4096

// ---------------------------------------------------------------------------------------------
// Planning: walk and check everything first

/**
 * Walks `tree` and checks every entry, writing nothing. The result lists directories, files and symlinks (with
 * their targets read) in walk order; anything unsafe is an ExportError naming it.
 */
export const planTree = (tree: ObjectHash, limits: PlanLimits = {}) =>
  Effect.gen(function* () {
    const store = yield* ObjectStore
    const maxEntries = limits.maxEntries ?? 1_000_000
    const maxDepth = limits.maxDepth ?? 256
    const planned: Array<PlannedEntry> = []
    const symlinks = new Set<string>()
    const bad = (reason: ExportError["reason"], path: string, detail: string) =>
      Effect.fail(new ExportError({ reason, path, detail }))

    let frontier: Array<{ readonly path: string; readonly hash: ObjectHash; readonly depth: number }> = [
      { path: "", hash: tree, depth: 0 }
    ]
    while (frontier.length > 0) {
      const next: typeof frontier = []
      for (const dir of frontier) {
        const object = yield* store.get(dir.hash)
        if (object.type !== "tree") {
          return yield* bad("TypeMismatch", dir.path, `${dir.hash} is a ${object.type}, expected a tree`)
        }
        const decoded = decodeTree(object.body)
        if (Either.isLeft(decoded)) {
          return yield* bad("BadEntry", dir.path, `${decoded.left.reason}: ${decoded.left.detail}`)
        }
        const folded = new Map<string, string>()
        for (const entry of decoded.right) {
          const path = dir.path === "" ? entry.name : `${dir.path}/${entry.name}`
          // "README" and "readme", or two Unicode spellings of one name, are one file on macOS and Windows.
          const key = entry.name.normalize("NFC").toLowerCase()
          const other = folded.get(key)
          if (other !== undefined) {
            return yield* bad("NameCollision", path, `"${entry.name}" and "${other}" are one name on case-insensitive disks`)
          }
          folded.set(key, entry.name)
          if (planned.length >= maxEntries) return yield* bad("TooLarge", path, `more than ${maxEntries} entries`)
          switch (entry.mode) {
            case "40000":
              if (dir.depth + 1 > maxDepth) return yield* bad("TooLarge", path, `nested deeper than ${maxDepth} directories`)
              planned.push({ kind: "directory", path })
              next.push({ path, hash: entry.hash, depth: dir.depth + 1 })
              break
            case "120000": {
              const link = yield* store.get(entry.hash)
              if (link.type !== "blob") return yield* bad("TypeMismatch", path, `symlink ${entry.hash} is a ${link.type}`)
              if (link.body.length > MAX_LINK) return yield* bad("UnsafeSymlink", path, "link text too long")
              const target = Buffer.from(link.body).toString("utf8")
              planned.push({ kind: "symlink", path, target })
              symlinks.add(path)
              break
            }
            default:
              planned.push({ kind: "file", path, mode: entry.mode, hash: entry.hash })
          }
        }
      }
      frontier = next
    }

    // Symlink targets, once every symlink's path is known.
    for (const entry of planned) {
      if (entry.kind !== "symlink") continue
      const why = unsafeTarget(entry.path, entry.target, symlinks)
      if (why !== undefined) return yield* bad("UnsafeSymlink", entry.path, `target "${entry.target}" ${why}`)
    }
    return planned as ReadonlyArray<PlannedEntry>
  })

/**
 * Why a symlink at `path` with `target` is unsafe, or undefined. The target is resolved component by component
 * from the link's directory: it may not be absolute, climb above the root, or continue through another symlink
 * of the tree (the kernel would resolve `..` after it physically, where a lexical check cannot follow).
 */
export const unsafeTarget = (path: string, target: string, symlinks: ReadonlySet<string>): string | undefined => {
  if (target.length === 0) return "is empty"
  if (target.includes("\0")) return "contains NUL"
  if (target.startsWith("/") || target.includes("\\") || /^[A-Za-z]:/.test(target)) return "is absolute (or Windows-style)"
  const at = path.split("/").slice(0, -1)
  const parts = target.split("/")
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!
    if (part === "" || part === ".") continue
    if (part === "..") {
      if (at.length === 0) return "leaves the tree"
      at.pop()
      continue
    }
    if (part.toLowerCase() === ".git") return "points into .git"
    at.push(part)
    if (i < parts.length - 1 && symlinks.has(at.join("/"))) return `passes through the symlink "${at.join("/")}"`
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------
// Into a directory

export interface ExportOptions extends PlanLimits {
  /** Replace an existing target (moved aside, then removed once the new one is in place). Default: refuse. */
  readonly overwrite?: boolean
  /** Files written at once (default 16). */
  readonly concurrency?: number
}

export interface ExportResult {
  readonly files: number
  readonly symlinks: number
  readonly directories: number
  readonly bytes: number
}

/** Exports `tree` into the directory `target` (which must not exist unless `overwrite`); its parent must exist. */
export const exportTree = (tree: ObjectHash, target: string, options: ExportOptions = {}) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const store = yield* ObjectStore
    const plan = yield* planTree(tree, options)
    const writeFailed = (entry: string, what: string) => (cause: unknown) =>
      new ExportError({ reason: "WriteFailed", path: entry, detail: what, cause })

    const exists = yield* fs.exists(target).pipe(Effect.mapError(writeFailed("", `checking ${target}`)))
    if (exists && options.overwrite !== true) {
      return yield* Effect.fail(new ExportError({ reason: "TargetExists", path: "", detail: `${target} already exists` }))
    }
    const parent = path.dirname(target)
    const tmp = path.join(parent, `.${path.basename(target)}.upm-${randomBytes(6).toString("hex")}`)
    let bytes = 0

    const write = Effect.gen(function* () {
      yield* fs.makeDirectory(tmp, { mode: 0o755 }).pipe(Effect.mapError(writeFailed("", `creating ${tmp}`)))
      for (const entry of plan) {
        if (entry.kind !== "directory") continue
        yield* fs.makeDirectory(path.join(tmp, entry.path), { mode: 0o755 }).pipe(
          Effect.mapError(writeFailed(entry.path, "creating the directory")))
      }
      yield* Effect.forEach(plan, (entry) => {
        if (entry.kind !== "file") return Effect.void
        return store.get(entry.hash).pipe(
          Effect.flatMap((object) =>
            object.type === "blob"
              ? Effect.succeed(object.body)
              : Effect.fail(new ExportError({ reason: "TypeMismatch", path: entry.path, detail: `${entry.hash} is a ${object.type}` }))),
          Effect.flatMap((body) => {
            bytes += body.length
            return fs.writeFile(path.join(tmp, entry.path), body, { flag: "wx", mode: entry.mode === "100755" ? 0o755 : 0o644 })
              .pipe(Effect.mapError(writeFailed(entry.path, "writing the file")))
          })
        )
      }, { concurrency: options.concurrency ?? 16, discard: true })
      for (const entry of plan) {
        if (entry.kind !== "symlink") continue
        yield* fs.symlink(entry.target, path.join(tmp, entry.path)).pipe(
          Effect.mapError(writeFailed(entry.path, "creating the symlink")))
      }
      if (exists) {
        const old = `${tmp}-old`
        yield* fs.rename(target, old).pipe(Effect.mapError(writeFailed("", `moving the old ${target} aside`)))
        yield* fs.rename(tmp, target).pipe(
          Effect.tapError(() => Effect.ignore(fs.rename(old, target))),
          Effect.mapError(writeFailed("", `moving the export to ${target}`)))
        yield* fs.remove(old, { recursive: true }).pipe(Effect.ignore)
      } else {
        yield* fs.rename(tmp, target).pipe(Effect.mapError(writeFailed("", `moving the export to ${target}`)))
      }
    })

    yield* write.pipe(
      Effect.onExit((exit) => exit._tag === "Success" ? Effect.void : Effect.ignore(fs.remove(tmp, { recursive: true })))
    )
    const count = (kind: PlannedEntry["kind"]) => plan.filter((e) => e.kind === kind).length
    const result: ExportResult = { files: count("file"), symlinks: count("symlink"), directories: count("directory"), bytes }
    return result
  })

// ---------------------------------------------------------------------------------------------
// Archives

export interface ArchiveOptions extends PlanLimits {
  /** A folder every entry goes under, e.g. `is-number-7.0.0/` (default none). */
  readonly prefix?: string
  /** Modification time recorded for every entry (default: now, from the Clock). */
  readonly mtime?: Date
}

const archiveFailed = (detail: string) => (cause: unknown) =>
  new ExportError({ reason: "ArchiveFailed", path: "", detail, cause })

const blobOf = (entry: Extract<PlannedEntry, { kind: "file" }>) =>
  Effect.flatMap(ObjectStore, (store) => store.get(entry.hash)).pipe(
    Effect.flatMap((object) =>
      object.type === "blob"
        ? Effect.succeed(Buffer.from(object.body.buffer, object.body.byteOffset, object.body.length))
        : Effect.fail(new ExportError({ reason: "TypeMismatch", path: entry.path, detail: `${entry.hash} is a ${object.type}` })))
  )

const prefixOf = (options: ArchiveOptions) =>
  options.prefix === undefined || options.prefix === "" ? "" : options.prefix.endsWith("/") ? options.prefix : `${options.prefix}/`

const mtimeOf = (options: ArchiveOptions) =>
  options.mtime !== undefined ? Effect.succeed(options.mtime) : Effect.map(Clock.currentTimeMillis, (ms) => new Date(ms))

/**
 * The bytes of a producer-driven Node stream, failing with whatever `produce` fails with. `produce` runs beside
 * the consumer and waits on the archiver's own backpressure, so at most one file is buffered at a time.
 */
const streamOf = <E, R>(
  output: Readable,
  produce: Effect.Effect<void, E, R>
): Stream.Stream<Uint8Array, E | ExportError, R> =>
  NodeStream.fromReadable<ExportError, Uint8Array>(() => output, archiveFailed("archive stream failed")).pipe(
    Stream.drainFork(Stream.fromEffect(produce)),
    Stream.ensuring(Effect.sync(() => output.destroy()))
  )

/** `tree` as a gzipped tar stream (ustar/pax, as `tar` and `git archive` read it). Checked by `planTree` first. */
export const exportTarGz = (tree: ObjectHash, options: ArchiveOptions = {}) =>
  Stream.unwrap(Effect.gen(function* () {
    const plan = yield* planTree(tree, options)
    const mtime = yield* mtimeOf(options)
    const prefix = prefixOf(options)
    const pack = tar.pack()
    // 256 KiB output chunks (the default is 16 KiB): fewer trips through the thread pool and the stream, about a
    // third less CPU for a 10 MB file.
    const gzip = createGzip({ chunkSize: 256 * 1024 })
    pack.pipe(gzip)
    // A consumer that goes away (an HTTP client closing mid-download) destroys gzip, and streamx then destroys the
    // pack (and its current entry) with PREMATURE_CLOSE: without listeners those 'error's are uncaught and take the
    // process down. Failures that matter reach us through the entry callbacks and the output stream.
    pack.on("error", () => {})
    const add = (header: Partial<tar.Header> & { readonly name: string }, body?: Buffer) =>
      Effect.async<void, ExportError>((resume) => {
        const done = (error?: Error | null) =>
          resume(error ? Effect.fail(archiveFailed(`writing ${header.name}`)(error)) : Effect.void)
        if (pack.destroyed) return done(new Error("the archive stream was closed"))
        const sink = body === undefined ? pack.entry(header, done) : pack.entry(header, body, done)
        // The entry's own stream errors too when the pack is destroyed; `done` reports it, so no crash here.
        sink.on("error", () => {})
      })
    const produce = Effect.gen(function* () {
      for (const entry of plan) {
        const name = prefix + entry.path
        switch (entry.kind) {
          case "directory":
            yield* add({ name: `${name}/`, type: "directory", mode: 0o755, mtime })
            break
          case "symlink":
            yield* add({ name, type: "symlink", linkname: entry.target, mode: 0o777, mtime })
            break
          case "file":
            yield* add({ name, type: "file", mode: entry.mode === "100755" ? 0o755 : 0o644, mtime }, yield* blobOf(entry))
        }
      }
      pack.finalize()
    })
    return streamOf(gzip, produce)
  }))

/** The part of yazl's API its typings leave out: an entry whose stream is asked for only when its turn comes. */
interface LazyZip {
  addReadStreamLazy(
    name: string,
    options: { mtime: Date; mode: number; size?: number },
    get: (callback: (error: Error | null, stream: Readable) => void) => void
  ): void
}
const isLazyZip = (zip: object): zip is LazyZip => "addReadStreamLazy" in zip && typeof zip.addReadStreamLazy === "function"

/**
 * `tree` as a zip stream (yazl). Symlinks are stored as Unix symlink entries (mode 120777, the link text as
 * content), which unzip and most tools restore. Checked by `planTree` first.
 */
export const exportZip = (tree: ObjectHash, options: ArchiveOptions = {}) =>
  Stream.unwrap(Effect.gen(function* () {
    const plan = yield* planTree(tree, options)
    const mtime = yield* mtimeOf(options)
    const prefix = prefixOf(options)
    const zip = new yazl.ZipFile()
    if (!isLazyZip(zip)) return yield* Effect.dieMessage("yazl lacks addReadStreamLazy (yazl >= 2.5 has it)")
    const output = new PassThrough()
    zip.outputStream.pipe(output)
    // Entries are declared up front; yazl asks for each one's bytes in order, once the previous one is written.
    const turns: Array<{ entry: Exclude<PlannedEntry, { kind: "directory" }>; ready: Deferred.Deferred<(e: Error | null, s: Readable) => void> }> = []
    for (const entry of plan) {
      const name = prefix + entry.path
      if (entry.kind === "directory") {
        zip.addEmptyDirectory(name, { mtime, mode: 0o40755 })
        continue
      }
      const ready = yield* Deferred.make<(e: Error | null, s: Readable) => void>()
      const mode = entry.kind === "symlink" ? 0o120777 : entry.mode === "100755" ? 0o100755 : 0o100644
      zip.addReadStreamLazy(name, { mtime, mode }, (callback) => Deferred.unsafeDone(ready, Effect.succeed(callback)))
      turns.push({ entry, ready })
    }
    zip.end()
    const produce = Effect.forEach(turns, ({ entry, ready }) =>
      Effect.gen(function* () {
        const callback = yield* Deferred.await(ready)
        // yazl writes without looking at backpressure: wait until the consumer has drained what it has.
        if (output.writableNeedDrain) yield* Effect.async<void>((resume) => {
          output.once("drain", () => resume(Effect.void))
        })
        const body = entry.kind === "symlink" ? Buffer.from(entry.target, "utf8") : yield* blobOf(entry)
        const stream = new PassThrough()
        stream.end(body)
        callback(null, stream)
      }), { discard: true })
    return streamOf(output, produce)
  }))
