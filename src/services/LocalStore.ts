/**
 * LocalStore: maintenance of the client's own store under UPM_HOME/store (a bare git repository layout):
 * `fsck` checks every object and every release, `gc` removes objects no ref reaches (left by interrupted
 * fetches or publishes), and `findRelease` finds a release locally before asking the server.
 */
import { FileSystem, Path } from "@effect/platform"
import { Effect, Option } from "effect"
import { children, decodeObject } from "../domain/GitObject.js"
import type { ObjectHash } from "../domain/ObjectHash.js"
import { compareVersions, maxSatisfying, type PackageName, parseRelease, type Range, releaseRefName, type Version } from "../domain/Package.js"
import { getDecoded, missingReachable, ObjectStore, RefName } from "./ObjectStore.js"
import { verifySignature } from "./Verifier.js"

export interface FsckProblem {
  readonly what: string
  readonly detail: string
}

export interface FsckReport {
  readonly objects: number
  readonly refs: number
  readonly releases: number
  readonly problems: ReadonlyArray<FsckProblem>
}

/** Checks every stored object (hash, framing, structure) and every release (whole graph present, signature). */
export const fsck = Effect.gen(function* () {
  const store = yield* ObjectStore
  const problems: Array<FsckProblem> = []
  const hashes = yield* store.listObjects()
  yield* Effect.forEach(hashes, (hash) =>
    store.get(hash).pipe(
      Effect.flatMap(({ type, body }) =>
        Effect.sync(() => {
          const decoded = decodeObject(type, body)
          if (decoded._tag === "Left") problems.push({ what: hash, detail: `${decoded.left.reason}: ${decoded.left.detail}` })
        })),
      Effect.catchAll((e) => Effect.sync(() => problems.push({ what: hash, detail: e._tag === "CorruptObject" ? e.detail : e._tag })))
    ), { concurrency: 16, discard: true })
  const refs = yield* store.listRefs("refs/")
  let releases = 0
  for (const ref of refs) {
    const missing = yield* missingReachable(ref.hash).pipe(Effect.either)
    if (missing._tag === "Left") {
      problems.push({ what: ref.name, detail: `cannot walk: ${missing.left._tag}` })
      continue
    }
    if (missing.right.length > 0) problems.push({ what: ref.name, detail: `${missing.right.length} object(s) of its graph are missing` })
    if (parseRelease(ref.name)._tag === "Right") {
      releases++
      const object = yield* getDecoded(ref.hash).pipe(Effect.either)
      if (object._tag === "Left") problems.push({ what: ref.name, detail: object.left._tag })
      else if (object.right.type !== "tag") problems.push({ what: ref.name, detail: `points at a ${object.right.type}, not a release tag` })
      else {
        const checked = yield* verifySignature(ref.hash, object.right.tag).pipe(Effect.either)
        if (checked._tag === "Left") problems.push({ what: ref.name, detail: `${checked.left.reason}: ${checked.left.detail}` })
      }
    }
  }
  return { objects: hashes.length, refs: refs.length, releases, problems } satisfies FsckReport
})

export interface GcReport {
  readonly kept: number
  readonly removed: number
  readonly bytes: number
}

/** Removes loose objects that no ref reaches. `root` is the store's directory (the fs layout). */
export const gc = (root: string, dryRun: boolean) =>
  Effect.gen(function* () {
    const store = yield* ObjectStore
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const reachable = new Set<string>()
    let frontier: Array<{ hash: ObjectHash; blob: boolean }> = (yield* store.listRefs("refs/")).map((r) => ({ hash: r.hash, blob: false }))
    while (frontier.length > 0) {
      const next: Array<{ hash: ObjectHash; blob: boolean }> = []
      for (const item of frontier) {
        if (reachable.has(item.hash)) continue
        reachable.add(item.hash)
        if (item.blob) continue
        const object = yield* getDecoded(item.hash).pipe(Effect.option)
        if (Option.isNone(object)) continue
        for (const child of children(object.value)) next.push({ hash: child.hash, blob: child.type === "blob" })
      }
      frontier = next
    }
    const all = yield* store.listObjects()
    let removed = 0
    let bytes = 0
    for (const hash of all) {
      if (reachable.has(hash)) continue
      const file = path.join(root, "objects", hash.slice(0, 2), hash.slice(2))
      const info = yield* fs.stat(file).pipe(Effect.option)
      if (Option.isSome(info)) bytes += Number(info.value.size)
      if (!dryRun) yield* fs.remove(file).pipe(Effect.ignore)
      removed++
    }
    return { kept: all.length - removed, removed, bytes } satisfies GcReport
  })

/** Every release of `name` in the local store, lowest version first (refs/tags/<name>/v…). */
export const localReleases = (name: PackageName) =>
  Effect.gen(function* () {
    const store = yield* ObjectStore
    const refs = yield* store.listRefs(`refs/tags/${name}/`)
    return refs
      .flatMap((ref) => {
        const parsed = parseRelease(ref.name)
        return parsed._tag === "Right" && parsed.right.name === name ? [{ version: parsed.right.version, hash: ref.hash }] : []
      })
      .sort((a, b) => compareVersions(a.version, b.version))
  })

/** The newest local release of `name` matching `range`, if the local store has one. */
export const findRelease = (name: PackageName, range: Range | undefined) =>
  Effect.gen(function* () {
    const all = yield* localReleases(name)
    const best = maxSatisfying(all.map((r) => r.version), range)
    return Option.fromNullable(all.find((r) => r.version === best))
  })

export const releaseRef = (name: PackageName, version: Version) => RefName.make(releaseRefName(name, version))
