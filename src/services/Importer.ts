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
 *
 * The directory is walked and read through the SourceTree service (by default synchronous node:fs calls in
 * batches, as git does; see SourceTree.ts for why), and stored through the ObjectStore in batches (putMany).
 */
import { Path } from "@effect/platform"
import { Effect, Either, Option, ParseResult, Schema } from "effect"
import ignore, { type Ignore } from "ignore"
import { batches } from "../domain/Batches.js"
import { badEntryName, encodeTree, type TreeEntry } from "../domain/GitObject.js"
import { decodeManifestJson, type Manifest, MANIFEST_FILE } from "../domain/Manifest.js"
import type { ObjectHash } from "../domain/ObjectHash.js"
import { ObjectStore, type StoredObject } from "./ObjectStore.js"
import { type EntryKind, type SourceError, SourceTree } from "./SourceTree.js"

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
  /** Trees stored at once (default 32); files are read and stored in batches of up to 512 files or 32 MiB. */
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
    const source = yield* SourceTree
    const path = yield* Path.Path
    const store = yield* ObjectStore
    const concurrency = options.concurrency ?? 32
    const maxFiles = options.maxFiles ?? 1_000_000
    const maxFileSize = options.maxFileSize ?? 1024 * 1024 * 1024

    /** The walker's error, named by the path relative to the imported directory. */
    const failed = (rel: string) => (e: SourceError) =>
      new ImportError({ reason: e.reason === "TooLarge" ? "TooLarge" : "Unreadable", path: rel, detail: e.detail, cause: e })

    // The directory itself may be reached through a symlink (only what is inside is recorded as links).
    const rootKind = yield* source.stat(dir).pipe(Effect.mapError(failed("")))
    if (rootKind !== "directory") {
      return yield* Effect.fail(new ImportError({ reason: "NotADirectory", path: "", detail: `${dir} is not a directory` }))
    }

    // upm.json first: its ignore/files shape the walk.
    const manifestText = yield* source.readText(path.join(dir, MANIFEST_FILE), maxFileSize).pipe(
      Effect.mapError(failed(MANIFEST_FILE))
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
    const extraPatterns = [...manifestIgnore, ...(options.ignore ?? [])]
    const extra = yield* makeMatcher(extraPatterns, MANIFEST_FILE)
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

    // Three phases: list level by level (kinds come with the listing), then read and store the files in batches,
    // then store the trees deepest level first.
    interface Dir {
      readonly abs: string
      readonly rel: string
      readonly rules: ReadonlyArray<RuleSet>
      readonly children: Array<Entry>
      hash: ObjectHash | undefined
    }
    interface Entry {
      readonly name: string
      readonly dir: Dir | undefined
      /** Set once stored: the blob or the tree. */
      hash: ObjectHash | undefined
      /** Set once read (a leaf's mode depends on what it is when read). */
      mode: TreeEntry["mode"] | undefined
    }
    interface LeafToRead {
      readonly abs: string
      readonly rel: string
      readonly kind: "file" | "symlink"
      readonly entry: Entry
    }

    /** Lists a directory, reads its `.upmignore`, and sorts what is kept into subdirectories and leaves. */
    const scan = (d: Dir, subdirs: Array<Dir>, leaves: Array<LeafToRead>) =>
      Effect.gen(function* () {
        const listed = yield* source.list(d.abs).pipe(Effect.mapError(failed(d.rel)))
        const entries = [...listed].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
        let rules = d.rules
        if (entries.some((e) => e.name === IGNORE_FILE && e.kind !== "directory")) {
          const where = d.rel === "" ? IGNORE_FILE : `${d.rel}/${IGNORE_FILE}`
          const text = yield* source.readText(path.join(d.abs, IGNORE_FILE), maxFileSize).pipe(Effect.mapError(failed(where)))
          const matcher = yield* makeMatcher(Option.getOrElse(text, () => "").split(/\r?\n/), where)
          // The root's .upmignore sits below upm.json's ignore, which is applied after it (so it wins).
          rules = d.rel === "" ? [{ base: "", matcher }, ...d.rules] : [...d.rules, { base: d.rel, matcher }]
        }
        for (const { name, kind } of entries) {
          if (name.toLowerCase() === ".git") continue
          const rel = d.rel === "" ? name : `${d.rel}/${name}`
          const bad = badEntryName(name)
          if (bad !== undefined) return yield* Effect.fail(new ImportError({ reason: "BadName", path: rel, detail: bad }))
          const keep = keepEntry(d, name, rel, kind, rules)
          if (keep === undefined) continue
          const abs = d.abs.endsWith(path.sep) ? d.abs + name : d.abs + path.sep + name // path.join, without its normalising
          if (keep === "directory") {
            const sub: Dir = { abs, rel, rules, children: [], hash: undefined }
            d.children.push({ name, dir: sub, hash: undefined, mode: "40000" })
            subdirs.push(sub)
          } else {
            const entry: Entry = { name, dir: undefined, hash: undefined, mode: undefined }
            d.children.push(entry)
            leaves.push({ abs, rel, kind: keep, entry })
          }
        }
      })

    /** What an entry is imported as, or undefined when it is left out (ignored, not in `files`, a socket…). */
    const keepEntry = (d: Dir, name: string, rel: string, kind: EntryKind, rules: ReadonlyArray<RuleSet>) => {
      if (kind === "other") return undefined
      const always = d.rel === "" && name === MANIFEST_FILE
      if (!always && excluded(rules, rel, kind === "directory")) return undefined
      if (kind === "directory") return kind
      if (!always && Option.isSome(include) && !include.value.ignores(rel)) return undefined
      return kind
    }

    // (no rule set at all without patterns: every path would still be tested against it)
    const rootRules = extraPatterns.length > 0 ? [{ base: "", matcher: extra }] : []
    const rootDir: Dir = { abs: dir, rel: "", rules: rootRules, children: [], hash: undefined }
    const levels: Array<ReadonlyArray<Dir>> = []
    const leaves: Array<LeafToRead> = []
    let level: ReadonlyArray<Dir> = [rootDir]
    while (level.length > 0) {
      levels.push(level)
      const next: Array<Dir> = []
      for (const d of level) yield* scan(d, next, leaves)
      if (leaves.length > maxFiles) {
        return yield* Effect.fail(new ImportError({ reason: "TooLarge", path: "", detail: `more than ${maxFiles} files` }))
      }
      level = next
    }

    // Files: read a batch (bounded in count and bytes), store it with one putMany, go on with the rest.
    let files = 0
    let bytes = 0
    for (let start = 0; start < leaves.length;) {
      const batch = leaves.slice(start, start + BATCH_FILES)
      const read = yield* source.readLeaves(batch.map((l) => ({ path: l.abs, kind: l.kind })), {
        maxFileSize,
        maxBytes: BATCH_BYTES
      }).pipe(Effect.mapError((e) => failed(batch.find((l) => l.abs === e.path)?.rel ?? e.path)(e)))
      const objects: Array<StoredObject> = []
      const stored: Array<Entry> = []
      read.forEach((leaf, i) => {
        if (leaf.kind === "other") return // replaced by a socket or FIFO since the listing: skipped, as git does
        const entry = batch[i]!.entry
        entry.mode = leaf.kind === "symlink" ? "120000" : leaf.executable ? "100755" : "100644"
        objects.push({ type: "blob", body: leaf.kind === "symlink" ? leaf.target : leaf.content })
        stored.push(entry)
        if (leaf.kind === "file") bytes += leaf.content.length
      })
      const hashes = yield* store.putMany(objects)
      stored.forEach((entry, i) => { entry.hash = hashes[i] })
      files += stored.length
      start += Math.max(read.length, 1)
    }

    // Trees, deepest level first, each level in batches.
    for (const dirs of levels.reverse()) {
      const built: Array<{ readonly dir: Dir; readonly body: Uint8Array }> = []
      for (const d of dirs) {
        const entries: Array<TreeEntry> = []
        for (const c of d.children) {
          const hash = c.dir !== undefined ? c.dir.hash : c.hash
          if (hash === undefined || c.mode === undefined) continue
          entries.push({ mode: c.mode, name: c.name, hash })
        }
        // git records no empty directories (the root is the exception: an empty package is the empty tree)
        if (entries.length === 0 && d.rel !== "") continue
        built.push({ dir: d, body: encodeTree(entries) })
      }
      yield* Effect.forEach(
        batches(built, (t) => t.body.length, BATCH_FILES, BATCH_BYTES),
        (batch) =>
          Effect.map(store.putMany(batch.map((t) => ({ type: "tree" as const, body: t.body }))), (hashes) => {
            batch.forEach((t, i) => { t.dir.hash = hashes[i] })
          }),
        { concurrency, discard: true }
      )
    }
    const tree = rootDir.hash
    if (tree === undefined) return yield* Effect.dieMessage("the root directory always gives a tree")
    const result: ImportResult = { tree, files, bytes, manifest }
    return result
  })
