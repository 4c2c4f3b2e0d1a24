/**
 * SourceTree: walk a directory and read its files, for the Importer.
 *
 * Two implementations of one contract:
 * - the default (`layer`, also what the Tag holds when nothing is provided): node:fs, synchronous system calls in
 *   batches, as git does on one thread: `readdir` with file types (no stat per name), then per file `open`
 *   (O_NOFOLLOW | O_NONBLOCK) + `fstat` + `read` + `close`, and `readlink` for a symlink;
 * - `layerPlatform`: the same over @effect/platform's FileSystem, for tests and other platforms.
 *
 * Why node:fs here, against STYLE's "platform FileSystem" rule (a decision recorded in docs/storage.md): through
 * the platform FileSystem every file of an import cost several thread-pool round trips and, for each regular
 * file, a failed readLink (the platform has no lstat), i.e. an error object with a stack. On 10,000 small files
 * that made the import 2–3× slower than `git add`; the synchronous walk is what brings it to git's speed.
 * The Tag is a `Context.Reference` whose default is the node:fs walker, so callers need not provide it and any
 * layer (`layerPlatform`, or a test's own) still replaces it.
 */
import { FileSystem } from "@effect/platform"
import type { PlatformError } from "@effect/platform/Error"
import { Context, Effect, Layer, Option, Schema } from "effect"
import {
  closeSync, constants, type Dirent, fstatSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, statSync
} from "node:fs"
import { join } from "node:path"

// ---------------------------------------------------------------------------------------------
// Errors

export class SourceError extends Schema.TaggedError<SourceError>()("SourceError", {
  reason: Schema.Literal("NotFound", "TooLarge", "Unreadable"),
  /** The path as given to the service. */
  path: Schema.String,
  detail: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {}

// ---------------------------------------------------------------------------------------------
// The contract

/** What a directory entry is, without following symlinks ("other": sockets, FIFOs, devices). */
export type EntryKind = "file" | "symlink" | "directory" | "other"

export interface DirEntry {
  readonly name: string
  readonly kind: EntryKind
}

/** A non-directory as read: a regular file with its exec bit, a symlink's link text, or something else (skipped). */
export type Leaf =
  | { readonly kind: "file"; readonly executable: boolean; readonly content: Uint8Array }
  | { readonly kind: "symlink"; readonly target: Uint8Array }
  | { readonly kind: "other" }

export interface ReadLimits {
  /** A regular file larger than this is a SourceError "TooLarge" naming it. */
  readonly maxFileSize: number
  /** Stop after the leaf that brings the bytes read to this many (at least one leaf is always read). */
  readonly maxBytes: number
}

export interface SourceTreeService {
  /** What `path` is, following symlinks (the root of an import may be reached through one). */
  readonly stat: (path: string) => Effect.Effect<"directory" | "file" | "other", SourceError>
  /** The entries of a directory, in no particular order; the kinds are those of the entries themselves. */
  readonly list: (dir: string) => Effect.Effect<ReadonlyArray<DirEntry>, SourceError>
  /** A small text file (following symlinks), None when there is none; more than `maxSize` bytes is "TooLarge". */
  readonly readText: (path: string, maxSize: number) => Effect.Effect<Option.Option<string>, SourceError>
  /**
   * Reads leaves in order: each path with the kind its listing gave (a file that turned into a symlink since is
   * read as the symlink it is now). Returns a prefix of them: up to the first whose content brings the total to
   * `limits.maxBytes`, so a batch is bounded in memory; the caller goes on with the rest.
   */
  readonly readLeaves: (
    leaves: ReadonlyArray<{ readonly path: string; readonly kind: "file" | "symlink" }>,
    limits: ReadLimits
  ) => Effect.Effect<ReadonlyArray<Leaf>, SourceError>
}

export class SourceTree extends Context.Reference<SourceTree>()("upm/SourceTree", {
  defaultValue: (): SourceTreeService => nodeSourceTree
}) {}

// ---------------------------------------------------------------------------------------------
// node:fs, synchronous

const codeOf = (e: unknown): string | undefined =>
  typeof e === "object" && e !== null && "code" in e && typeof e.code === "string" ? e.code : undefined

const sourceError = (path: string, what: string) => (cause: unknown) => {
  const code = codeOf(cause)
  return new SourceError({
    reason: code === "ENOENT" ? "NotFound" : "Unreadable",
    path,
    detail: `cannot ${what}: ${cause instanceof Error ? cause.message : String(cause)}`,
    cause
  })
}

const tooLarge = (path: string, size: number, max: number) =>
  new SourceError({ reason: "TooLarge", path, detail: `${size} bytes, more than the limit of ${max}` })

const kindOfDirent = (d: Dirent): EntryKind =>
  d.isFile() ? "file" : d.isSymbolicLink() ? "symlink" : d.isDirectory() ? "directory" : "other"

/** O_NOFOLLOW: a symlink put in place of a listed file fails (ELOOP) instead of being followed. O_NONBLOCK: a FIFO
 * put there does not block the open. Windows has neither (0); its listing already tells symlinks apart. */
const OPEN_FLAGS = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0)

/** Reads one leaf synchronously; throws a SourceError (caught by the Effect around the batch). */
const readLeafSync = (path: string, kind: "file" | "symlink", maxFileSize: number): Leaf => {
  if (kind === "symlink") return { kind: "symlink", target: readlinkSync(path, { encoding: "buffer" }) }
  let fd: number
  try {
    fd = openSync(path, OPEN_FLAGS)
  } catch (e) {
    const code = codeOf(e)
    // It became a symlink after the listing (ELOOP; EMLINK on the BSDs), or a socket (ENXIO).
    if (code === "ELOOP" || code === "EMLINK") return { kind: "symlink", target: readlinkSync(path, { encoding: "buffer" }) }
    if (code === "ENXIO") return { kind: "other" }
    throw e
  }
  try {
    const info = fstatSync(fd)
    if (!info.isFile()) return { kind: "other" }
    if (info.size > maxFileSize) throw tooLarge(path, info.size, maxFileSize)
    const content = Buffer.allocUnsafe(info.size)
    let read = 0
    while (read < content.length) {
      const n = readSync(fd, content, read, content.length - read, null)
      if (n === 0) break // it shrank while we read: what is there is what git would see now too
      read += n
    }
    const bytes = read === content.length ? content : content.subarray(0, read)
    return { kind: "file", executable: (info.mode & 0o100) !== 0, content: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length) }
  } finally {
    closeSync(fd)
  }
}

