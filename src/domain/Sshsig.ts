/**
 * SSHSIG, OpenSSH's detached signature format (PROTOCOL.sshsig), as `ssh-keygen -Y sign` writes it and
 * `git tag -s` appends it to a tag when `gpg.format=ssh`.
 *
 * ```
 * blob   = "SSHSIG" uint32(1) string(publickey) string(namespace) string(reserved) string(hash_alg) string(signature)
 * signed = "SSHSIG" string(namespace) string(reserved) string(hash_alg) string(H(message))
 * armor  = "-----BEGIN SSH SIGNATURE-----\n" base64(blob) in 70-column lines "\n-----END SSH SIGNATURE-----\n"
 * ```
 *
 * Decoding is strict and bounded: the armor must be exactly one block of base64, the blob must have the
 * magic, version 1, an empty reserved field, a hash of sha256/sha512, no trailing bytes, and a signature
 * algorithm that matches the key (`ssh-ed25519`; `rsa-sha2-512` / `rsa-sha2-256` — SHA-1 `ssh-rsa` is
 * refused). Every failure is an `SshsigError` with a reason; nothing throws.
 */
import { constants, createHash, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from "node:crypto"
import { Either, Schema } from "effect"
import {
  concat, type InvalidPublicKey, MAX_KEY_BLOB, parsePublicKeyBlob, type PublicKey, WireReader, wireString
} from "./SshKey.js"

export const MAGIC = "SSHSIG"
export const VERSION = 1
export const BEGIN = "-----BEGIN SSH SIGNATURE-----"
export const END = "-----END SSH SIGNATURE-----"
/** The namespace git uses for commit and tag signatures. */
export const GIT_NAMESPACE = "git"

export type HashAlgorithm = "sha256" | "sha512"
export type SignatureAlgorithm = "ssh-ed25519" | "rsa-sha2-256" | "rsa-sha2-512"

/** Armored signatures above this size are refused unread (an RSA-16384 signature armors to ~6 KiB). */
export const MAX_ARMORED = 16 * 1024
const MAX_NAMESPACE = 256
const MAX_SIGNATURE = 2048 + 64

export class SshsigError extends Schema.TaggedError<SshsigError>()("SshsigError", {
  reason: Schema.Literal(
    "TooLarge", "MalformedArmor", "MalformedBlob", "BadMagic", "UnsupportedVersion", "NonEmptyReserved",
    "UnsupportedHash", "UnknownKeyType", "WeakKey", "AlgorithmMismatch", "WeakAlgorithm", "WrongNamespace",
    "BadSignature"
  ),
  detail: Schema.String
}) {}

const fail = (reason: SshsigError["reason"], detail: string) => Either.left(new SshsigError({ reason, detail }))

export interface SshSignature {
  readonly publicKey: PublicKey
  readonly namespace: string
  readonly hashAlgorithm: HashAlgorithm
  readonly signatureAlgorithm: SignatureAlgorithm
  /** The raw signature bytes (64 for ed25519, the modulus size for RSA). */
  readonly signature: Uint8Array
}

// ---------------------------------------------------------------------------------------------
// Encoding

/** The bytes the key actually signs. */
export const signedData = (namespace: string, hashAlgorithm: HashAlgorithm, message: Uint8Array): Uint8Array =>
  concat([
    Buffer.from(MAGIC, "latin1"),
    wireString(namespace),
    wireString(""),
    wireString(hashAlgorithm),
    wireString(createHash(hashAlgorithm).update(message).digest())
  ])

export const encodeBlob = (sig: SshSignature): Uint8Array =>
  concat([
    Buffer.from(MAGIC, "latin1"),
    Buffer.from([0, 0, 0, VERSION]),
    wireString(sig.publicKey.blob),
    wireString(sig.namespace),
    wireString(""),
    wireString(sig.hashAlgorithm),
    wireString(concat([wireString(sig.signatureAlgorithm), wireString(sig.signature)]))
  ])

/** Armors a blob exactly as ssh-keygen does: 70-column base64 lines, trailing newline. */
export const armor = (blob: Uint8Array): string => {
  const b64 = Buffer.from(blob).toString("base64")
  const lines: Array<string> = []
  for (let i = 0; i < b64.length; i += 70) lines.push(b64.slice(i, i + 70))
  return `${BEGIN}\n${lines.join("\n")}\n${END}\n`
}

export const encode = (sig: SshSignature): string => armor(encodeBlob(sig))

/** The signature algorithm upm uses for a key: ed25519 as is, RSA with SHA-512 (as ssh-keygen does). */
export const signatureAlgorithmFor = (key: Pick<PublicKey, "type">): SignatureAlgorithm =>
  key.type === "ssh-ed25519" ? "ssh-ed25519" : "rsa-sha2-512"

/** Node's digest name for an SSH signature algorithm (null: the algorithm fixes it, as for ed25519). */
const digestOf = (algorithm: SignatureAlgorithm): string | null =>
  algorithm === "ssh-ed25519" ? null : algorithm === "rsa-sha2-256" ? "sha256" : "sha512"

/**
 * Signs `message` with a private key held in memory. `publicKey` must be the key's public half (callers
 * get both from Keys). Uses SHA-512 for the message hash, as ssh-keygen does by default.
 */
export const signWithKey = (
  privateKey: KeyObject,
  publicKey: PublicKey,
  namespace: string,
  message: Uint8Array
): string => {
  const signatureAlgorithm = signatureAlgorithmFor(publicKey)
  const data = signedData(namespace, "sha512", message)
  const signature = cryptoSign(digestOf(signatureAlgorithm), data, {
    key: privateKey,
    ...(publicKey.type === "ssh-rsa" ? { padding: constants.RSA_PKCS1_PADDING } : {})
  })
  return encode({ publicKey, namespace, hashAlgorithm: "sha512", signatureAlgorithm, signature })
}

// ---------------------------------------------------------------------------------------------
// Decoding

/** The blob inside an armored signature. Only base64 and line breaks may sit between the markers. */
export const dearmor = (text: string): Either.Either<Uint8Array, SshsigError> => {
  if (text.length > MAX_ARMORED) return fail("TooLarge", `signature of ${text.length} characters exceeds ${MAX_ARMORED}`)
  if (!text.startsWith(BEGIN)) return fail("MalformedArmor", `signature does not start with ${BEGIN}`)
  const end = text.indexOf(END)
  if (end < 0) return fail("MalformedArmor", `signature has no ${END} line`)
  const after = text.slice(end + END.length)
  if (!/^(\r?\n)?$/.test(after)) return fail("MalformedArmor", "text follows the END SSH SIGNATURE line")
  const body = text.slice(BEGIN.length, end)
  if (!/^(\r?\n[A-Za-z0-9+/=]{1,76})+\r?\n$/.test(body)) {
    return fail("MalformedArmor", "the armored block must hold base64 lines of at most 76 characters")
  }
  const b64 = body.replace(/\r?\n/g, "")
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || b64.length % 4 !== 0) return fail("MalformedArmor", "the armored block is not valid base64")
  return Either.right(Buffer.from(b64, "base64"))
}

