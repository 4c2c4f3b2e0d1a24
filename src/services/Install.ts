/**
 * Install: from requirements (upm.json, the command line, upm.lock) to files in `upm_modules/`.
 *
 * 1. **Plan.** With a lockfile that records exactly the requirements being installed, the plan is the
 *    lockfile: nothing is resolved and, when every release is in the local store, nothing touches the network.
 *    Otherwise the Resolver runs over the server's versions and the releases' signed metadata (preferring the
 *    lockfile's versions); when the server is unreachable it runs over the local store alone, so anything
 *    installed once installs again offline. `--frozen` refuses any plan but the lockfile's.
 * 2. **Fetch** what the local store lacks, verifying each release as it arrives (signature, the owner keys,
 *    trust on first use, the lockfile's pin against substitution and rollback), then seal it locally.
 * 3. **Verify** every release of the plan (cached ones too): signature, and the signer the lockfile pins.
 * 4. **Lay out**: one directory per package at `upm_modules/<owner>/<name>`; a second version of a package (an
 *    incompatible range) goes under the package that needs it, `…/<dependent>/upm_modules/<owner>/<name>`, as
 *    Node resolves modules. Exports are safe (Exporter) and skipped when `upm_modules/.upm-state.json` says
 *    the directory already holds that release.
 * 5. **Write** `upm.lock` (and, for packages named on the command line, `upm.json`).
 */
import { FileSystem, Path } from "@effect/platform"
import { Effect, Either, FiberSet, Option, Schema } from "effect"
import semver from "semver"
import {
  decodeLockfile, encodeLockfile, LOCKFILE, type Lockfile, type LockedPackage, lockedEntry, preferences,
  requirementChanges
} from "../domain/Lockfile.js"
import { type Manifest, MANIFEST_FILE, parseManifest } from "../domain/Manifest.js"
import { ObjectHash } from "../domain/ObjectHash.js"
import { ownerOf, PackageName, Range, releaseRefName, Version } from "../domain/Package.js"
import { decodeReleaseMessage } from "../domain/ReleaseMessage.js"
import { fingerprint, formatPublicKey } from "../domain/SshKey.js"
import { exportTree } from "./Exporter.js"
import { KnownKeys, verifyRelease } from "./KnownKeys.js"
import { getDecoded, ObjectStore, RefName, sealRef } from "./ObjectStore.js"
import { localReleases } from "./LocalStore.js"
import type { InvalidServerAddress } from "./ClientConfig.js"
import * as OwnerChanges from "./OwnerChanges.js"
import { DEFAULT_CONNECTIONS, Remote, type ServerUnreachable } from "./Remote.js"
import { localHaves, type SyncClientError } from "./SyncClient.js"
import { type ResolvedPackage, resolve } from "./Resolver.js"
import { VerificationError, verifySignature } from "./Verifier.js"

// ---------------------------------------------------------------------------------------------
// Errors and values

export class LockfileOutOfDate extends Schema.TaggedError<LockfileOutOfDate>()("LockfileOutOfDate", {
  changes: Schema.Array(Schema.String),
  hint: Schema.String
}) {
  override get message() {
    return `upm.lock does not match the requirements (--frozen):\n${this.changes.map((c) => `  - ${c}`).join("\n")}`
  }
}

export class NothingToInstall extends Schema.TaggedError<NothingToInstall>()("NothingToInstall", {
  dir: Schema.String
}) {}

export interface Request {
  readonly name: PackageName
  readonly range: Range | undefined
}

export type InstallEvent =
  | { readonly _tag: "Resolving" }
  | { readonly _tag: "Offline"; readonly reason: string }
  | { readonly _tag: "Fetching"; readonly done: number; readonly total: number; readonly bytes: number; readonly name: string }
  | { readonly _tag: "Writing"; readonly done: number; readonly total: number }
  | { readonly _tag: "Trusted"; readonly owner: string; readonly keys: ReadonlyArray<string> }
  /** The owner's keys changed through records signed by keys already trusted: the pins follow. */
  | { readonly _tag: "KeysFollowed"; readonly owner: string; readonly keys: ReadonlyArray<string> }

