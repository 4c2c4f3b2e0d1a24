/**
 * Registry: the release view of the ObjectStore. Releases are the refs `refs/tags/<owner>/<name>/v<version>`;
 * this module answers the queries (match, versions, search, owners, packages) and seals new releases,
 * publishing every seal on `sealed` (peers announce it, metrics count it).
 */
import { Context, Effect, Either, Layer, Option, PubSub, Schema, Stream } from "effect"
import { ObjectHash } from "../domain/ObjectHash.js"
import {
  compareVersions, maxSatisfying, PackageName, parseRelease, type Range, releaseRefName, Version
} from "../domain/Package.js"
import {
  type CorruptObject, IncompleteGraph, missingReachable, type ObjectNotFound, ObjectStore, type RefConflict, RefName, type StoreError
} from "./ObjectStore.js"
import * as Owners from "./Owners.js"
import { authorizeSeal, type VerificationError, type VerifiedRelease } from "./Verifier.js"

export class Release extends Schema.Class<Release>("Release")({
  name: PackageName,
  version: Version,
  /** The hash of the release's annotated tag. */
  hash: ObjectHash
}) {}

export class Registry extends Context.Tag("upm/Registry")<Registry, {
  /** Every sealed version of a package, lowest first. */
  readonly versions: (name: PackageName) => Effect.Effect<ReadonlyArray<Release>, StoreError>
  /** The highest version satisfying `range` (no range: the newest stable one), or None. */
  readonly match: (name: PackageName, range: Range | undefined) => Effect.Effect<Option.Option<Release>, StoreError>
  /** Owner namespaces that have at least one release ("authors" in seed 004). */
  readonly owners: () => Effect.Effect<ReadonlyArray<string>, StoreError>
  /** Packages of one owner, or all packages. */
  readonly packages: (owner: string | undefined) => Effect.Effect<ReadonlyArray<PackageName>, StoreError>
  /** Packages whose name contains `text` (case-insensitive), at most `limit`. */
  readonly search: (text: string, limit: number) => Effect.Effect<ReadonlyArray<PackageName>, StoreError>
  /**
   * Seals a verified release: writes its ref only if its whole graph is stored and the version is not
   * sealed with other content. "AlreadySealed" when it holds this very hash already.
   */
  readonly seal: (
    release: VerifiedRelease
  ) => Effect.Effect<
    "Sealed" | "AlreadySealed",
    IncompleteGraph | RefConflict | CorruptObject | ObjectNotFound | VerificationError | StoreError
  >
  /** Every release sealed from now on, as it is sealed. */
  readonly sealed: Stream.Stream<Release>
}>() {}

const TAGS = "refs/tags/"

/** All releases under a ref prefix, parsed; refs that are not release refs are skipped. */
const releasesUnder = (store: ObjectStore["Type"], prefix: string) =>
  Effect.map(store.listRefs(prefix), (refs) =>
    refs.flatMap((ref) =>
      Either.match(parseRelease(ref.name), {
        onLeft: () => [],
        onRight: ({ name, version }) => [new Release({ name, version, hash: ref.hash })]
      })))

/** Checks, right before a release ref is written, that its signer may publish in the namespace. */
export type SealAuthorizer = (release: VerifiedRelease) => Effect.Effect<void, VerificationError>

/**
 * A registry whose `seal` asks `authorize` before writing a release ref. The server's `layer` authorizes with
 * the namespace owner records; `make` authorizes nothing, for a client's local cache, which only seals what
 * it verified against the keys the server reported.
 */
export const makeWith = (authorize: SealAuthorizer) => Effect.gen(function* () {
  const store = yield* ObjectStore
  const hub = yield* PubSub.sliding<Release>(1024)

  const versions = (name: PackageName) =>
    Effect.map(releasesUnder(store, `${TAGS}${name}/`), (all) =>
      all.filter((r) => r.name === name).sort((a, b) => compareVersions(a.version, b.version)))

  const packages = (owner: string | undefined) =>
    Effect.map(releasesUnder(store, owner === undefined ? TAGS : `${TAGS}${owner}/`), (all) =>
      [...new Set(all.map((r) => r.name))].sort())

  return Registry.of({
    versions,
    match: (name, range) =>
      Effect.map(versions(name), (all) => {
        const best = maxSatisfying(all.map((r) => r.version), range)
        return Option.fromNullable(all.find((r) => r.version === best))
      }),
    owners: () =>
      Effect.map(packages(undefined), (names) => [...new Set(names.map((n) => n.slice(0, n.indexOf("/"))))]),
    packages,
    search: (text, limit) =>
      Effect.map(packages(undefined), (names) => {
        const needle = text.trim().toLowerCase()
        return names.filter((n) => n.includes(needle)).slice(0, Math.max(0, limit))
      }),
    seal: (release) =>
      Effect.gen(function* () {
        const ref = RefName.make(releaseRefName(release.name, release.version))
        const before = yield* store.readRef(ref)
        if (Option.contains(before, release.tagHash)) return "AlreadySealed" as const
        const missing = yield* missingReachable(release.tagHash).pipe(Effect.provideService(ObjectStore, store))
        if (missing.length > 0) return yield* Effect.fail(new IncompleteGraph({ root: release.tagHash, missing: missing.length }))
        // Every seal path (push, queue accept, peer sync) goes through here: claim a fresh namespace for the
        // signer, or re-check that the signer may still publish in it, right before the ref is written.
        yield* authorize(release)
        yield* store.setRef(ref, Option.none(), release.tagHash)
        yield* PubSub.publish(hub, new Release({ name: release.name, version: release.version, hash: release.tagHash }))
        return "Sealed" as const
      }),
    sealed: Stream.fromPubSub(hub)
  })
})

/** For a client's local store: seals without namespace authority (see makeWith). */
export const make = makeWith(() => Effect.void)

/**
 * The server's registry: every seal (push, queue accept, peer sync, upstream) claims a fresh namespace for
 * the signer or re-checks that the signer may still publish in it. Owner records live in the same store.
 */
export const layer: Layer.Layer<Registry, never, ObjectStore> = Layer.effect(
  Registry,
  Effect.flatMap(Owners.Owners, (owners) =>
    makeWith((release) => authorizeSeal(release).pipe(Effect.provideService(Owners.Owners, owners))))
).pipe(Layer.provide(Owners.layer))
