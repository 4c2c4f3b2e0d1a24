/**
 * Verifier: decides whether a release tag may enter the store — its SSHSIG signature, and the signer's right
 * to the owner namespace. The push flow calls `verifyTag` as soon as the tag arrives, before asking for any
 * other object; the client calls `verifyRelease` (KnownKeys.ts) again after a pull.
 *
 * `layer` is the real check (docs/signing.md): shape, signature over the tag payload in namespace "git",
 * release metadata matching the tag name, signer allowed for the namespace (or the namespace is fresh), and
 * the version not already sealed with other content. It writes nothing: a fresh namespace is claimed by
 * `sealRelease`, after the proposal policy accepted, so a rejected release never claims anything.
 */
import { Context, Effect, Either, Layer, Option, Schema } from "effect"
import { decodeTag, encodeTag, encodeTagPayload, hashOf, type Tag } from "../domain/GitObject.js"
import { ObjectHash } from "../domain/ObjectHash.js"
import { ownerOf, PackageName, parseRelease, releaseRefName, Version } from "../domain/Package.js"
import { decodeReleaseMessage, type ReleaseMetadata } from "../domain/ReleaseMessage.js"
import { fingerprint, formatPublicKey, parsePublicKeyLine, type PublicKey } from "../domain/SshKey.js"
import * as Sshsig from "../domain/Sshsig.js"
import { ObjectStore, RefName, missingReachable, IncompleteGraph, type StoreError } from "./ObjectStore.js"
import { Owners, type OwnersError } from "./Owners.js"

export class VerificationError extends Schema.TaggedError<VerificationError>()("VerificationError", {
  reason: Schema.Literal(
    "BadTagName", "NotATree", "Unsigned", "MalformedSignature", "WrongNamespace", "UnknownKeyType",
    "BadSignature", "NotOwner", "KeyChanged", "Rollback", "VersionExists",
    // Added by the signing issue:
    "WeakSignature", "BadMetadata", "PinMismatch", "Unavailable"
  ),
  detail: Schema.String
}) {
  override get message(): string {
    return `${this.reason}: ${this.detail}`
  }
}

/** What a verified release tag says about itself. */
export class VerifiedRelease extends Schema.Class<VerifiedRelease>("VerifiedRelease")({
  tagHash: ObjectHash,
  tree: ObjectHash,
  name: PackageName,
  version: Version,
  /** OpenSSH fingerprint of the signing key (`SHA256:…`), or "unsigned" under layerUnsigned. */
  signer: Schema.String,
  /** The signing public key in OpenSSH one-line form (`ssh-ed25519 AAAA…`), when signed. */
  publicKey: Schema.optional(Schema.String),
  /** True when the namespace has no owner yet: sealing this release claims it for the signer. */
  claim: Schema.optional(Schema.Boolean),
  /** Set when the signer is allowed as a key of this member namespace (shared namespaces). */
  via: Schema.optional(Schema.String)
}) {}

export class Verifier extends Context.Tag("upm/Verifier")<Verifier, {
  readonly verifyTag: (tagHash: ObjectHash, tag: Tag) => Effect.Effect<VerifiedRelease, VerificationError>
  /**
   * The public keys (OpenSSH one-line form) that may sign releases in `owner`'s namespace: its keys and its
   * members' keys. Clients check a pulled release's signer against them (the sync query `keys <owner>`).
   */
  readonly ownerKeys: (owner: string) => Effect.Effect<ReadonlyArray<string>, VerificationError>
}>() {}

/** Reads name and version from the tag and checks it points at a tree. Shared by every layer. */
export const checkTagShape = (tagHash: ObjectHash, tag: Tag) =>
  Effect.gen(function* () {
    const release = yield* parseRelease(tag.tag).pipe(
      Effect.mapError((e) => new VerificationError({ reason: "BadTagName", detail: e.detail }))
    )
    if (tag.type !== "tree") {
      return yield* Effect.fail(new VerificationError({ reason: "NotATree", detail: `tag points at a ${tag.type}` }))
    }
    return { tagHash, tree: tag.object, name: release.name, version: release.version }
  })