const nodeSourceTree: SourceTreeService = {
  stat: (path) =>
    Effect.try({
      try: () => {
        const info = statSync(path)
        return info.isDirectory() ? "directory" : info.isFile() ? "file" : "other"
      },
      catch: sourceError(path, "stat it")
    }),
  list: (dir) =>
    Effect.try({
      try: () => readdirSync(dir, { withFileTypes: true }).map((d): DirEntry => ({ name: d.name, kind: kindOfDirent(d) })),
      catch: sourceError(dir, "list it")
    }),
  readText: (path, maxSize) =>
    Effect.try({
      try: () => {
        let bytes: Buffer
        try {
          bytes = readFileSync(path)
        } catch (e) {
          if (codeOf(e) === "ENOENT") return Option.none()
          throw e
        }
        if (bytes.length > maxSize) throw tooLarge(path, bytes.length, maxSize)
        return Option.some(bytes.toString("utf8"))
      },
      catch: (e) => (e instanceof SourceError ? e : sourceError(path, "read it")(e))
    }),
  readLeaves: (leaves, { maxBytes, maxFileSize }) =>
    Effect.suspend(() => {
      const out: Array<Leaf> = []
      let bytes = 0
      for (const { path, kind } of leaves) {
        let leaf: Leaf
        try {
          leaf = readLeafSync(path, kind, maxFileSize)
        } catch (e) {
          return Effect.fail(e instanceof SourceError ? e : sourceError(path, "read it")(e))
        }
        out.push(leaf)
        bytes += leaf.kind === "file" ? leaf.content.length : leaf.kind === "symlink" ? leaf.target.length : 0
        if (bytes >= maxBytes) break
      }
      return Effect.succeed(out)
    })
}

/** The node:fs walker (the Tag's default; provide it explicitly to say so). */
export const layer: Layer.Layer<SourceTree> = Layer.succeed(SourceTree, nodeSourceTree)

// ---------------------------------------------------------------------------------------------
// The platform FileSystem (portable, slower: several round trips per entry, no lstat)

