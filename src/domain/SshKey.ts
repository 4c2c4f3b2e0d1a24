/**
 * SSH public keys as upm uses them: the SSH wire encoding (RFC 4251 strings and mpints), the key blob
 * (RFC 4253 §6.6 / RFC 8709), the OpenSSH one-line form (`ssh-ed25519 AAAA… comment`) and fingerprints
 * exactly as `ssh-keygen -l` prints them (`SHA256:` + unpadded base64 of SHA-256 over the blob).
 *
 * Supported key types: `ssh-ed25519` and `ssh-rsa` with a modulus of 2048–16384 bits. Everything else
 * (DSA, ECDSA, security keys, certificates) is a typed `InvalidPublicKey` with reason `UnsupportedType`.
 * Pure: no I/O; Node's crypto only to build KeyObjects.
 */
import { createHash, createPublicKey, type KeyObject } from "node:crypto"
import { Either, Schema } from "effect"

export const SUPPORTED_KEY_TYPES = ["ssh-ed25519", "ssh-rsa"] as const
export type KeyType = (typeof SUPPORTED_KEY_TYPES)[number]
export const SUPPORTED_TYPES_TEXT = "ssh-ed25519 (recommended) and ssh-rsa of at least 2048 bits"

export const RSA_MIN_BITS = 2048
export const RSA_MAX_BITS = 16384

export class InvalidPublicKey extends Schema.TaggedError<InvalidPublicKey>()("InvalidPublicKey", {
  reason: Schema.Literal("Malformed", "UnsupportedType", "WeakKey", "TooLarge"),
  detail: Schema.String
}) {}

const invalid = (reason: InvalidPublicKey["reason"], detail: string) =>
  Either.left(new InvalidPublicKey({ reason, detail }))

// ---------------------------------------------------------------------------------------------
// SSH wire encoding

/** A bounds-checked reader over SSH wire data. Every read returns undefined instead of running past the end. */
export class WireReader {
  private at = 0
  constructor(private readonly bytes: Uint8Array) {}
  get remaining(): number {
    return this.bytes.length - this.at
  }
  raw(n: number): Uint8Array | undefined {
    if (n < 0 || n > this.remaining) return undefined
    const out = this.bytes.subarray(this.at, this.at + n)
    this.at += n
    return out
  }
  uint32(): number | undefined {
    const b = this.raw(4)
    return b === undefined ? undefined : Buffer.from(b.buffer, b.byteOffset, 4).readUInt32BE(0)
  }
  /** A length-prefixed string, refused above `max` bytes before anything is copied. */
  string(max: number): Uint8Array | undefined {
    const save = this.at
    const length = this.uint32()
    if (length === undefined || length > max) {
      this.at = save
      return undefined
    }
    const out = this.raw(length)
    if (out === undefined) this.at = save
    return out
  }
  /** A string that must be printable ASCII (algorithm and namespace names). */
  ascii(max: number): string | undefined {
    const b = this.string(max)
    if (b === undefined) return undefined
    for (const c of b) if (c < 0x20 || c > 0x7e) return undefined
    return Buffer.from(b).toString("latin1")
  }
}

const u32 = (n: number): Uint8Array => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n, 0)
  return b
}

/** Encodes SSH wire strings (length-prefixed byte strings); text is UTF-8. */
export const wireString = (value: Uint8Array | string): Uint8Array => {
  const bytes = typeof value === "string" ? Buffer.from(value, "utf8") : value
  return Buffer.concat([u32(bytes.length), bytes])
}

export const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => Buffer.concat(parts)

/** An mpint (RFC 4251 §5) from unsigned big-endian magnitude bytes. */
const mpint = (magnitude: Uint8Array): Uint8Array => {
  let start = 0
  while (start < magnitude.length && magnitude[start] === 0) start++
  const trimmed = magnitude.subarray(start)
  const first = trimmed[0]
  const body = first !== undefined && first & 0x80 ? Buffer.concat([Buffer.from([0]), trimmed]) : trimmed
  return wireString(body)
}

