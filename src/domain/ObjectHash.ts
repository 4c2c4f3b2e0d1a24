/**
 * Object hashes: SHA-1 over git's `"<type> <size>\0<body>"` framing.
 * The canonical text form is 40 lower-case hex digits; the wire form is 20 raw bytes.
 */
import { createHash } from "node:crypto"
import { Either, Schema } from "effect"

export const ObjectHash = Schema.String.pipe(
  Schema.pattern(/^[0-9a-f]{40}$/, { message: () => "an object hash is 40 lower-case hex digits" }),
  Schema.brand("ObjectHash")
)
export type ObjectHash = typeof ObjectHash.Type

export class InvalidHash extends Schema.TaggedError<InvalidHash>()("InvalidHash", {
  input: Schema.String
}) {}

const HEX = /^[0-9a-f]{40}$/

/**
 * Brands text already known to be 40 lower-case hex digits (checked by a regex here or produced by a digest)
 * without running the Schema again: hashing is on every hot path (import, sync), and the Schema's own validation
 * costs more than the SHA-1 of a small file.
 */
export const trustedHash = (hex: string): ObjectHash => ObjectHash.make(hex, { disableValidation: true })

/** Parses text (case-insensitive) into an ObjectHash. */
export const parseHash = (input: string): Either.Either<ObjectHash, InvalidHash> => {
  const lower = input.toLowerCase()
  return HEX.test(lower) ? Either.right(trustedHash(lower)) : Either.left(new InvalidHash({ input }))
}

/** The 20 raw bytes of a hash (wire and key-value store form). */
export const hashToBytes = (hash: ObjectHash): Uint8Array => Buffer.from(hash, "hex")

/** The hash whose 20 raw bytes are given. The caller guarantees the length (a defect otherwise). */
export const hashFromBytes = (bytes: Uint8Array): ObjectHash => {
  if (bytes.length !== 20) throw new RangeError(`a raw object hash is 20 bytes, got ${bytes.length}`)
  return trustedHash(Buffer.from(bytes.buffer, bytes.byteOffset, 20).toString("hex"))
}

/** SHA-1 of already framed bytes. */
export const sha1 = (framed: Uint8Array): ObjectHash => trustedHash(createHash("sha1").update(framed).digest("hex"))
