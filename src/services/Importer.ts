/**
 * Import a directory into the ObjectStore as a git tree, exactly as `git add -A && git write-tree` would record it:
 *
 * - a regular file is a blob with mode 100755 when its owner-execute bit is set, else 100644;
 * - a symlink is a blob holding its link text, mode 120000 (never followed);
 * - a directory is a tree (40000); a directory with nothing to import is left out, as git does;
 * - `.git` (any case) is skipped; sockets, FIFOs and devices are skipped, as git does;
 * - ignore rules in gitignore syntax: every `.upmignore` (relative to its own directory, deeper files first, last
 *   matching line wins, `!` re-includes), then upm.json's `ignore` (relative to the root). When upm.json has
 *   `files`, only files matching one of those patterns (or below a matching directory) are imported, and upm.json
 *   itself always is.
 *
 * Patterns are matched by `ignore`, the npm package that ESLint and Prettier use for gitignore semantics.
 */
import { FileSystem, Path } from "@effect/platform"
import type { PlatformError } from "@effect/platform/Error"
import { Effect, Either, Option, ParseResult, Schema } from "effect"
import ignore, { type Ignore } from "ignore"
import { batches } from "../domain/Batches.js"
import { badEntryName, encodeTree, type TreeEntry } from "../domain/GitObject.js"
import { decodeManifestJson, type Manifest, MANIFEST_FILE } from "../domain/Manifest.js"
import type { ObjectHash } from "../domain/ObjectHash.js"
import { ObjectStore, type StoreError } from "./ObjectStore.js"

export const IGNORE_FILE = ".upmignore"

