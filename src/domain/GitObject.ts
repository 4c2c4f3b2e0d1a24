/**
 * Git objects, byte for byte: blob, tree and annotated tag (commits are framed and hashed but not
 * decoded; upm never makes them). Decoding is strict: anything git's `fsck --strict` would flag in
 * a tree or tag, and anything unsafe to export, is a typed `InvalidObject` saying what is wrong.
 */
import { Either, Schema } from "effect"
import { createHash } from "node:crypto"
import { hashFromBytes, hashToBytes, type ObjectHash, trustedHash } from "./ObjectHash.js"

export const ObjectType = Schema.Literal("blob", "tree", "commit", "tag")
export type ObjectType = typeof ObjectType.Type

/** Tree entry modes upm accepts. `160000` (gitlink/submodule) is rejected: a package cannot point outside itself. */
export const TreeMode = Schema.Literal("100644", "100755", "120000", "40000")
export type TreeMode = typeof TreeMode.Type

export class InvalidObject extends Schema.TaggedError<InvalidObject>()("InvalidObject", {
  reason: Schema.Literal(
    "BadFraming", "SizeMismatch", "UnknownType", "TooLarge",
    "BadMode", "BadName", "Unsorted", "Duplicate", "TruncatedHash", "TruncatedEntry",
    "BadHeader", "BadUtf8"
  ),
  detail: Schema.String
}) {}

const invalid = (reason: InvalidObject["reason"], detail: string) => Either.left(new InvalidObject({ reason, detail }))

export interface TreeEntry {
  readonly mode: TreeMode
  readonly name: string
  readonly hash: ObjectHash
}

export interface Tag {
  readonly object: ObjectHash
  readonly type: ObjectType
  /** The tag name, e.g. `creationix/greetings/v0.0.1`. */
  readonly tag: string
  /** `Name <email> <unix seconds> <+hhmm>`; absent only in tags made by very old git. */
  readonly tagger: string | undefined
  /** The message, with its trailing newline, without the signature block. */
  readonly message: string
  /** The armored signature block appended after the message (`-----BEGIN SSH SIGNATURE-----…`), if any. */
  readonly signature: string | undefined
}

/** A decoded object with its raw body. */
export type GitObject =
  | { readonly type: "blob"; readonly body: Uint8Array }
  | { readonly type: "tree"; readonly body: Uint8Array; readonly entries: ReadonlyArray<TreeEntry> }
  | { readonly type: "tag"; readonly body: Uint8Array; readonly tag: Tag }
  | { readonly type: "commit"; readonly body: Uint8Array }

// ---------------------------------------------------------------------------------------------
// Framing: "<type> <size>\0<body>"

const encoder = new TextEncoder()
const utf8 = new TextDecoder("utf-8", { fatal: true })

export const frame = (type: ObjectType, body: Uint8Array): Uint8Array => {
  const header = encoder.encode(`${type} ${body.length}\0`)
  const out = new Uint8Array(header.length + body.length)
  out.set(header, 0)
  out.set(body, header.length)
  return out
}

/** The hash of an object of this type and body (hashed in place: the body is not copied into a frame). */
export const hashOf = (type: ObjectType, body: Uint8Array): ObjectHash =>
  trustedHash(createHash("sha1").update(`${type} ${body.length}\0`, "latin1").update(body).digest("hex"))

/** Longest header: "commit " + 20 digits + NUL. */
const MAX_HEADER = 32

/** Splits framed bytes into type and body, checking the declared size. */
export const unframe = (
  framed: Uint8Array,
  maxSize = Number.MAX_SAFE_INTEGER
): Either.Either<{ readonly type: ObjectType; readonly body: Uint8Array }, InvalidObject> => {
  const limit = Math.min(framed.length, MAX_HEADER)
  let nul = -1
  for (let i = 0; i < limit; i++) if (framed[i] === 0) { nul = i; break }
  if (nul < 0) return invalid("BadFraming", "no `<type> <size>\\0` header")
  const header = Buffer.from(framed.buffer, framed.byteOffset, nul).toString("latin1")
  const match = /^(blob|tree|commit|tag) (0|[1-9][0-9]*)$/.exec(header)
  if (!match) {
    return /^[a-z]+ /.test(header)
      ? invalid("UnknownType", `unknown object type in header "${header}"`)
      : invalid("BadFraming", `malformed header "${header}"`)
  }
  const size = Number(match[2])
  if (size > maxSize) return invalid("TooLarge", `object of ${size} bytes exceeds the limit of ${maxSize}`)
  const body = framed.subarray(nul + 1)
  if (body.length !== size) return invalid("SizeMismatch", `header says ${size} bytes, body has ${body.length}`)
  return Either.right({ type: match[1] as ObjectType, body })
}

