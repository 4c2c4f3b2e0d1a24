/**
 * The moderation queue: releases a `propose` policy answered `queued` for. Each waits, pushed but unsealed, under
 * the ref `refs/upm/queue/<owner>/<name>/v<version>` → its tag hash (refs, so every store backend keeps it and
 * the objects stay reachable for gc until decided). A maintainer lists them and accepts (the release is verified
 * again and sealed with `Registry.seal`; the queue ref goes) or rejects (the queue ref goes; the unsealed objects
 * are left to gc). `match` never sees a queued release: it is not under `refs/tags/`.
 */
import { Context, Effect, Either, Layer, Option, Schema } from "effect"
import { ObjectHash } from "../domain/ObjectHash.js"
import { PackageName, parseRelease, releaseTagName, Version } from "../domain/Package.js"
import {
  type CorruptObject, getDecoded, type IncompleteGraph, type ObjectNotFound, ObjectStore, type RefConflict, type StoreError
} from "./ObjectStore.js"
import { Registry } from "./Registry.js"
import { queueRefName as syncQueueRefName } from "./SyncServer.js"
import { type VerificationError, type VerifiedRelease, Verifier } from "./Verifier.js"

export class QueueError extends Schema.TaggedError<QueueError>()("QueueError", {
  reason: Schema.Literal("NotQueued", "AlreadyQueued", "NotATag"),
  detail: Schema.String
}) {
  override get message() {
    return this.detail
  }
}

export class QueuedRelease extends Schema.Class<QueuedRelease>("QueuedRelease")({
  name: PackageName,
  version: Version,
  hash: ObjectHash
}) {}

export const QUEUE_PREFIX = "refs/upm/queue/"

/** The queue ref of a release; the push flow (SyncServer) writes it when the policy answers `queued`. */
export const queueRefName = (name: PackageName, version: Version) => syncQueueRefName({ name, version })

export class ProposalQueue extends Context.Tag("upm/ProposalQueue")<ProposalQueue, {
  /** Records a release as waiting for a maintainer. Queuing the same tag again is a no-op. */
  readonly enqueue: (release: VerifiedRelease) => Effect.Effect<void, QueueError | StoreError>
  readonly list: () => Effect.Effect<ReadonlyArray<QueuedRelease>, StoreError>
  /** Verifies and seals a queued release, then removes it from the queue. */
  readonly accept: (
    name: PackageName,
    version: Version
  ) => Effect.Effect<
    "Sealed" | "AlreadySealed",
    QueueError | VerificationError | IncompleteGraph | RefConflict | CorruptObject | ObjectNotFound | StoreError
  >
  /** Removes a queued release; its objects stay unsealed until gc. */
  readonly reject: (name: PackageName, version: Version, reason: string) => Effect.Effect<void, QueueError | RefConflict | StoreError>
}>() {}

export const make = Effect.gen(function* () {
  const store = yield* ObjectStore
  const registry = yield* Registry
  const verifier = yield* Verifier

  const lookup = (name: PackageName, version: Version) =>
    Effect.flatMap(store.readRef(queueRefName(name, version)), Option.match({
      onNone: () => Effect.fail(new QueueError({ reason: "NotQueued", detail: `${releaseTagName(name, version)} is not in the queue` })),
      onSome: Effect.succeed
    }))

  return ProposalQueue.of({
    enqueue: (release) =>
      store.setRef(queueRefName(release.name, release.version), Option.none(), release.tagHash).pipe(
        Effect.catchTag("RefConflict", () =>
          Effect.fail(new QueueError({
            reason: "AlreadyQueued",
            detail: `another tag for ${releaseTagName(release.name, release.version)} is already in the queue`
          })))
      ),
    list: () =>
      Effect.map(store.listRefs(QUEUE_PREFIX), (refs) =>
        refs.flatMap((ref) =>
          Either.match(parseRelease(ref.name.slice(QUEUE_PREFIX.length)), {
            onLeft: () => [],
            onRight: ({ name, version }) => [new QueuedRelease({ name, version, hash: ref.hash })]
          }))),
    accept: (name, version) =>
      Effect.gen(function* () {
        const hash = yield* lookup(name, version)
        const object = yield* getDecoded(hash).pipe(Effect.provideService(ObjectStore, store))
        if (object.type !== "tag") {
          return yield* Effect.fail(new QueueError({ reason: "NotATag", detail: `queued object ${hash} is a ${object.type}` }))
        }
        const release = yield* verifier.verifyTag(hash, object.tag)
        const result = yield* registry.seal(release)
        yield* store.deleteRef(queueRefName(name, version), hash).pipe(Effect.catchTag("RefConflict", () => Effect.void))
        yield* Effect.logInfo(`queue: accepted ${releaseTagName(name, version)} (${hash})`)
        return result
      }),
    reject: (name, version, reason) =>
      Effect.gen(function* () {
        const hash = yield* lookup(name, version)
        yield* store.deleteRef(queueRefName(name, version), hash)
        yield* Effect.logInfo(`queue: rejected ${releaseTagName(name, version)} (${hash}): ${reason}`)
      })
  })
})

export const layer: Layer.Layer<ProposalQueue, never, ObjectStore | Registry | Verifier> = Layer.effect(ProposalQueue, make)