const keyError = (e: InvalidPublicKey) =>
  e.reason === "UnsupportedType" ? fail("UnknownKeyType", e.detail)
  : e.reason === "WeakKey" ? fail("WeakKey", e.detail)
  : fail("MalformedBlob", `the signature's public key is malformed: ${e.detail}`)

/** Decodes a blob (not yet verified). */
export const decodeBlob = (blob: Uint8Array): Either.Either<SshSignature, SshsigError> => {
  const r = new WireReader(blob)
  const magic = r.raw(6)
  if (magic === undefined || Buffer.from(magic).toString("latin1") !== MAGIC) return fail("BadMagic", "the blob does not start with SSHSIG")
  const version = r.uint32()
  if (version === undefined) return fail("MalformedBlob", "the blob ends before its version")
  if (version !== VERSION) return fail("UnsupportedVersion", `SSHSIG version ${version}; only version 1 exists`)
  const keyBlob = r.string(MAX_KEY_BLOB)
  if (keyBlob === undefined) return fail("MalformedBlob", "the blob's public key is truncated or too large")
  const namespace = r.ascii(MAX_NAMESPACE)
  if (namespace === undefined) return fail("MalformedBlob", "the blob's namespace is truncated, too long or not printable")
  const reserved = r.string(MAX_NAMESPACE)
  if (reserved === undefined) return fail("MalformedBlob", "the blob's reserved field is truncated")
  if (reserved.length !== 0) return fail("NonEmptyReserved", "the reserved field must be empty")
  const hashAlgorithm = r.ascii(32)
  if (hashAlgorithm === undefined) return fail("MalformedBlob", "the blob's hash algorithm is truncated")
  if (hashAlgorithm !== "sha256" && hashAlgorithm !== "sha512") {
    return fail("UnsupportedHash", `hash algorithm "${hashAlgorithm}"; SSHSIG allows sha256 and sha512`)
  }
  const wrapped = r.string(MAX_SIGNATURE + 64)
  if (wrapped === undefined) return fail("MalformedBlob", "the blob's signature is truncated or too large")
  if (r.remaining !== 0) return fail("MalformedBlob", `${r.remaining} bytes follow the signature`)
  const w = new WireReader(wrapped)
  const algorithm = w.ascii(64)
  const signature = w.string(MAX_SIGNATURE)
  if (algorithm === undefined || signature === undefined || w.remaining !== 0) {
    return fail("MalformedBlob", "the signature field must be string(algorithm) string(bytes)")
  }
  return Either.flatMap(Either.orElse(parsePublicKeyBlob(keyBlob), keyError), (publicKey) => {
    if (publicKey.type === "ssh-ed25519") {
      if (algorithm !== "ssh-ed25519") return fail("AlgorithmMismatch", `an ed25519 key cannot make a "${algorithm}" signature`)
      if (signature.length !== 64) return fail("MalformedBlob", `an ed25519 signature is 64 bytes, not ${signature.length}`)
    } else {
      if (algorithm === "ssh-rsa") return fail("WeakAlgorithm", "ssh-rsa signatures use SHA-1 and are refused; sign with rsa-sha2-512")
      if (algorithm !== "rsa-sha2-512" && algorithm !== "rsa-sha2-256") {
        return fail("AlgorithmMismatch", `an RSA key cannot make a "${algorithm}" signature`)
      }
      if (signature.length > Math.ceil(publicKey.bits / 8)) return fail("MalformedBlob", "the RSA signature is longer than the modulus")
    }
    return Either.right({
      publicKey, namespace, hashAlgorithm, signatureAlgorithm: algorithm, signature: Uint8Array.from(signature)
    } satisfies SshSignature)
  })
}