// ---------------------------------------------------------------------------------------------
// Trees

/** git's order: byte-wise on names, where a directory's name compares as if followed by `/`. */
export const compareEntries = (a: Pick<TreeEntry, "mode" | "name">, b: Pick<TreeEntry, "mode" | "name">): number =>
  Buffer.compare(sortKey(a), sortKey(b))

const sortKey = (e: Pick<TreeEntry, "mode" | "name">): Buffer =>
  Buffer.from(e.mode === "40000" ? `${e.name}/` : e.name, "utf8")

/** Why a name is not allowed as a tree entry, or undefined when it is fine. */
export const badEntryName = (name: string): string | undefined => {
  if (name.length === 0) return "empty name"
  if (name === "." || name === "..") return `"${name}" is not a file name`
  if (name.toLowerCase() === ".git") return `"${name}" would be a git directory`
  if (name.includes("/")) return `"${name}" contains "/"`
  if (name.includes("\0")) return `name contains NUL`
  if (Buffer.byteLength(name, "utf8") > 255) return `name longer than 255 bytes`
  return undefined
}

export const encodeTree = (entries: ReadonlyArray<TreeEntry>): Uint8Array => {
  const sorted = [...entries].sort(compareEntries)
  const parts: Array<Uint8Array> = []
  for (const e of sorted) {
    parts.push(encoder.encode(`${e.mode} ${e.name}\0`), hashToBytes(e.hash))
  }
  return Buffer.concat(parts)
}

const MODES: ReadonlySet<string> = new Set(["100644", "100755", "120000", "40000"])

export const decodeTree = (body: Uint8Array): Either.Either<ReadonlyArray<TreeEntry>, InvalidObject> => {
  const entries: Array<TreeEntry> = []
  let at = 0
  let previous: TreeEntry | undefined
  // A file "a" and a directory "a" sort apart ("a" < "a-" < "a/"), so adjacent checks alone miss them.
  const names = new Set<string>()
  while (at < body.length) {
    const space = body.indexOf(0x20, at)
    if (space < 0 || space - at > 6) return invalid("TruncatedEntry", `entry at byte ${at} has no mode`)
    const mode = Buffer.from(body.buffer, body.byteOffset + at, space - at).toString("latin1")
    if (!MODES.has(mode)) {
      return invalid("BadMode", mode === "160000" ? "submodule entries (mode 160000) are not allowed" : `bad mode "${mode}"`)
    }
    const nul = body.indexOf(0, space + 1)
    if (nul < 0) return invalid("TruncatedEntry", `entry at byte ${at} has no NUL after its name`)
    let name: string
    try {
      name = utf8.decode(body.subarray(space + 1, nul))
    } catch {
      return invalid("BadUtf8", `entry at byte ${at} has a name that is not UTF-8`)
    }
    const bad = badEntryName(name)
    if (bad !== undefined) return invalid("BadName", bad)
    if (nul + 21 > body.length) return invalid("TruncatedHash", `entry "${name}" has a truncated hash`)
    const entry: TreeEntry = { mode: mode as TreeMode, name, hash: hashFromBytes(body.subarray(nul + 1, nul + 21)) }
    if (names.has(name)) return invalid("Duplicate", `duplicate entry "${name}"`)
    names.add(name)
    if (previous !== undefined) {
      if (compareEntries(previous, entry) >= 0) return invalid("Unsorted", `"${previous.name}" sorts after "${name}"`)
    }
    entries.push(entry)
    previous = entry
    at = nul + 21
  }
  return Either.right(entries)
}

// ---------------------------------------------------------------------------------------------
// Tags

/** git's ident line as fsck checks it: `Name <email> <unix seconds> <+hhmm>` (no `<`/`>` inside the parts). */
const IDENT = /^(?:[^<>\n]* )?<[^<>\n]*> (?:0|[1-9][0-9]{0,19}) [+-][0-9]{4}$/