export class ImportError extends Schema.TaggedError<ImportError>()("ImportError", {
  reason: Schema.Literal("NotADirectory", "Unreadable", "BadName", "BadManifest", "BadPattern", "TooLarge"),
  /** The offending path, relative to the imported directory ("" for the directory itself). */
  path: Schema.String,
  detail: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {}

export interface ImportOptions {
  /** Extra ignore patterns (gitignore syntax, relative to the root), applied after upm.json's `ignore`. */
  readonly ignore?: ReadonlyArray<string>
  /** Files read and stored at once (default 32). */
  readonly concurrency?: number
  /** Refuse a directory with more files than this (default 1,000,000). */
  readonly maxFiles?: number
  /** Refuse a file larger than this many bytes (default 1 GiB). */
  readonly maxFileSize?: number
}

export interface ImportResult {
  /** The root tree. */
  readonly tree: ObjectHash
  /** Files (blobs, symlinks included) in the tree. */
  readonly files: number
  /** Bytes of file content read. */
  readonly bytes: number
  /** upm.json at the root, decoded, when there is one. */
  readonly manifest: Option.Option<Manifest>
}

/** A batch of files handed to putMany: at most this many, and at most this many bytes (unless one file is bigger). */
const BATCH_FILES = 512
const BATCH_BYTES = 32 * 1024 * 1024

type Kind =
  | { readonly kind: "file"; readonly executable: boolean; readonly size: number }
  | { readonly kind: "symlink"; readonly target: string }
  | { readonly kind: "directory" }
  | { readonly kind: "other" }

/** One level of ignore rules: a matcher and the directory (relative to the root) its patterns are relative to. */
interface RuleSet {
  readonly base: string
  readonly matcher: Ignore
}

const makeMatcher = (patterns: ReadonlyArray<string>, where: string): Either.Either<Ignore, ImportError> =>
  Either.try({
    try: () => ignore().add([...patterns]),
    catch: (cause) => new ImportError({ reason: "BadPattern", path: where, detail: String(cause), cause })
  })

/** The verdict of one rule set for a path (relative to the root): ignored, re-included, or no opinion. */
const verdict = (rules: RuleSet, path: string, isDirectory: boolean): "ignored" | "unignored" | undefined => {
  const relative = rules.base === "" ? path : path.slice(rules.base.length + 1)
  const result = rules.matcher.test(isDirectory ? `${relative}/` : relative)
  return result.ignored ? "ignored" : result.unignored ? "unignored" : undefined
}

/** Imports `dir` into the ObjectStore and returns its tree. */
export const importDirectory = (dir: string, options: ImportOptions = {}) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const store = yield* ObjectStore
    const concurrency = options.concurrency ?? 32
    const maxFiles = options.maxFiles ?? 1_000_000
    const maxFileSize = options.maxFileSize ?? 1024 * 1024 * 1024
    let files = 0
    let bytes = 0

    const unreadable = (rel: string, what: string) => (cause: PlatformError) =>
      new ImportError({ reason: "Unreadable", path: rel, detail: `cannot ${what}: ${cause.message}`, cause })

    /** lstat, with what the platform offers: readLink succeeds only on a symlink; otherwise stat (which follows). */
    const kindOf = (abs: string, rel: string): Effect.Effect<Kind, ImportError> =>
      fs.readLink(abs).pipe(
        Effect.map((target): Kind => ({ kind: "symlink", target })),
        Effect.catchAll((e) =>
          e._tag === "SystemError" && e.reason === "NotFound"
            ? Effect.fail(unreadable(rel, "read it")(e))
            : fs.stat(abs).pipe(
              Effect.mapError(unreadable(rel, "stat it")),
              Effect.map((info): Kind =>
                info.type === "File"
                  ? { kind: "file", executable: (info.mode & 0o100) !== 0, size: Number(info.size) }
                  : info.type === "Directory"
                  ? { kind: "directory" }
                  : { kind: "other" })
            ))
      )

    // The directory itself may be reached through a symlink (only what is inside is recorded as links).
    const root = yield* fs.stat(dir).pipe(Effect.mapError(unreadable("", "stat it")))
    if (root.type !== "Directory") {
      return yield* Effect.fail(new ImportError({ reason: "NotADirectory", path: "", detail: `${dir} is not a directory` }))
    }

    // upm.json first: its ignore/files shape the walk.
    const manifestText = yield* fs.readFileString(path.join(dir, MANIFEST_FILE)).pipe(
      Effect.map(Option.some),
      Effect.catchIf((e) => e._tag === "SystemError" && e.reason === "NotFound", () => Effect.succeed(Option.none<string>())),
      Effect.mapError(unreadable(MANIFEST_FILE, "read it"))
    )
    const manifest = yield* Option.match(manifestText, {
      onNone: () => Effect.succeed(Option.none<Manifest>()),
      onSome: (text) =>
        Either.match(decodeManifestJson(text), {
          onLeft: (e) =>
            Effect.fail(new ImportError({
              reason: "BadManifest",
              path: MANIFEST_FILE,
              detail: ParseResult.TreeFormatter.formatErrorSync(e)
            })),
          onRight: (m) => Effect.succeed(Option.some(m))
        })
    })
    const manifestIgnore = Option.match(manifest, { onNone: () => [], onSome: (m) => m.ignore ?? [] })
    const extra = yield* makeMatcher([...manifestIgnore, ...(options.ignore ?? [])], MANIFEST_FILE)
    const files_ = Option.flatMap(manifest, (m) => Option.fromNullable(m.files))
    const include = Option.isSome(files_) ? Option.some(yield* makeMatcher(files_.value, MANIFEST_FILE)) : Option.none()

    /** Whether `rel` is left out: deeper rule sets first, the first with an opinion decides. */
    const excluded = (rules: ReadonlyArray<RuleSet>, rel: string, isDirectory: boolean): boolean => {
      for (let i = rules.length - 1; i >= 0; i--) {
        const v = verdict(rules[i]!, rel, isDirectory)
        if (v !== undefined) return v === "ignored"
      }
      return false
    }

    // The walk has three flat phases, each one bounded `Effect.forEach` over everything at hand (nesting bounded
    // loops per directory would multiply the concurrency by the depth): scan level by level, then read and store
    // every file, then store the trees deepest first.
    interface Dir {
      readonly abs: string
      readonly rel: string
      readonly rules: ReadonlyArray<RuleSet>
      readonly children: Array<Child>
      hash: ObjectHash | undefined
    }
    interface Child {
      readonly name: string
      readonly abs: string
      readonly rel: string
      readonly kind: Kind
      readonly dir: Dir | undefined
      hash: ObjectHash | undefined
    }

    /** Lists a directory and reads its `.upmignore`; the names to look at and the rules that apply below it. */
    const list = (d: Dir) =>
      Effect.gen(function* () {
        const names = yield* fs.readDirectory(d.abs).pipe(Effect.mapError(unreadable(d.rel, "list it")))
        let rules = d.rules
        if (names.includes(IGNORE_FILE)) {
          const where = d.rel === "" ? IGNORE_FILE : `${d.rel}/${IGNORE_FILE}`
          const text = yield* fs.readFileString(path.join(d.abs, IGNORE_FILE)).pipe(Effect.mapError(unreadable(where, "read it")))
          const matcher = yield* makeMatcher(text.split(/\r?\n/), where)
          // The root's .upmignore sits below upm.json's ignore, which is applied after it (so it wins).
          rules = d.rel === "" ? [{ base: "", matcher }, ...d.rules] : [...d.rules, { base: d.rel, matcher }]
        }
        const items: Array<{ readonly parent: Dir; readonly name: string; readonly rules: ReadonlyArray<RuleSet> }> = []
        for (const name of names.sort()) {
          if (name.toLowerCase() === ".git") continue
          const bad = badEntryName(name)
          if (bad !== undefined) {
            return yield* Effect.fail(new ImportError({ reason: "BadName", path: d.rel === "" ? name : `${d.rel}/${name}`, detail: bad }))
          }
          items.push({ parent: d, name, rules })
        }
        return items
      })

    /** What one name is, and whether it is kept. */
    const classify = (item: { readonly parent: Dir; readonly name: string; readonly rules: ReadonlyArray<RuleSet> }) => {
      const { parent, name, rules } = item
      const rel = parent.rel === "" ? name : `${parent.rel}/${name}`
      const abs = path.join(parent.abs, name)
      const always = parent.rel === "" && name === MANIFEST_FILE
      return Effect.map(kindOf(abs, rel), (kind): Child | undefined => {
        if (kind.kind === "other") return undefined
        if (!always && excluded(rules, rel, kind.kind === "directory")) return undefined
        if (kind.kind === "directory") {
          return { name, abs, rel, kind, hash: undefined, dir: { abs, rel, rules, children: [], hash: undefined } }
        }
        if (!always && Option.isSome(include) && !include.value.ignores(rel)) return undefined
        return { name, abs, rel, kind, dir: undefined, hash: undefined }
      })
    }

    /** A leaf's blob body: the link text of a symlink, the content of a file. */
    const bodyOf = (child: Child): Effect.Effect<Uint8Array, ImportError> => {
      const kind = child.kind
      if (kind.kind === "symlink") return Effect.succeed(new TextEncoder().encode(kind.target))
      if (kind.kind === "file" && kind.size > maxFileSize) {
        return Effect.fail(new ImportError({
          reason: "TooLarge", path: child.rel, detail: `${kind.size} bytes, more than the limit of ${maxFileSize}`
        }))
      }
      return fs.readFile(child.abs).pipe(
        Effect.tap((body) => Effect.sync(() => { bytes += body.length })),
        Effect.mapError(unreadable(child.rel, "read it"))
      )
    }

    /** Files go to the store in batches (putMany: one existence check per batch where the store can), bounded in bytes. */
    const fileBatches = (leaves: ReadonlyArray<Child>) =>
      batches(leaves, (leaf) => (leaf.kind.kind === "file" ? leaf.kind.size : 0), BATCH_FILES, BATCH_BYTES)

    const storeBatch = (batch: ReadonlyArray<Child>) =>
      Effect.gen(function* () {
        const bodies = yield* Effect.forEach(batch, bodyOf, { concurrency })
        const hashes = yield* store.putMany(bodies.map((body) => ({ type: "blob" as const, body })))
        batch.forEach((child, i) => { child.hash = hashes[i] })
      })

    const rootDir: Dir = { abs: dir, rel: "", rules: [{ base: "", matcher: extra }], children: [], hash: undefined }
    const levels: Array<ReadonlyArray<Dir>> = []
    const leaves: Array<Child> = []
    let level: ReadonlyArray<Dir> = [rootDir]
    while (level.length > 0) {
      levels.push(level)
      const items = (yield* Effect.forEach(level, list, { concurrency })).flat()
      const children = yield* Effect.forEach(items, classify, { concurrency })
      const next: Array<Dir> = []
      items.forEach((item, i) => {
        const child = children[i]
        if (child === undefined) return
        item.parent.children.push(child)
        if (child.dir !== undefined) next.push(child.dir)
        else leaves.push(child)
      })
      if (leaves.length > maxFiles) {
        return yield* Effect.fail(new ImportError({ reason: "TooLarge", path: "", detail: `more than ${maxFiles} files` }))
      }
      level = next
    }
    yield* Effect.forEach(fileBatches(leaves), storeBatch, { discard: true })
    files = leaves.length
    for (const dirs of levels.reverse()) {
      yield* Effect.forEach(dirs, (d) => {
        const entries: Array<TreeEntry> = []
        for (const c of d.children) {
          const hash = c.dir !== undefined ? c.dir.hash : c.hash
          if (hash === undefined) continue
          const mode = c.kind.kind === "directory" ? "40000" : c.kind.kind === "symlink" ? "120000"
            : c.kind.kind === "file" && c.kind.executable ? "100755" : "100644"
          entries.push({ mode, name: c.name, hash })
        }
        // git records no empty directories (the root is the exception: an empty package is the empty tree)
        if (entries.length === 0 && d.rel !== "") return Effect.void
        return Effect.map(store.put("tree", encodeTree(entries)), (hash) => { d.hash = hash })
      }, { concurrency, discard: true })
    }
    const tree = rootDir.hash
    if (tree === undefined) return yield* Effect.dieMessage("the root directory always gives a tree")
    const result: ImportResult = { tree, files, bytes, manifest }
    return result
  })