export const makePlatform = Effect.gen(function* () {
  const fs = yield* FileSystem.FileSystem
  const concurrency = 16

  const failWith = (path: string, what: string) => (e: PlatformError) =>
    new SourceError({
      reason: e._tag === "SystemError" && e.reason === "NotFound" ? "NotFound" : "Unreadable",
      path,
      detail: `cannot ${what}: ${e.message}`,
      cause: e
    })

  /** lstat with what the platform offers: readLink succeeds only on a symlink; otherwise stat (which follows). */
  const kindOf = (path: string): Effect.Effect<EntryKind, SourceError> =>
    fs.readLink(path).pipe(
      Effect.as<EntryKind>("symlink"),
      Effect.catchAll((e) =>
        e._tag === "SystemError" && e.reason === "NotFound"
          ? Effect.fail(failWith(path, "read it")(e))
          : fs.stat(path).pipe(
            Effect.mapError(failWith(path, "stat it")),
            Effect.map((info): EntryKind =>
              info.type === "File" ? "file" : info.type === "Directory" ? "directory" : "other")
          ))
    )

  const readLeaf = (path: string, kind: "file" | "symlink", maxFileSize: number): Effect.Effect<Leaf, SourceError> =>
    kind === "symlink"
      ? fs.readLink(path).pipe(
        Effect.map((target): Leaf => ({ kind: "symlink", target: new TextEncoder().encode(target) })),
        Effect.mapError(failWith(path, "read it"))
      )
      : Effect.flatMap(kindOf(path), (now): Effect.Effect<Leaf, SourceError> => {
        if (now === "symlink") return readLeaf(path, "symlink", maxFileSize)
        if (now !== "file") return Effect.succeed({ kind: "other" })
        return Effect.gen(function* () {
          const info = yield* fs.stat(path).pipe(Effect.mapError(failWith(path, "stat it")))
          const size = Number(info.size)
          if (size > maxFileSize) return yield* Effect.fail(tooLarge(path, size, maxFileSize))
          const content = yield* fs.readFile(path).pipe(Effect.mapError(failWith(path, "read it")))
          return { kind: "file", executable: (info.mode & 0o100) !== 0, content } satisfies Leaf
        })
      })

  return SourceTree.of({
    stat: (path) =>
      fs.stat(path).pipe(
        Effect.map((info) => (info.type === "Directory" ? "directory" : info.type === "File" ? "file" : "other")),
        Effect.mapError(failWith(path, "stat it"))
      ),
    list: (dir) =>
      fs.readDirectory(dir).pipe(
        Effect.mapError(failWith(dir, "list it")),
        Effect.flatMap((names) =>
          Effect.forEach(names, (name) => Effect.map(kindOf(join(dir, name)), (kind): DirEntry => ({ name, kind })), {
            concurrency
          }))
      ),
    readText: (path, maxSize) =>
      fs.readFile(path).pipe(
        Effect.map(Option.some),
        Effect.catchIf(
          (e) => e._tag === "SystemError" && e.reason === "NotFound",
          () => Effect.succeed(Option.none<Uint8Array>())
        ),
        Effect.mapError(failWith(path, "read it")),
        Effect.flatMap(Option.match({
          onNone: () => Effect.succeed(Option.none<string>()),
          onSome: (bytes) =>
            bytes.length > maxSize
              ? Effect.fail(tooLarge(path, bytes.length, maxSize))
              : Effect.succeed(Option.some(new TextDecoder().decode(bytes)))
        }))
      ),
    // Reads `concurrency` leaves at a time, stopping after the group that reaches maxBytes.
    readLeaves: (leaves, { maxBytes, maxFileSize }) =>
      Effect.gen(function* () {
        const out: Array<Leaf> = []
        let bytes = 0
        for (let i = 0; i < leaves.length && (out.length === 0 || bytes < maxBytes); i += concurrency) {
          const group = yield* Effect.forEach(leaves.slice(i, i + concurrency), (l) => readLeaf(l.path, l.kind, maxFileSize), {
            concurrency
          })
          for (const leaf of group) {
            out.push(leaf)
            bytes += leaf.kind === "file" ? leaf.content.length : leaf.kind === "symlink" ? leaf.target.length : 0
          }
        }
        return out
      })
  })
})

/** The walker over @effect/platform's FileSystem: for tests and platforms without node:fs. */
export const layerPlatform: Layer.Layer<SourceTree, never, FileSystem.FileSystem> = Layer.effect(SourceTree, makePlatform)