const SIGNATURE_MARKERS = ["-----BEGIN SSH SIGNATURE-----", "-----BEGIN PGP SIGNATURE-----", "-----BEGIN SIGNED MESSAGE-----"]

/** The bytes a tag signature covers: the tag without its signature block. */
export const encodeTagPayload = (tag: Omit<Tag, "signature">): Uint8Array =>
  encoder.encode(
    `object ${tag.object}\ntype ${tag.type}\ntag ${tag.tag}\n` +
      (tag.tagger === undefined ? "" : `tagger ${tag.tagger}\n`) +
      `\n${tag.message}`
  )

export const encodeTag = (tag: Tag): Uint8Array =>
  tag.signature === undefined
    ? encodeTagPayload(tag)
    : Buffer.concat([encodeTagPayload(tag), encoder.encode(tag.signature)])

export const decodeTag = (body: Uint8Array): Either.Either<Tag, InvalidObject> => {
  let text: string
  try {
    text = utf8.decode(body)
  } catch {
    return invalid("BadUtf8", "tag is not UTF-8")
  }
  const end = text.indexOf("\n\n")
  const headerText = end < 0 ? (text.endsWith("\n") ? text.slice(0, -1) : text) : text.slice(0, end)
  const rest = end < 0 ? "" : text.slice(end + 2)
  const lines = headerText.split("\n")
  const field = (i: number, key: string): string | undefined => {
    const line = lines[i]
    return line !== undefined && line.startsWith(`${key} `) ? line.slice(key.length + 1) : undefined
  }
  const object = field(0, "object")
  if (object === undefined || !/^[0-9a-f]{40}$/.test(object)) return invalid("BadHeader", "tag has no valid `object` line")
  const type = field(1, "type")
  if (type === undefined || !Schema.is(ObjectType)(type)) return invalid("BadHeader", "tag has no valid `type` line")
  const name = field(2, "tag")
  if (name === undefined || name.length === 0) return invalid("BadHeader", "tag has no `tag` line")
  const tagger = field(3, "tagger")
  if (tagger !== undefined && !IDENT.test(tagger)) {
    return invalid("BadHeader", `tagger "${tagger}" is not "Name <email> <seconds> <+hhmm>"`)
  }
  const headerCount = tagger === undefined ? 3 : 4
  if (lines.length !== headerCount) return invalid("BadHeader", `unexpected tag header line "${lines[headerCount]}"`)
  // As git does: the signature starts at the last line of the body that begins with a signature marker.
  let cut = -1
  for (let at = 0; at < rest.length; ) {
    if (SIGNATURE_MARKERS.some((marker) => rest.startsWith(marker, at))) cut = at
    const eol = rest.indexOf("\n", at)
    at = eol < 0 ? rest.length : eol + 1
  }
  return Either.right({
    object: trustedHash(object),
    type,
    tag: name,
    tagger,
    message: cut < 0 ? rest : rest.slice(0, cut),
    signature: cut < 0 ? undefined : rest.slice(cut)
  })
}

// ---------------------------------------------------------------------------------------------
// Whole objects

/** Decodes a body of a known type (blobs and commits are opaque). */
export const decodeObject = (type: ObjectType, body: Uint8Array): Either.Either<GitObject, InvalidObject> => {
  switch (type) {
    case "blob":
    case "commit":
      return Either.right({ type, body })
    case "tree":
      return Either.map(decodeTree(body), (entries) => ({ type, body, entries }))
    case "tag":
      return Either.map(decodeTag(body), (tag) => ({ type, body, tag }))
  }
}

/** Decodes framed bytes (as stored, or as carried by a SEND). */
export const decodeFramed = (framed: Uint8Array, maxSize?: number): Either.Either<GitObject, InvalidObject> =>
  Either.flatMap(unframe(framed, maxSize), ({ type, body }) => decodeObject(type, body))

/** The hashes an object points at (tree entries, a tag's object). Blobs point at nothing. */
export const children = (object: GitObject): ReadonlyArray<{ readonly hash: ObjectHash; readonly type: ObjectType }> => {
  switch (object.type) {
    case "tree":
      return object.entries.map((e) => ({ hash: e.hash, type: e.mode === "40000" ? "tree" : "blob" }))
    case "tag":
      return [{ hash: object.tag.object, type: object.tag.type }]
    default:
      return []
  }
}