export interface InstallOptions {
  /** The project directory (holds upm.json and upm.lock). */
  readonly dir: string
  /** Where packages go (default `<dir>/upm_modules`). */
  readonly into?: string
  readonly requests: ReadonlyArray<Request>
  readonly frozen: boolean
  readonly onEvent?: (event: InstallEvent) => Effect.Effect<void>
}

export interface InstalledPackage {
  readonly name: PackageName
  readonly version: Version
  readonly tag: ObjectHash
  readonly signer: string
  /** Where it was written, relative to the project directory. */
  readonly path: string
  readonly fetched: boolean
}

export interface InstallResult {
  readonly packages: ReadonlyArray<InstalledPackage>
  readonly lockfile: "unchanged" | "written"
  readonly resolved: boolean
  readonly connected: boolean
  readonly cycles: ReadonlyArray<ReadonlyArray<string>>
}

const STATE_FILE = ".upm-state.json"
const InstallState = Schema.Struct({
  version: Schema.Literal(1),
  /** Directory (relative to upm_modules) → the release tag it holds. */
  dirs: Schema.Record({ key: Schema.String, value: ObjectHash })
})

// ---------------------------------------------------------------------------------------------
// Reading the project

const readText = (file: string) =>
  Effect.flatMap(FileSystem.FileSystem, (fs) =>
    fs.readFileString(file).pipe(
      Effect.map(Option.some),
      Effect.catchIf((e) => e._tag === "SystemError" && e.reason === "NotFound", () => Effect.succeed(Option.none<string>()))
    ))

export const readLockfile = (file: string) =>
  Effect.flatMap(readText(file), Option.match({
    onNone: () => Effect.succeed(Option.none<Lockfile>()),
    onSome: (text) => Effect.map(decodeLockfile(text, file), Option.some)
  }))

const readProjectManifest = (file: string) =>
  Effect.flatMap(readText(file), Option.match({
    onNone: () => Effect.succeed(Option.none<Manifest>()),
    onSome: (text) => Effect.map(parseManifest(text, file), Option.some)
  }))

// ---------------------------------------------------------------------------------------------
// Releases in the local store

interface ReleaseInfo {
  readonly name: PackageName
  readonly version: Version
  readonly tag: ObjectHash
  readonly tree: ObjectHash
  readonly signer: string
  readonly publicKey: string
  readonly dependencies: Readonly<Record<string, Range>>
}

/** Reads and verifies (signature, metadata) a release tag that is in the local store. */
const readRelease = (hash: ObjectHash) =>
  Effect.gen(function* () {
    const object = yield* getDecoded(hash)
    if (object.type !== "tag") {
      return yield* new VerificationError({ reason: "BadTagName", detail: `${hash} is a ${object.type}, not a release tag` })
    }
    const { shape, publicKey } = yield* verifySignature(hash, object.tag)
    const metadata = yield* Either.mapLeft(decodeReleaseMessage(object.tag.message), (e) =>
      new VerificationError({ reason: "BadMetadata", detail: `${object.tag.tag}: ${e.detail}` }))
    return {
      name: shape.name,
      version: shape.version,
      tag: hash,
      tree: shape.tree,
      signer: fingerprint(publicKey),
      publicKey: formatPublicKey(publicKey),
      dependencies: metadata.dependencies ?? {},
      tagObject: object.tag
    }
  })

// ---------------------------------------------------------------------------------------------
// The install

