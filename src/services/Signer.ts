/**
 * Signer: makes signed annotated tags exactly as `git tag -s` does with `gpg.format=ssh`: the tag payload
 * (`object`, `type`, `tag`, `tagger`, blank line, message) is signed with SSHSIG in namespace "git", and the
 * armored signature is appended right after the message. `git verify-tag` and `ssh-keygen -Y verify` accept
 * the result; the Verifier checks it the same way.
 *
 * A release tag is `<owner>/<name>/v<version>` pointing at the release tree, with the release metadata
 * (domain/ReleaseMessage.ts) as its message.
 */
import { Clock, Context, Effect, Layer, Schema } from "effect"
import { encodeTag, encodeTagPayload, hashOf, type ObjectType, type Tag } from "../domain/GitObject.js"
import type { ObjectHash } from "../domain/ObjectHash.js"
import { releaseTagName } from "../domain/Package.js"
import { encodeReleaseMessage, type ReleaseMetadata } from "../domain/ReleaseMessage.js"
import { GIT_NAMESPACE } from "../domain/Sshsig.js"
import type { KeyError, SigningKey } from "./Keys.js"

export class SignerError extends Schema.TaggedError<SignerError>()("SignerError", {
  reason: Schema.Literal("BadTagger", "BadMessage"),
  detail: Schema.String
}) {}

/** Who signs: the `tagger` line's name and email (git's `user.name` / `user.email`). */
export interface TaggerIdentity {
  readonly name: string
  readonly email: string
}

/** When: unix seconds and the UTC offset in minutes. Default: now (from Clock) and +0000. */
export interface TagTime {
  readonly seconds: number
  readonly offsetMinutes?: number
}

export interface SignedTag {
  readonly tag: Tag
  /** The tag object's body, as stored and sent. */
  readonly body: Uint8Array
  readonly hash: ObjectHash
}

export interface ReleaseInput {
  readonly tree: ObjectHash
  /** Name, version and the manifest fields the registry reads (see ReleaseMessage). */
  readonly metadata: Omit<ReleaseMetadata, "upm">
  readonly tagger: TaggerIdentity
  readonly time?: TagTime
}

export class Signer extends Context.Tag("upm/Signer")<Signer, {
  readonly key: SigningKey
  readonly signRelease: (input: ReleaseInput) => Effect.Effect<SignedTag, SignerError | KeyError>
}>() {}

// ---------------------------------------------------------------------------------------------

/** git's tagger line: `Name <email> <seconds> <+hhmm>`. Names and emails may not hold `<`, `>` or newlines. */
export const taggerLine = (who: TaggerIdentity, time: TagTime): Effect.Effect<string, SignerError> => {
  const bad = /[<>\n\0]/
  if (bad.test(who.name) || bad.test(who.email) || who.name.trim() === "" || who.name.length > 256 || who.email.length > 256) {
    return Effect.fail(new SignerError({ reason: "BadTagger", detail: "the tagger needs a name and an email without <, > or newlines (git config user.name / user.email)" }))
  }
  const offset = time.offsetMinutes ?? 0
  if (!Number.isInteger(time.seconds) || time.seconds < 0 || !Number.isInteger(offset) || Math.abs(offset) >= 24 * 60) {
    return Effect.fail(new SignerError({ reason: "BadTagger", detail: "tag time must be whole unix seconds and an offset within a day" }))
  }
  const sign = offset < 0 ? "-" : "+"
  const abs = Math.abs(offset)
  const tz = `${sign}${String(Math.floor(abs / 60)).padStart(2, "0")}${String(abs % 60).padStart(2, "0")}`
  return Effect.succeed(`${who.name.trim()} <${who.email.trim()}> ${time.seconds} ${tz}`)
}

const now = Effect.map(Clock.currentTimeMillis, (ms): TagTime => ({ seconds: Math.floor(ms / 1000) }))

/**
 * Signs any annotated tag: the message gets a trailing newline as git's does, then the SSHSIG block over the
 * payload is appended. `namespace` is "git" for releases (what git verify-tag checks).
 */
export const signTag = (
  key: SigningKey,
  fields: {
    readonly object: ObjectHash
    readonly type: ObjectType
    readonly tag: string
    readonly tagger: TaggerIdentity
    readonly time?: TagTime
    readonly message: string
  },
  namespace: string = GIT_NAMESPACE
): Effect.Effect<SignedTag, SignerError | KeyError> =>
  Effect.gen(function* () {
    if (/(^|\n)-----BEGIN /.test(fields.message)) {
      return yield* Effect.fail(new SignerError({ reason: "BadMessage", detail: "a tag message may not contain a line starting with -----BEGIN (git would read it as the signature)" }))
    }
    const time = fields.time ?? (yield* now)
    const tagger = yield* taggerLine(fields.tagger, time)
    const message = fields.message === "" || fields.message.endsWith("\n") ? fields.message : `${fields.message}\n`
    const unsigned = { object: fields.object, type: fields.type, tag: fields.tag, tagger, message }
    const signature = yield* key.sign(namespace, encodeTagPayload(unsigned))
    const tag: Tag = { ...unsigned, signature }
    const body = encodeTag(tag)
    return { tag, body, hash: hashOf("tag", body) }
  })

/** Signs a release tag `<owner>/<name>/v<version>` → tree, with the release metadata as message. */
export const signRelease = (key: SigningKey, input: ReleaseInput) =>
  signTag(key, {
    object: input.tree,
    type: "tree",
    tag: releaseTagName(input.metadata.name, input.metadata.version),
    tagger: input.tagger,
    ...(input.time === undefined ? {} : { time: input.time }),
    message: encodeReleaseMessage(input.metadata)
  })

/** A Signer around one loaded key. */
export const layer = (key: SigningKey) =>
  Layer.succeed(Signer, Signer.of({ key, signRelease: (input) => signRelease(key, input) }))
