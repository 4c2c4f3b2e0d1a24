/**
 * `upm.lock`: what an install resolved to, so the next install (here or on another machine) gets exactly the
 * same bytes. For each package: the exact version, the hash of its release tag (which fixes every byte of its
 * tree) and the fingerprint of the key that signed it; and the edges, so the layout can be rebuilt without
 * asking anyone.
 *
 * ```json
 * {
 *   "lockfileVersion": 1,
 *   "dependencies": { "bob/colors": { "range": "^2.0.0", "version": "2.1.0" } },
 *   "packages": [
 *     { "name": "bob/colors", "version": "2.1.0", "tag": "3f…", "signer": "SHA256:…",
 *       "dependencies": { "carol/x": "1.0.0" } }
 *   ]
 * }
 * ```
 *
 * The text is deterministic (keys and packages sorted, two-space indent, final newline), so the same
 * resolution always writes the same file and diffs stay small.
 *
 * `--frozen`: the lockfile must exist and record exactly the requirements being installed; then it is installed
 * as is and never written. Without `--frozen`, a lockfile whose requirements still match is installed as is; one
 * whose requirements changed is re-resolved with its versions preferred, and rewritten.
 */
import { Either, ParseResult, Schema } from "effect"
import semver from "semver"
import { ObjectHash } from "./ObjectHash.js"
import { PackageName, Range, Version } from "./Package.js"

export const LOCKFILE = "upm.lock"
export const LOCKFILE_VERSION = 1
/** A lockfile larger than this is not one we wrote. */
export const MAX_LOCKFILE_BYTES = 16 * 1024 * 1024

export const LockedPackage = Schema.Struct({
  name: PackageName,
  version: Version,
  /** Hash of the release's annotated tag. */
  tag: ObjectHash,
  /** OpenSSH fingerprint of the key that signed the tag (`SHA256:…`). */
  signer: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(256)),
  /** Each dependency with the exact version it resolved to. */
  dependencies: Schema.optionalWith(
    Schema.Record({ key: PackageName, value: Version }).pipe(
      Schema.filter((r) => Object.keys(r).length <= 1000 || "more than 1000 dependencies")
    ),
    { default: () => ({}) }
  )
})
export type LockedPackage = typeof LockedPackage.Type

export const RootDependency = Schema.Struct({ range: Range, version: Version })

export const Lockfile = Schema.Struct({
  lockfileVersion: Schema.Literal(LOCKFILE_VERSION),
  dependencies: Schema.Record({ key: PackageName, value: RootDependency }).pipe(
    Schema.filter((r) => Object.keys(r).length <= 10_000 || "more than 10000 dependencies")
  ),
  packages: Schema.Array(LockedPackage).pipe(Schema.maxItems(10_000))
})
export type Lockfile = typeof Lockfile.Type

export class LockfileInvalid extends Schema.TaggedError<LockfileInvalid>()("LockfileInvalid", {
  path: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `${this.path}: ${this.detail}`
  }
}

const key = (name: string, version: string) => `${name}@${version}`
const byName = <T>([a]: readonly [string, T], [b]: readonly [string, T]) => (a < b ? -1 : a > b ? 1 : 0)

/** Edges that point at packages the file does not list, or duplicate entries: a hand-edited or merged file. */
const consistency = (lock: Lockfile): ReadonlyArray<string> => {
  const problems: Array<string> = []
  const present = new Set<string>()
  for (const p of lock.packages) {
    if (present.has(key(p.name, p.version))) problems.push(`packages: ${key(p.name, p.version)} is listed twice`)
    present.add(key(p.name, p.version))
  }
  for (const [name, root] of Object.entries(lock.dependencies)) {
    if (!present.has(key(name, root.version))) problems.push(`dependencies.${name}: ${key(name, root.version)} is not in packages`)
    if (!semver.satisfies(root.version, root.range)) {
      problems.push(`dependencies.${name}: ${root.version} does not satisfy "${root.range}"`)
    }
  }
  for (const p of lock.packages) {
    for (const [name, version] of Object.entries(p.dependencies)) {
      if (!present.has(key(name, version))) {
        problems.push(`${key(p.name, p.version)} depends on ${key(name, version)}, which is not in packages`)
      }
    }
  }
  return problems
}

/** Reads `upm.lock` text; `path` names the file in errors. */
export const decodeLockfile = (text: string, path: string): Either.Either<Lockfile, LockfileInvalid> => {
  if (text.length > MAX_LOCKFILE_BYTES) {
    return Either.left(new LockfileInvalid({ path, detail: `larger than ${MAX_LOCKFILE_BYTES} bytes` }))
  }
  return Schema.decodeUnknownEither(Schema.parseJson(Lockfile), { errors: "all" })(text).pipe(
    Either.mapLeft((e) =>
      new LockfileInvalid({
        path,
        detail: `${ParseResult.TreeFormatter.formatErrorSync(e)}\n(delete it and run \`upm install\` to write a new one)`
      })),
    Either.flatMap((lock) => {
      const problems = consistency(lock)
      return problems.length === 0
        ? Either.right(lock)
        : Either.left(new LockfileInvalid({
          path,
          detail: `inconsistent: ${problems.slice(0, 5).join("; ")}\n(delete it and run \`upm install\`)`
        }))
    })
  )
}

/** The canonical text: sorted, two-space indented, newline-terminated. */
export const encodeLockfile = (lock: Lockfile): string => {
  const packages = [...lock.packages]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : semver.compare(a.version, b.version)))
    .map((p) => ({
      name: p.name,
      version: p.version,
      tag: p.tag,
      signer: p.signer,
      dependencies: Object.fromEntries(Object.entries(p.dependencies).sort(byName))
    }))
  const dependencies = Object.fromEntries(
    Object.entries(lock.dependencies).sort(byName).map(([n, d]) => [n, { range: d.range, version: d.version }])
  )
  return `${JSON.stringify({ lockfileVersion: LOCKFILE_VERSION, dependencies, packages }, null, 2)}\n`
}

/**
 * Why this lockfile does not record exactly `requires` (the root requirements being installed): the names added,
 * removed, or whose range changed. Empty when it matches, so it can be installed as is.
 */
export const requirementChanges = (
  lock: Lockfile,
  requires: Readonly<Record<string, string>>
): ReadonlyArray<string> => {
  const changes: Array<string> = []
  for (const [name, range] of Object.entries(requires).sort(byName)) {
    const locked = lock.dependencies[name as PackageName]
    if (locked === undefined) changes.push(`${name}@${range} is not in the lockfile`)
    else if (locked.range !== range) changes.push(`${name}: the lockfile has "${locked.range}", upm.json asks for "${range}"`)
  }
  for (const name of Object.keys(lock.dependencies).sort()) {
    if (!Object.hasOwn(requires, name)) changes.push(`${name} is in the lockfile but no longer required`)
  }
  return changes
}

/** The lockfile's versions, per package, to prefer when re-resolving. */
export const preferences = (lock: Lockfile): ReadonlyMap<PackageName, ReadonlyArray<Version>> => {
  const out = new Map<PackageName, Array<Version>>()
  for (const p of lock.packages) out.set(p.name, [...(out.get(p.name) ?? []), p.version])
  return out
}

/** The locked entry of one release, if any. */
export const lockedEntry = (lock: Lockfile, name: string, version: string): LockedPackage | undefined =>
  lock.packages.find((p) => p.name === name && p.version === version)
