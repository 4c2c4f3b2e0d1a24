/**
 * The message of a release tag: a one-line human summary, a blank line, then one line of JSON with the
 * release metadata the registry reads without opening the tree.
 *
 * ```
 * alice/greetings 1.2.0: Says hello
 *
 * {"upm":1,"name":"alice/greetings","version":"1.2.0","description":"Says hello","dependencies":{"bob/colors":"^2.0.0"}}
 * ```
 *
 * The signature covers the message, so the metadata is as authentic as the tag name. `name` and `version`
 * must equal the tag name's (the Verifier checks it). Git keeps this message byte for byte (`git tag -F`).
 */
import { Either, ParseResult, Schema } from "effect"
import { PackageName, Range, Version } from "./Package.js"

export const ReleaseMetadata = Schema.Struct({
  /** Format version of this metadata. */
  upm: Schema.Literal(1),
  name: PackageName,
  version: Version,
  description: Schema.optional(Schema.String.pipe(Schema.maxLength(1024))),
  license: Schema.optional(Schema.String.pipe(Schema.maxLength(128))),
  dependencies: Schema.optional(Schema.Record({ key: PackageName, value: Range }))
})
export type ReleaseMetadata = typeof ReleaseMetadata.Type

export class InvalidReleaseMessage extends Schema.TaggedError<InvalidReleaseMessage>()("InvalidReleaseMessage", {
  detail: Schema.String
}) {}

/** Messages above this size are refused unread. */
export const MAX_RELEASE_MESSAGE = 64 * 1024

const summaryOf = (m: ReleaseMetadata): string => {
  const first = (m.description ?? "").split("\n")[0]?.trim() ?? ""
  const short = first.length > 72 ? `${first.slice(0, 71)}…` : first
  return `${m.name} ${m.version}${short === "" ? "" : `: ${short}`}`
}

/** The tag message for a release, ending in a newline as git writes messages. */
export const encodeReleaseMessage = (metadata: Omit<ReleaseMetadata, "upm">): string => {
  const m: ReleaseMetadata = { upm: 1, ...metadata }
  // A fixed key order, so the same release always gives the same bytes.
  const json = JSON.stringify({
    upm: 1,
    name: m.name,
    version: m.version,
    ...(m.description === undefined ? {} : { description: m.description }),
    ...(m.license === undefined ? {} : { license: m.license }),
    ...(m.dependencies === undefined ? {} : { dependencies: m.dependencies })
  })
  return `${summaryOf(m)}\n\n${json}\n`
}

const decodeJson = Schema.decodeUnknownEither(Schema.parseJson(ReleaseMetadata), { errors: "all", onExcessProperty: "error" })

/** Reads the metadata from a tag message (the message without its signature). */
export const decodeReleaseMessage = (message: string): Either.Either<ReleaseMetadata, InvalidReleaseMessage> => {
  if (message.length > MAX_RELEASE_MESSAGE) {
    return Either.left(new InvalidReleaseMessage({ detail: `the tag message exceeds ${MAX_RELEASE_MESSAGE} characters` }))
  }
  const blank = message.indexOf("\n\n")
  if (blank < 0) {
    return Either.left(new InvalidReleaseMessage({ detail: "the tag message has no release metadata (a summary line, a blank line, then JSON)" }))
  }
  const json = message.slice(blank + 2).trim()
  if (!json.startsWith("{") || json.includes("\n")) {
    return Either.left(new InvalidReleaseMessage({ detail: "the release metadata must be one line of JSON after the summary" }))
  }
  return Either.mapLeft(decodeJson(json), (e) =>
    new InvalidReleaseMessage({ detail: `bad release metadata: ${ParseResult.TreeFormatter.formatErrorSync(e)}` }))
}