export const decode = (armored: string): Either.Either<SshSignature, SshsigError> =>
  Either.flatMap(dearmor(armored), decodeBlob)

/** Checks a decoded signature over `message` in `namespace`. Returns the signing key. */
export const verifyDecoded = (
  sig: SshSignature,
  message: Uint8Array,
  namespace: string
): Either.Either<PublicKey, SshsigError> => {
  if (sig.namespace !== namespace) {
    return fail("WrongNamespace", `signature is for namespace "${sig.namespace}", expected "${namespace}"`)
  }
  const data = signedData(sig.namespace, sig.hashAlgorithm, message)
  let signature = sig.signature
  const modulusBytes = Math.ceil(sig.publicKey.bits / 8)
  if (sig.publicKey.type === "ssh-rsa" && signature.length < modulusBytes) {
    // OpenSSH left-pads short RSA signatures with zeros; OpenSSL wants the full length.
    const padded = new Uint8Array(modulusBytes)
    padded.set(signature, modulusBytes - signature.length)
    signature = padded
  }
  let ok = false
  try {
    ok = cryptoVerify(digestOf(sig.signatureAlgorithm), data, {
      key: sig.publicKey.keyObject,
      ...(sig.publicKey.type === "ssh-rsa" ? { padding: constants.RSA_PKCS1_PADDING } : {})
    }, signature)
  } catch {
    ok = false
  }
  return ok
    ? Either.right(sig.publicKey)
    : fail("BadSignature", "the signature does not match the signed bytes and the key it names")
}

/** Decodes and verifies an armored signature over `message` in `namespace`. */
export const verify = (
  armored: string,
  message: Uint8Array,
  namespace: string
): Either.Either<{ readonly publicKey: PublicKey; readonly signature: SshSignature }, SshsigError> =>
  Either.flatMap(decode(armored), (signature) =>
    Either.map(verifyDecoded(signature, message, namespace), (publicKey) => ({ publicKey, signature })))