/** Checks only the tag's shape, not its signature: for tests of flows that are not about signing. */
export const layerUnsigned = Layer.succeed(Verifier, Verifier.of({
  verifyTag: (tagHash, tag) =>
    Effect.map(checkTagShape(tagHash, tag), (shape) => new VerifiedRelease({ ...shape, signer: "unsigned" })),
  ownerKeys: () => Effect.succeed([])
}))

// ---------------------------------------------------------------------------------------------
// The real checks

const fail = (reason: VerificationError["reason"], detail: string) => Effect.fail(new VerificationError({ reason, detail }))

const fromSshsig = (tagName: string, e: Sshsig.SshsigError): VerificationError => {
  const reason: VerificationError["reason"] =
    e.reason === "WrongNamespace" ? "WrongNamespace"
    : e.reason === "UnknownKeyType" ? "UnknownKeyType"
    : e.reason === "BadSignature" ? "BadSignature"
    : e.reason === "WeakKey" || e.reason === "WeakAlgorithm" ? "WeakSignature"
    : "MalformedSignature"
  return new VerificationError({ reason, detail: `${tagName}: ${e.detail}` })
}

/**
 * Everything that needs no registry state: shape, the tag re-encoding to its hash, the signature (namespace
 * "git", over `encodeTagPayload`), and the release metadata agreeing with the tag name. Server and client
 * share it.
 */
export const verifySignature = (tagHash: ObjectHash, tag: Tag) =>
  Effect.gen(function* () {
    const shape = yield* checkTagShape(tagHash, tag)
    // What the signature covers must be exactly what is stored under tagHash.
    if (hashOf("tag", encodeTag(tag)) !== tagHash) {
      return yield* fail("MalformedSignature", `${tag.tag}: the tag does not re-encode to ${tagHash}`)
    }
    if (tag.signature === undefined) {
      return yield* fail("Unsigned", `${tag.tag} is not signed; publish with upm publish (it signs with your SSH key)`)
    }
    const verified = yield* Either.mapLeft(Sshsig.verify(tag.signature, encodeTagPayload(tag), Sshsig.GIT_NAMESPACE), (e) => fromSshsig(tag.tag, e))
    const metadata: ReleaseMetadata = yield* Either.mapLeft(decodeReleaseMessage(tag.message), (e) =>
      new VerificationError({ reason: "BadMetadata", detail: `${tag.tag}: ${e.detail}` }))
    if (metadata.name !== shape.name || metadata.version !== shape.version) {
      return yield* fail("BadMetadata", `${tag.tag}: the metadata names ${metadata.name} ${metadata.version}`)
    }
    return { shape, publicKey: verified.publicKey, metadata }
  })

const unavailable = (e: OwnersError | StoreError) =>
  new VerificationError({ reason: "Unavailable", detail: `cannot read the registry's state (${e._tag}: ${"detail" in e ? e.detail : ""})` })

/** Releases read at most when repairing an unclaimed namespace that already has sealed releases. */
const MAX_REPAIR_SCAN = 1000