/** Reads a positive mpint's magnitude; a negative or non-minimal encoding is malformed. */
const readPositiveMpint = (r: WireReader, max: number): Uint8Array | undefined => {
  const b = r.string(max)
  if (b === undefined || b.length === 0) return undefined
  const first = b[0] ?? 0
  if (first & 0x80) return undefined // negative
  if (first === 0 && (b.length === 1 || ((b[1] ?? 0) & 0x80) === 0)) return undefined // not minimal
  return first === 0 ? b.subarray(1) : b
}

// ---------------------------------------------------------------------------------------------
// Public keys

export interface PublicKey {
  readonly type: KeyType
  /** The SSH wire blob (what fingerprints and agents use). */
  readonly blob: Uint8Array
  /** For RSA, the modulus size in bits; 256 for ed25519. */
  readonly bits: number
  /** Node's key, for crypto.verify. */
  readonly keyObject: KeyObject
}

/** Blobs above this size are refused before parsing (RSA-16384 is ~2 KiB). */
export const MAX_KEY_BLOB = 4096

const b64url = (b: Uint8Array) => Buffer.from(b).toString("base64url")

/** Parses and checks a public key blob. */
export const parsePublicKeyBlob = (blob: Uint8Array): Either.Either<PublicKey, InvalidPublicKey> => {
  if (blob.length > MAX_KEY_BLOB) return invalid("TooLarge", `a public key blob of ${blob.length} bytes is too large`)
  const r = new WireReader(blob)
  const type = r.ascii(64)
  if (type === undefined) return invalid("Malformed", "the key blob has no readable key type")
  switch (type) {
    case "ssh-ed25519": {
      const pk = r.string(32)
      if (pk === undefined || pk.length !== 32 || r.remaining !== 0) {
        return invalid("Malformed", "an ssh-ed25519 key blob must hold exactly one 32-byte key")
      }
      let keyObject: KeyObject
      try {
        keyObject = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: b64url(pk) }, format: "jwk" })
      } catch (cause) {
        return invalid("Malformed", `Node refused the ed25519 key: ${String(cause)}`)
      }
      return Either.right({ type, blob: Uint8Array.from(blob), bits: 256, keyObject })
    }
    case "ssh-rsa": {
      const e = readPositiveMpint(r, 16)
      const n = readPositiveMpint(r, RSA_MAX_BITS / 8 + 1)
      if (e === undefined || n === undefined || r.remaining !== 0) {
        return invalid("Malformed", "an ssh-rsa key blob must hold a positive exponent and modulus")
      }
      const bits = n.length * 8 - Math.clz32(n[0] ?? 0) + 24
      if (bits < RSA_MIN_BITS) {
        return invalid("WeakKey", `this RSA key has ${bits} bits; upm accepts RSA keys of ${RSA_MIN_BITS} bits or more`)
      }
      if (bits > RSA_MAX_BITS) return invalid("TooLarge", `RSA keys above ${RSA_MAX_BITS} bits are not accepted`)
      const eValue = Buffer.from(e).readUIntBE(0, Math.min(e.length, 6))
      if (e.length > 4 || eValue < 3 || eValue % 2 === 0) {
        return invalid("Malformed", "the RSA public exponent must be odd, at least 3 and at most 32 bits")
      }
      let keyObject: KeyObject
      try {
        keyObject = createPublicKey({ key: { kty: "RSA", n: b64url(n), e: b64url(e) }, format: "jwk" })
      } catch (cause) {
        return invalid("Malformed", `Node refused the RSA key: ${String(cause)}`)
      }
      return Either.right({ type, blob: Uint8Array.from(blob), bits, keyObject })
    }
    default:
      return invalid("UnsupportedType", unsupportedTypeText(type))
  }
}

/** The explanation given for every key type upm does not accept. */
export const unsupportedTypeText = (type: string): string => {
  const what = type.startsWith("ecdsa-sha2-") ? "ECDSA"
    : type === "ssh-dss" ? "DSA"
    : type.startsWith("sk-") ? "security-key (FIDO)"
    : type.includes("-cert-") ? "certificate"
    : `"${type}"`
  return `${what} keys are not supported; upm accepts ${SUPPORTED_TYPES_TEXT}. ` +
    `Create one with: ssh-keygen -t ed25519 (or upm keygen)`
}