export const install = (options: InstallOptions) =>
  Effect.scoped(Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const store = yield* ObjectStore
    const remote = yield* Remote
    const known = yield* KnownKeys
    const emit = options.onEvent ?? (() => Effect.void)
    const dir = path.resolve(options.dir)
    const into = path.resolve(dir, options.into ?? "upm_modules")
    const lockPath = path.join(dir, LOCKFILE)
    const manifestPath = path.join(dir, MANIFEST_FILE)

    const manifest = yield* readProjectManifest(manifestPath)
    const lock = yield* readLockfile(lockPath)

    // The root requirements: upm.json's dependencies, else the lockfile's; then the command line's.
    const requires: Record<string, string> = Option.isSome(manifest)
      ? { ...(manifest.value.dependencies ?? {}) }
      : Option.match(lock, {
        onNone: () => ({}),
        onSome: (l) => Object.fromEntries(Object.entries(l.dependencies).map(([n, d]) => [n, d.range]))
      })
    const explicit = new Set<string>()
    for (const r of options.requests) {
      explicit.add(r.name)
      requires[r.name] = r.range ?? "*"
    }
    if (Object.keys(requires).length === 0 && Option.isNone(lock)) {
      return yield* new NothingToInstall({ dir })
    }

    const changes = Option.match(lock, { onNone: () => ["there is no upm.lock yet"], onSome: (l) => requirementChanges(l, requires) })
    if (options.frozen && (changes.length > 0 || explicit.size > 0)) {
      return yield* new LockfileOutOfDate({
        changes: explicit.size > 0 ? [`--frozen installs only what upm.lock pins; drop the package names`, ...changes] : changes,
        hint: "run `upm install` without --frozen to update upm.lock, and commit it"
      })
    }

    // ---- plan
    const fetched = new Set<string>()
    const infos = new Map<string, ReleaseInfo>()
    let offline: string | undefined

    /**
     * The release in the local store, or fetched from the server (verified), then read. Once per release: a
     * prefetch already under way is joined, not repeated.
     */
    const obtaining = new Map<string, ReturnType<typeof obtainOnce>>()
    let requested = 0
    const obtain = (name: PackageName, version: Version, hint: Option.Option<ObjectHash>, pin: LockedPackage | undefined) =>
      Effect.suspend(() => {
        const key = `${name}@${version}`
        const running = obtaining.get(key)
        if (running !== undefined) return running
        return Effect.flatMap(Effect.cached(obtainOnce(name, version, hint, pin)), (once) => {
          obtaining.set(key, once)
          requested++
          return once
        })
      })
    const obtainOnce = (name: PackageName, version: Version, hint: Option.Option<ObjectHash>, pin: LockedPackage | undefined) =>
      Effect.gen(function* () {
        const key = `${name}@${version}`
        const cached = infos.get(key)
        if (cached !== undefined) return cached
        const ref = RefName.make(releaseRefName(name, version))
        const local = yield* store.readRef(ref)
        let hash: ObjectHash
        if (Option.isSome(local) && (pin === undefined || pin.tag === local.value)) {
          hash = local.value
        } else {
          hash = Option.isSome(hint) ? hint.value : yield* remoteHash(name, version)
          yield* fetchRelease(name, version, hash, pin)
        }
        const info = yield* readRelease(hash)
        if (info.name !== name || info.version !== version) {
          return yield* new VerificationError({ reason: "PinMismatch", detail: `${hash} is ${info.name}@${info.version}, expected ${key}` })
        }
        if (pin !== undefined && pin.signer !== info.signer) {
          return yield* new VerificationError({
            reason: "KeyChanged",
            detail: `${key} is signed by ${info.signer} but upm.lock pins ${pin.signer}`
          })
        }
        infos.set(key, info)
        return info
      })

    const remoteHashes = new Map<string, ObjectHash>()
    const remoteHash = (name: PackageName, version: Version) =>
      Effect.gen(function* () {
        const known = remoteHashes.get(`${name}@${version}`)
        if (known !== undefined) return known
        const match = yield* remote.withConnection((session) => session.match(name, Range.make(version)))
        if (Option.isNone(match) || match.value.version !== version) {
          return yield* new VerificationError({ reason: "PinMismatch", detail: `the server no longer has ${name}@${version}` })
        }
        return match.value.hash
      })

    // The keys the server reports for a namespace, asked once per owner.
    const ownerKeys = new Map<string, Effect.Effect<ReadonlyArray<string>, ServerUnreachable | SyncClientError | InvalidServerAddress>>()
    const serverKeysOf = (owner: string) =>
      Effect.suspend(() => {
        const known = ownerKeys.get(owner)
        if (known !== undefined) return known
        return Effect.flatMap(Effect.cached(remote.withConnection((session) => session.keys(owner))), (once) => {
          ownerKeys.set(owner, once)
          return once
        })
      })

    // Pulls run side by side on the Remote's pooled connections; checking and sealing one at a time (trust on
    // first use writes the known keys once per namespace).
    const checking = yield* Effect.makeSemaphore(1)
    let fetchedBytes = 0
    const fetchRelease = (name: PackageName, version: Version, hash: ObjectHash, pin: LockedPackage | undefined) =>
      Effect.gen(function* () {
        // Releases of this package already installed here are haves: only what changed travels (v2/v3).
        const haves = yield* localHaves(name)
        const pulled = yield* remote.withConnection((session) => session.pull(hash, { haves }))
        fetchedBytes += pulled.bytes
        const serverKeys = yield* serverKeysOf(ownerOf(name))
        yield* checking.withPermits(1)(checkAndSeal(name, version, hash, pin, serverKeys))
      })
    const checkAndSeal = (name: PackageName, version: Version, hash: ObjectHash, pin: LockedPackage | undefined, serverKeys: ReadonlyArray<string>) =>
      Effect.gen(function* () {
        const object = yield* getDecoded(hash)
        if (object.type !== "tag") {
          return yield* new VerificationError({ reason: "BadTagName", detail: `${hash} is a ${object.type}, not a release tag` })
        }
        yield* verifySignature(hash, object.tag)
        const before = yield* known.get(ownerOf(name))
        const check = verifyRelease({
          tagHash: hash,
          tag: object.tag,
          serverKeys,
          ...(pin === undefined ? {} : { pin: { name: pin.name, version: pin.version, tagHash: pin.tag } })
        })
        // A key the owner added with a signed record (`upm owner add`) is followed, not refused: if the server's
        // record chain leads from a pinned key to the signer, the pins become the chain's current keys.
        const { release } = yield* check.pipe(
          Effect.catchIf((e) => e._tag === "VerificationError" && e.reason === "KeyChanged" && Option.isSome(before), (e) =>
            Effect.gen(function* () {
              const owner = ownerOf(name)
              const followed = yield* remote.withConnection((session) =>
                OwnerChanges.followChain(session, owner, Option.getOrElse(before, () => [])).pipe(Effect.provideService(ObjectStore, store))).pipe(
                Effect.catchTag("OwnersError", () => Effect.succeed(Option.none<ReadonlyArray<string>>())))
              if (Option.isNone(followed)) return yield* Effect.fail(e)
              // Pins the server still lists (members' keys) stay; the namespace's own keys are the chain's.
              const kept = Option.getOrElse(before, () => []).filter((k) => serverKeys.includes(k))
              const pins = [...new Set([...followed.value, ...kept])]
              yield* known.accept(owner, pins)
              yield* emit({ _tag: "KeysFollowed", owner, keys: followed.value })
              return yield* check
            }))
        )
        if (release.name !== name || release.version !== version) {
          return yield* new VerificationError({ reason: "PinMismatch", detail: `asked for ${name}@${version}, got ${release.name}@${release.version}` })
        }
        if (Option.isNone(before)) yield* emit({ _tag: "Trusted", owner: ownerOf(name), keys: serverKeys })
        yield* sealRef(RefName.make(releaseRefName(name, version)), hash)
        fetched.add(`${name}@${version}`)
        // While resolving, the total is what is known so far.
        yield* emit({ _tag: "Fetching", done: fetched.size, total: Math.max(requested, fetched.size), bytes: fetchedBytes, name: `${name}@${version}` })
      })


    const goOffline = (e: ServerUnreachable) =>
      Effect.gen(function* () {
        if (offline === undefined) {
          offline = `${e.address} is unreachable (${e.detail})`
          yield* emit({ _tag: "Offline", reason: offline })
        }
      })

    const versionsOnce = (name: PackageName) =>
      Effect.gen(function* () {
        if (offline === undefined) {
          const all = yield* remote.withConnection((session) => session.versions(name)).pipe(
            Effect.map(Option.some),
            Effect.catchTag("ServerUnreachable", (e) => Effect.as(goOffline(e), Option.none()))
          )
          if (Option.isSome(all)) {
            for (const r of all.value) remoteHashes.set(`${name}@${r.version}`, r.hash)
            return all.value.map((r) => r.version)
          }
        }
        return (yield* localReleases(name).pipe(Effect.provideService(ObjectStore, store))).map((r) => r.version)
      })
    const listing = new Map<string, ReturnType<typeof versionsOnce>>()
    const versionsOf = (name: PackageName) =>
      Effect.suspend(() => {
        const running = listing.get(name)
        if (running !== undefined) return running
        return Effect.flatMap(Effect.cached(versionsOnce(name)), (once) => {
          listing.set(name, once)
          return once
        })
      })
    const pinOf = (name: PackageName, version: Version) => Option.isSome(lock) ? lockedEntry(lock.value, name, version) : undefined
    const obtainPlanned = (name: PackageName, version: Version) =>
      obtain(name, version, Option.fromNullable(remoteHashes.get(`${name}@${version}`)), pinOf(name, version))

    /**
     * Cold installs: once a release's dependencies are known, the versions and releases the resolver will most
     * likely ask for next (the locked version, else the highest in range) are fetched in the background, up to
     * the Remote's pooled connections at once; the resolver then joins them. A guess the resolver does not take
     * only leaves a verified release in the local store. Errors are left for the resolver's own request to meet.
     */
    const prefetches = yield* FiberSet.make()
    const prefetch = (deps: Readonly<Record<string, Range>>) =>
      Effect.forEach(Object.entries(deps), ([dep, range]) => {
        const name = PackageName.make(dep)
        const guess = Effect.gen(function* () {
          const versions = yield* versionsOf(name)
          const locked = Option.isSome(lock) ? lock.value.packages.find((p) => p.name === name && semver.satisfies(p.version, range)) : undefined
          const pick = locked?.version ?? semver.maxSatisfying([...versions], range)
          if (pick !== null) yield* obtainPlanned(name, Version.make(pick))
        })
        return FiberSet.run(prefetches, Effect.ignore(guess))
      }, { discard: true })

    const source = {
      versions: versionsOf,
      dependencies: (name: PackageName, version: Version) =>
        obtainPlanned(name, version).pipe(
          Effect.tap((info) => prefetch(info.dependencies)),
          Effect.map((info): Readonly<Record<string, Range>> => info.dependencies)
        )
    }

    interface Planned {
      readonly roots: ReadonlyMap<PackageName, Version>
      readonly packages: ReadonlyArray<ResolvedPackage>
      readonly cycles: ReadonlyArray<ReadonlyArray<string>>
    }
    let plan: Planned
    let resolved = false
    if (Option.isSome(lock) && changes.length === 0 && explicit.size === 0) {
      const l = lock.value
      plan = {
        roots: new Map(Object.entries(l.dependencies).map(([n, d]) => [PackageName.make(n), d.version])),
        packages: l.packages.map((p) => ({
          name: p.name,
          version: p.version,
          dependencies: new Map(Object.entries(p.dependencies).map(([n, v]) => [PackageName.make(n), v]))
        })),
        cycles: []
      }
    } else {
      yield* emit({ _tag: "Resolving" })
      const prefer = new Map(Option.match(lock, { onNone: () => new Map(), onSome: preferences }))
      for (const name of explicit) prefer.delete(name as PackageName)
      const roots = Object.entries(requires).map(([name, range]) => ({ name: PackageName.make(name), range: Range.make(range) }))
      plan = yield* resolve(source, roots, { prefer })
      resolved = true
    }

    // ---- fetch and verify everything in the plan
    const total = plan.packages.length
    let done = 0
    // (A lockfile's plan fetches its missing releases side by side; after a resolution they are all here.)
    yield* Effect.forEach(plan.packages, (p) =>
      obtainPlanned(p.name, p.version).pipe(
        Effect.zipRight(Effect.suspend(() => {
          done++
          return emit({ _tag: "Fetching", done, total, bytes: fetchedBytes, name: `${p.name}@${p.version}` })
        }))
      ), { concurrency: DEFAULT_CONNECTIONS, discard: true })

    // ---- lay out
    const placements = layout(plan.roots, plan.packages)
    const statePath = path.join(into, STATE_FILE)
    const previous = yield* readText(statePath).pipe(
      Effect.map(Option.flatMap((text) => Either.getRight(Schema.decodeUnknownEither(Schema.parseJson(InstallState))(text)))),
      Effect.map(Option.getOrElse(() => ({ version: 1 as const, dirs: {} as Record<string, ObjectHash> })))
    )
    yield* fs.makeDirectory(into, { recursive: true })
    const next: Record<string, ObjectHash> = {}
    let written = 0
    // Parents before children: a nested package lives inside its dependent's directory.
    const ordered = [...placements].sort((a, b) => a.dir.split("/").length - b.dir.split("/").length || (a.dir < b.dir ? -1 : 1))
    // Directories that no longer belong to the plan go first (deepest first).
    const keep = new Set(ordered.map((p) => p.dir))
    for (const old of Object.keys(previous.dirs).sort((a, b) => b.length - a.length)) {
      if (!keep.has(old)) yield* fs.remove(path.join(into, old), { recursive: true }).pipe(Effect.ignore)
    }
    for (const p of ordered) {
      const info = infos.get(`${p.name}@${p.version}`)!
      next[p.dir] = info.tag
      const target = path.join(into, p.dir)
      const parentChanged = ordered.some((q) => p.dir.startsWith(`${q.dir}/`) && previous.dirs[q.dir] !== infos.get(`${q.name}@${q.version}`)!.tag)
      if (previous.dirs[p.dir] === info.tag && !parentChanged && (yield* fs.exists(target))) continue
      yield* fs.makeDirectory(path.dirname(target), { recursive: true })
      yield* exportTree(info.tree, target, { overwrite: true })
      written++
      yield* emit({ _tag: "Writing", done: written, total: ordered.length })
    }
    yield* writeAtomically(statePath, `${JSON.stringify({ version: 1, dirs: next }, null, 2)}\n`)

    // ---- upm.json (packages named on the command line) and upm.lock
    const rootRanges: Record<string, string> = {}
    for (const [name, range] of Object.entries(requires)) {
      const version = plan.roots.get(PackageName.make(name))!
      rootRanges[name] = range === "*" && explicit.has(name) ? caretOf(version) : range
    }
    if (Option.isSome(manifest) && explicit.size > 0) {
      const text = yield* fs.readFileString(manifestPath)
      const json = JSON.parse(text) as Record<string, unknown>
      const deps = { ...(json["dependencies"] as Record<string, string> | undefined ?? {}) }
      for (const name of explicit) deps[name] = rootRanges[name]!
      json["dependencies"] = Object.fromEntries(Object.entries(deps).sort(([a], [b]) => (a < b ? -1 : 1)))
      yield* writeAtomically(manifestPath, `${JSON.stringify(json, null, 2)}\n`)
    }
    const newLock: Lockfile = {
      lockfileVersion: 1,
      dependencies: Object.fromEntries(Object.entries(rootRanges).map(([n, r]) => [n, { range: Range.make(r), version: plan.roots.get(PackageName.make(n))! }])),
      packages: plan.packages.map((p) => {
        const info = infos.get(`${p.name}@${p.version}`)!
        return {
          name: p.name,
          version: p.version,
          tag: info.tag,
          signer: info.signer,
          dependencies: Object.fromEntries(p.dependencies)
        }
      })
    }
    const lockText = encodeLockfile(newLock)
    const oldText = Option.isSome(lock) ? encodeLockfile(lock.value) : ""
    const lockfile = lockText === oldText ? "unchanged" as const : "written" as const
    if (lockfile === "written" && !options.frozen) yield* writeAtomically(lockPath, lockText)

    return {
      packages: ordered.map((p) => {
        const info = infos.get(`${p.name}@${p.version}`)!
        return {
          name: p.name,
          version: p.version,
          tag: info.tag,
          signer: info.signer,
          path: path.relative(dir, path.join(into, p.dir)),
          fetched: fetched.has(`${p.name}@${p.version}`)
        }
      }),
      lockfile,
      resolved,
      connected: yield* remote.connected,
      cycles: plan.cycles
    } satisfies InstallResult
  }))

