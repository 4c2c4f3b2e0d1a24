/**
 * Verifier: decides whether a release tag may enter the store — its SSHSIG signature, and the signer's right
 * to the owner namespace. The push flow calls `verifyTag` as soon as the tag arrives, before asking for any
 * other object; the client calls it again after a pull.
 *
 * (Interface fixed by the skeleton; the signing issue provides the real layer.)
 */
import { Context, Effect, Layer, Schema } from "effect"
import type { Tag } from "../domain/GitObject.js"
import { ObjectHash } from "../domain/ObjectHash.js"
import { PackageName, parseRelease, Version } from "../domain/Package.js"

export class VerificationError extends Schema.TaggedError<VerificationError>()("VerificationError", {
  reason: Schema.Literal(
    "BadTagName", "NotATree", "Unsigned", "MalformedSignature", "WrongNamespace", "UnknownKeyType",
    "BadSignature", "NotOwner", "KeyChanged", "Rollback", "VersionExists"
  ),
  detail: Schema.String
}) {}

/** What a verified release tag says about itself. */
export class VerifiedRelease extends Schema.Class<VerifiedRelease>("VerifiedRelease")({
  tagHash: ObjectHash,
  tree: ObjectHash,
  name: PackageName,
  version: Version,
  /** OpenSSH fingerprint of the signing key (`SHA256:…`), or "unsigned" under layerUnsigned. */
  signer: Schema.String,
  /** The signing public key in OpenSSH one-line form (`ssh-ed25519 AAAA…`), when signed. */
  publicKey: Schema.optional(Schema.String)
}) {}

export class Verifier extends Context.Tag("upm/Verifier")<Verifier, {
  readonly verifyTag: (tagHash: ObjectHash, tag: Tag) => Effect.Effect<VerifiedRelease, VerificationError>
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
    Effect.map(checkTagShape(tagHash, tag), (shape) => new VerifiedRelease({ ...shape, signer: "unsigned" }))
}))