export const make = Effect.gen(function* () {
  const store = yield* ObjectStore
  const owners = yield* Owners

  /**
   * A namespace without an owner record but with sealed releases (sealed by a flow that did not claim, or
   * imported from elsewhere) is claimed for the signer of its earliest sealed release — an accepted release,
   * so the rule "only accepted releases claim" holds. Returns whether a claim was made.
   */
  const claimFromSealed = (owner: string) =>
    Effect.gen(function* () {
      const sealed = (yield* store.listRefs(`refs/tags/${owner}/`)).slice(0, MAX_REPAIR_SCAN)
      let earliest: { readonly hash: ObjectHash; readonly time: number } | undefined
      for (const ref of sealed) {
        const stored = yield* store.get(ref.hash).pipe(Effect.option)
        if (Option.isNone(stored) || stored.value.type !== "tag") continue
        const tag = Either.getOrUndefined(decodeTag(stored.value.body))
        if (tag === undefined || tag.signature === undefined) continue
        const time = Number(/ (\d+) [+-]\d{4}$/.exec(tag.tagger ?? "")?.[1] ?? Number.MAX_SAFE_INTEGER)
        if (earliest === undefined || time < earliest.time || (time === earliest.time && ref.hash < earliest.hash)) {
          earliest = { hash: ref.hash, time }
        }
      }
      if (earliest === undefined) return false
      yield* Effect.logWarning("claiming an unowned namespace for the signer of its earliest sealed release", { owner, release: earliest.hash })
      return yield* owners.claimByRelease(owner, earliest.hash).pipe(Effect.as(true), Effect.orElseSucceed(() => false))
    }).pipe(Effect.mapError(unavailable))

  return Verifier.of({
    ownerKeys: (owner) => owners.releaseKeys(owner).pipe(Effect.mapError(unavailable)),
    verifyTag: (tagHash, tag) =>
      Effect.gen(function* () {
        const { shape, publicKey } = yield* verifySignature(tagHash, tag)
        const owner = ownerOf(shape.name)
        let auth = yield* owners.authorize(owner, publicKey).pipe(Effect.mapError(unavailable))
        if (auth._tag === "Fresh" && (yield* claimFromSealed(owner))) {
          auth = yield* owners.authorize(owner, publicKey).pipe(Effect.mapError(unavailable))
        }
        if (auth._tag === "Denied") {
          return yield* fail("NotOwner", `${fingerprint(publicKey)} may not publish in namespace ${owner}; ` +
            `its owners must add the key (upm owner add-key) or add you as a member`)
        }
        const ref = RefName.make(releaseRefName(shape.name, shape.version))
        const existing = yield* store.readRef(ref).pipe(Effect.mapError(unavailable))
        if (Option.isSome(existing) && existing.value !== tagHash) {
          return yield* fail("VersionExists", `${shape.name} ${shape.version} is already published as ${existing.value}; versions are immutable, publish a new version`)
        }
        return new VerifiedRelease({
          ...shape,
          signer: fingerprint(publicKey),
          publicKey: formatPublicKey(publicKey),
          ...(auth._tag === "Fresh" ? { claim: true } : {}),
          ...(auth._tag === "Member" ? { via: auth.via } : {})
        })
      }).pipe(Effect.withSpan("Verifier.verifyTag"))
  })
})

/** The real verifier: signature and ownership over the store's owner records. */
export const layer: Layer.Layer<Verifier, never, ObjectStore | Owners> = Layer.effect(Verifier, make)

/**
 * Seals a verified release once the proposal policy accepted it: checks the graph is complete, claims the
 * namespace if it was fresh (compare-and-set; losing a race to another key is NotOwner), then writes the
 * release ref (an existing ref with other content is VersionExists). The push flow calls this instead of
 * `sealRef` for releases.
 */
export const sealRelease = (release: VerifiedRelease) =>
  Effect.gen(function* () {
    const store = yield* ObjectStore
    const missing = yield* missingReachable(release.tagHash)
    if (missing.length > 0) return yield* Effect.fail(new IncompleteGraph({ root: release.tagHash, missing: missing.length }))
    yield* authorizeSeal(release)
    yield* store.setRef(RefName.make(releaseRefName(release.name, release.version)), Option.none(), release.tagHash).pipe(
      Effect.catchTag("RefConflict", (c) =>
        fail("VersionExists", `${release.name} ${release.version} is already published as ${c.actual ?? "another tag"}; versions are immutable`)))
  })

/**
 * The ownership half of sealing, for a flow that writes the release ref itself (e.g. Registry.seal): call it
 * once the graph is complete and the policy accepted, right before the ref is written. Claims a fresh
 * namespace for the signer, or re-checks that the signer is still allowed.
 */
export const authorizeSeal = (release: VerifiedRelease) =>
  Effect.gen(function* () {
    const owners = yield* Owners
    const owner = ownerOf(release.name)
    if (release.claim === true) {
      yield* owners.claimByRelease(owner, release.tagHash).pipe(Effect.mapError((e) =>
        e.reason === "NotOwner" ? new VerificationError({ reason: "NotOwner", detail: e.detail }) : unavailable(e)))
    } else if (release.publicKey !== undefined) {
      // A release may wait in a moderation queue: the key may have been revoked since it was verified.
      const key = Either.getOrUndefined(parsePublicKeyLine(release.publicKey))
      const auth = key === undefined ? undefined : yield* owners.authorize(owner, key.key).pipe(Effect.mapError(unavailable))
      if (auth === undefined || auth._tag === "Denied" || auth._tag === "Fresh") {
        return yield* fail("NotOwner", `${release.signer} is no longer allowed to publish in namespace ${owner}`)
      }
    }
  })

/** Re-exported so callers of the client-side check need one import. */
export type { PublicKey }