const caretOf = (version: Version): string => (semver.prerelease(version) === null ? `^${version}` : version)

const writeAtomically = (file: string, text: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const tmp = `${file}.tmp-${process.pid}`
    yield* fs.writeFileString(tmp, text)
    yield* fs.rename(tmp, file)
  })

// ---------------------------------------------------------------------------------------------
// Layout

export interface Placement {
  readonly name: PackageName
  readonly version: Version
  /** Relative to upm_modules, with `/` separators: `bob/x` or `alice/app/upm_modules/bob/x`. */
  readonly dir: string
}

/**
 * Where each package goes. The top level holds, per name, the version the root requires, else the highest.
 * A package that needs another version than the one it would see (looking up through enclosing
 * `upm_modules`, as Node does) gets that version nested in its own `upm_modules`.
 */
export const layout = (
  roots: ReadonlyMap<PackageName, Version>,
  packages: ReadonlyArray<ResolvedPackage>
): ReadonlyArray<Placement> => {
  const byKey = new Map(packages.map((p) => [`${p.name}@${p.version}`, p]))
  const top = new Map<PackageName, Version>(roots)
  for (const p of [...packages].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : semver.rcompare(a.version, b.version)))) {
    if (!top.has(p.name)) top.set(p.name, p.version)
  }
  const placements: Array<Placement> = []
  /** A scope: the packages visible in one `upm_modules` directory, and its enclosing scope. */
  interface Scope { readonly contents: Map<PackageName, Version>; readonly parent: Scope | undefined }
  const rootScope: Scope = { contents: top, parent: undefined }
  const visible = (scope: Scope | undefined, name: PackageName): Version | undefined =>
    scope === undefined ? undefined : scope.contents.get(name) ?? visible(scope.parent, name)
  const queue: Array<{ placement: Placement; scope: Scope; depth: number }> = []
  for (const [name, version] of [...top].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const placement = { name, version, dir: name }
    placements.push(placement)
    queue.push({ placement, scope: rootScope, depth: 0 })
  }
  while (queue.length > 0) {
    const { placement, scope, depth } = queue.shift()!
    const pkg = byKey.get(`${placement.name}@${placement.version}`)
    if (pkg === undefined || depth > 32) continue
    const own: Scope = { contents: new Map(), parent: scope }
    for (const [name, version] of pkg.dependencies) {
      if (visible(own, name) === version) continue
      own.contents.set(name, version)
      const nested = { name, version, dir: `${placement.dir}/upm_modules/${name}` }
      placements.push(nested)
      queue.push({ placement: nested, scope: own, depth: depth + 1 })
    }
  }
  return placements
}