/** `SHA256:…` exactly as `ssh-keygen -l` prints it. */
export const fingerprint = (key: Pick<PublicKey, "blob">): string =>
  `SHA256:${createHash("sha256").update(key.blob).digest("base64").replace(/=+$/, "")}`

/** The OpenSSH one-line form, `type base64 [comment]`, without a trailing newline. */
export const formatPublicKey = (key: Pick<PublicKey, "type" | "blob">, comment?: string): string =>
  `${key.type} ${Buffer.from(key.blob).toString("base64")}${comment === undefined || comment === "" ? "" : ` ${comment}`}`

export const sameKey = (a: Pick<PublicKey, "blob">, b: Pick<PublicKey, "blob">): boolean =>
  Buffer.from(a.blob).equals(Buffer.from(b.blob))

/** Longest accepted public key line (RSA-16384 in base64 plus a generous comment). */
export const MAX_KEY_LINE = 8192

/**
 * Parses one OpenSSH public key line (`ssh-ed25519 AAAA… comment`). Options before the type, as in
 * authorized_keys, are not accepted here; the type named in the text must match the blob's.
 */
export const parsePublicKeyLine = (
  line: string
): Either.Either<{ readonly key: PublicKey; readonly comment: string }, InvalidPublicKey> => {
  if (line.length > MAX_KEY_LINE) return invalid("TooLarge", `a public key line of ${line.length} characters is too long`)
  const text = line.trim()
  if (text.startsWith("PuTTY-User-Key-File") || text.startsWith("---- BEGIN SSH2 PUBLIC KEY")) {
    return invalid("Malformed", "this is a PuTTY/RFC 4716 key; convert it with: ssh-keygen -i -f <file>")
  }
  if (text.startsWith("-----BEGIN")) {
    return invalid("Malformed", "this is a private key or PEM file, not an OpenSSH public key line; get the public key with: ssh-keygen -y -f <file>")
  }
  const match = /^(\S+)\s+([A-Za-z0-9+/]+={0,2})(?:\s+(.*))?$/.exec(text)
  if (!match) return invalid("Malformed", "expected `<type> <base64> [comment]`, e.g. `ssh-ed25519 AAAAC3Nza… you@host`")
  const type = match[1] ?? ""
  if (!(SUPPORTED_KEY_TYPES as ReadonlyArray<string>).includes(type)) return invalid("UnsupportedType", unsupportedTypeText(type))
  const blob = Buffer.from(match[2] ?? "", "base64")
  if (blob.toString("base64") !== match[2]) return invalid("Malformed", "the key's base64 is not canonical")
  return Either.flatMap(parsePublicKeyBlob(blob), (key) =>
    key.type === type
      ? Either.right({ key, comment: (match[3] ?? "").trim() })
      : invalid("Malformed", `the line says ${type} but the key inside is ${key.type}`))
}

/** Builds a blob from Node's JWK export of an ed25519 or RSA public key. */
export const blobFromKeyObject = (key: KeyObject): Either.Either<Uint8Array, InvalidPublicKey> => {
  const jwk = key.export({ format: "jwk" })
  if (jwk.kty === "OKP" && jwk.crv === "Ed25519" && typeof jwk.x === "string") {
    return Either.right(concat([wireString("ssh-ed25519"), wireString(Buffer.from(jwk.x, "base64url"))]))
  }
  if (jwk.kty === "RSA" && typeof jwk.n === "string" && typeof jwk.e === "string") {
    return Either.right(concat([
      wireString("ssh-rsa"), mpint(Buffer.from(jwk.e, "base64url")), mpint(Buffer.from(jwk.n, "base64url"))
    ]))
  }
  return invalid("UnsupportedType", unsupportedTypeText(`${String(jwk.kty)}${jwk.crv === undefined ? "" : `/${jwk.crv}`}`))
}

/** A public key as a JSON/Schema value: its OpenSSH line (comment dropped on decode). */
export const PublicKeyLine = Schema.String.pipe(
  Schema.maxLength(MAX_KEY_LINE),
  Schema.filter((s) => Either.isRight(parsePublicKeyLine(s)) || `"${s.slice(0, 40)}…" is not a supported OpenSSH public key`)
)
