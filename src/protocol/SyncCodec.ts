/**
 * The sync protocol's wire format (seed 004), pure and streaming.
 *
 * Frames, told apart by their first byte:
 *
 * | first byte        | frame   | layout                                                         |
 * | ----------------- | ------- | -------------------------------------------------------------- |
 * | `l` (`lit?`)      | Hello   | `lit?` versions (comma separated decimals) `\n`                 |
 * | `l` (`lit!`)      | Welcome | `lit!` version `\n`                                             |
 * | `10xxxxxx`        | Want    | xxxxxx + 1 raw 20-byte hashes (1..64)                          |
 * | `11Mxxxxx`        | Send    | [Mxxxxxxx]… size, most significant group first; then the data  |
 * | `?`               | Query   | UTF-8 text `\n\n`                                              |
 * | `!`               | Reply   | UTF-8 text `\n\n`                                              |
 *
 * Anything else is a typed `SyncCodecError`. Every size is checked against the limits before it is buffered.
 * The decoder is a Channel (STYLE.md, "Framing is a Channel"): chunk boundaries are invisible to it and a
 * truncated frame at the end of input is an error, not silence.
 */
import { Channel, Chunk, Effect, Either, Schema, Stream } from "effect"
import { hashFromBytes, hashToBytes, ObjectHash } from "../domain/ObjectHash.js"

// ---------------------------------------------------------------------------------------------
// Frames

export const Hello = Schema.TaggedStruct("Hello", { versions: Schema.Array(Schema.Int) })
export const Welcome = Schema.TaggedStruct("Welcome", { version: Schema.Int })
export const Want = Schema.TaggedStruct("Want", { hashes: Schema.Array(ObjectHash) })
/** `data` is the raw git-framed object (`"<type> <size>\0<body>"`); the receiver computes its hash. */
export const Send = Schema.TaggedStruct("Send", { data: Schema.Uint8ArrayFromSelf })
export const Query = Schema.TaggedStruct("Query", { text: Schema.String })
export const Reply = Schema.TaggedStruct("Reply", { text: Schema.String })
export const Frame = Schema.Union(Hello, Welcome, Want, Send, Query, Reply)
export type Frame = typeof Frame.Type
export type Hello = typeof Hello.Type
export type Welcome = typeof Welcome.Type
export type Want = typeof Want.Type
export type Send = typeof Send.Type
export type Query = typeof Query.Type
export type Reply = typeof Reply.Type

export const hello = (versions: ReadonlyArray<number>): Frame => ({ _tag: "Hello", versions })
export const welcome = (version: number): Frame => ({ _tag: "Welcome", version })
export const want = (hashes: ReadonlyArray<ObjectHash>): Frame => ({ _tag: "Want", hashes })
export const send = (data: Uint8Array): Frame => ({ _tag: "Send", data })
export const query = (text: string): Frame => ({ _tag: "Query", text })
export const reply = (text: string): Frame => ({ _tag: "Reply", text })

/** At most this many hashes in one WANT (six bits hold count - 1). */
export const MAX_WANT = 64
/** A handshake line is short: `lit?` + a few versions + `\n`. */
export const MAX_HANDSHAKE_LINE = 64
/** A protocol version number: at most 4 decimal digits. */
export const MAX_VERSION = 9999
/** Size groups after the first byte of a SEND; 5 + 7 * 9 bits cover any safe integer size. */
const MAX_SIZE_GROUPS = 9

export class SyncCodecError extends Schema.TaggedError<SyncCodecError>()("SyncCodecError", {
  reason: Schema.Literal(
    "TooLarge", "Truncated", "BadHandshake", "BadText", "UnknownFrame", "BadSize", "Unencodable"
  ),
  detail: Schema.String
}) {}

export interface CodecLimits {
  /** Largest SEND payload (a framed object) accepted. */
  readonly maxSendSize: number
  /** Largest QUERY / REPLY text, in bytes, without the marker and terminator. */
  readonly maxTextSize: number
}

export const defaultCodecLimits: CodecLimits = { maxSendSize: 64 * 1024 * 1024, maxTextSize: 64 * 1024 }

// ---------------------------------------------------------------------------------------------
// Encoding

const encoder = new TextEncoder()

/** The SEND header for a payload of `size` bytes: lit's variable-length size, most significant group first. */
export const sendHeader = (size: number): Uint8Array => {
  const groups: Array<number> = []
  let rest = size
  // Peel 7-bit groups off the low end until what is left fits the first byte's 5 bits.
  while (rest >= 0x20) {
    groups.unshift(rest % 0x80)
    rest = Math.floor(rest / 0x80)
  }
  const out = new Uint8Array(groups.length + 1)
  out[0] = 0xc0 | (groups.length > 0 ? 0x20 : 0) | rest
  groups.forEach((g, i) => { out[i + 1] = (i < groups.length - 1 ? 0x80 : 0) | g })
  return out
}

const checkText = (text: string): string | undefined =>
  text.includes("\n\n") ? "text contains an empty line (\\n\\n ends a frame)"
    : text.endsWith("\n") ? "text ends with \\n (it would merge with the terminator)"
    : undefined

/** Encodes one frame, or says why it cannot be encoded (a text with an empty line, 0 or 65 hashes, …). */
export const encodeEither = (frame: Frame): Either.Either<Uint8Array, SyncCodecError> => {
  const bad = (detail: string) => Either.left(new SyncCodecError({ reason: "Unencodable", detail }))
  switch (frame._tag) {
    case "Hello":
      if (frame.versions.length === 0 || frame.versions.some((v) => !Number.isInteger(v) || v < 0 || v > MAX_VERSION)) {
        return bad("a Hello names 1 or more versions in 0..9999")
      }
      return Either.right(encoder.encode(`lit?${frame.versions.join(",")}\n`))
    case "Welcome":
      if (!Number.isInteger(frame.version) || frame.version < 0 || frame.version > MAX_VERSION) {
        return bad("a Welcome names one version in 0..9999")
      }
      return Either.right(encoder.encode(`lit!${frame.version}\n`))
    case "Want": {
      const n = frame.hashes.length
      if (n < 1 || n > MAX_WANT) return bad(`a WANT carries 1 to ${MAX_WANT} hashes, not ${n}`)
      const out = new Uint8Array(1 + 20 * n)
      out[0] = 0x80 | (n - 1)
      frame.hashes.forEach((h, i) => out.set(hashToBytes(h), 1 + 20 * i))
      return Either.right(out)
    }
    case "Send": {
      const header = sendHeader(frame.data.length)
      const out = new Uint8Array(header.length + frame.data.length)
      out.set(header, 0)
      out.set(frame.data, header.length)
      return Either.right(out)
    }
    case "Query":
    case "Reply": {
      const why = checkText(frame.text)
      if (why !== undefined) return bad(why)
      return Either.right(encoder.encode(`${frame._tag === "Query" ? "?" : "!"}${frame.text}\n\n`))
    }
  }
}

export const encode = (frame: Frame): Effect.Effect<Uint8Array, SyncCodecError> => encodeEither(frame)

// ---------------------------------------------------------------------------------------------
// Decoding

const utf8 = new TextDecoder("utf-8", { fatal: true })
const latin1 = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1")

type Step = Either.Either<ReadonlyArray<Frame>, SyncCodecError>

/**
 * An incremental decoder: `push` bytes, get the frames they complete. Its state is private to one instance;
 * make one per connection. Large SEND payloads are copied once into a buffer of their announced size.
 */
export interface Decoder {
  readonly push: (chunk: Uint8Array) => Step
  /** Called at the end of input: an error if a frame was cut off. */
  readonly end: () => Either.Either<void, SyncCodecError>
  /** True while a frame has started but not completed (for the per-message timeout). */
  readonly midFrame: () => boolean
}

const fail = (reason: SyncCodecError["reason"], detail: string) => Either.left(new SyncCodecError({ reason, detail }))

export const makeDecoder = (limits: CodecLimits = defaultCodecLimits): Decoder => {
  // Bytes not yet consumed by a frame (always small: a header, a text, a WANT), unless `body` is active.
  let pending: Uint8Array = new Uint8Array(0)
  // A SEND whose header is parsed and whose payload is being filled.
  let body: Uint8Array | undefined
  let filled = 0

  const append = (a: Uint8Array, b: Uint8Array): Uint8Array => {
    if (a.length === 0) return b
    if (b.length === 0) return a
    const out = new Uint8Array(a.length + b.length)
    out.set(a, 0)
    out.set(b, a.length)
    return out
  }

  /** Tries to take one frame off `pending`. undefined: need more bytes. */
  const next = (): Either.Either<Frame | undefined, SyncCodecError> => {
    const buf = pending
    if (buf.length === 0) return Either.right(undefined)
    const head = buf[0]!
    if (head & 0x80) {
      if ((head & 0x40) === 0) {
        const n = (head & 0x3f) + 1
        const size = 1 + 20 * n
        if (buf.length < size) return Either.right(undefined)
        const hashes: Array<ObjectHash> = []
        for (let i = 0; i < n; i++) hashes.push(hashFromBytes(buf.subarray(1 + 20 * i, 21 + 20 * i)))
        pending = buf.subarray(size)
        return Either.right({ _tag: "Want", hashes })
      }
      let size = head & 0x1f
      let at = 1
      if (head & 0x20) {
        for (;;) {
          if (at >= buf.length) return Either.right(undefined)
          if (at > MAX_SIZE_GROUPS) return fail("BadSize", `SEND size uses more than ${MAX_SIZE_GROUPS} continuation bytes`)
          const b = buf[at++]!
          size = size * 0x80 + (b & 0x7f)
          const last = (b & 0x80) === 0
          if (size > limits.maxSendSize) {
            const amount = last ? `${size}` : `more than ${size}`
            return fail("TooLarge", `SEND of ${amount} bytes exceeds the limit of ${limits.maxSendSize}`)
          }
          if (last) break
        }
      } else if (size > limits.maxSendSize) {
        return fail("TooLarge", `SEND of ${size} bytes exceeds the limit of ${limits.maxSendSize}`)
      }
      const available = buf.length - at
      if (available >= size) {
        pending = buf.subarray(at + size)
        return Either.right({ _tag: "Send", data: buf.slice(at, at + size) })
      }
      body = new Uint8Array(size)
      body.set(buf.subarray(at), 0)
      filled = available
      pending = new Uint8Array(0)
      return Either.right(undefined)
    }
    if (head === 0x3f || head === 0x21) {
      // Text: up to the first "\n\n". Search only what could hold it, and stop at the limit.
      const limit = Math.min(buf.length, 1 + limits.maxTextSize + 2)
      let end = -1
      for (let i = 1; i + 1 < limit; i++) {
        if (buf[i] === 0x0a && buf[i + 1] === 0x0a) { end = i; break }
      }
      if (end < 0) {
        if (buf.length >= 1 + limits.maxTextSize + 2) {
          return fail("TooLarge", `${head === 0x3f ? "QUERY" : "REPLY"} longer than ${limits.maxTextSize} bytes`)
        }
        return Either.right(undefined)
      }
      let text: string
      try {
        text = utf8.decode(buf.subarray(1, end))
      } catch {
        return fail("BadText", `${head === 0x3f ? "QUERY" : "REPLY"} is not UTF-8`)
      }
      pending = buf.subarray(end + 2)
      return Either.right(head === 0x3f ? { _tag: "Query", text } : { _tag: "Reply", text })
    }
    if (head === 0x6c) {
      const limit = Math.min(buf.length, MAX_HANDSHAKE_LINE)
      const eol = buf.subarray(0, limit).indexOf(0x0a)
      if (eol < 0) {
        if (buf.length >= MAX_HANDSHAKE_LINE) return fail("BadHandshake", `handshake line longer than ${MAX_HANDSHAKE_LINE} bytes`)
        // Fail fast on bytes that can never become "lit?" or "lit!".
        const prefix = latin1(buf.subarray(0, Math.min(buf.length, 4)))
        if (!"lit?".startsWith(prefix) && !"lit!".startsWith(prefix)) {
          return fail("BadHandshake", `expected "lit?" or "lit!", got ${JSON.stringify(prefix)}`)
        }
        return Either.right(undefined)
      }
      const line = latin1(buf.subarray(0, eol))
      pending = buf.subarray(eol + 1)
      const hi = /^lit\?((?:0|[1-9][0-9]{0,3})(?:,(?:0|[1-9][0-9]{0,3}))*)$/.exec(line)
      if (hi) return Either.right({ _tag: "Hello", versions: hi[1]!.split(",").map(Number) })
      const ok = /^lit!(0|[1-9][0-9]{0,3})$/.exec(line)
      if (ok) return Either.right({ _tag: "Welcome", version: Number(ok[1]) })
      return fail("BadHandshake", `malformed handshake line ${JSON.stringify(line)}`)
    }
    return fail("UnknownFrame", `unknown frame type byte 0x${head.toString(16).padStart(2, "0")}`)
  }

  const push = (chunk: Uint8Array): Step => {
    const frames: Array<Frame> = []
    let input = chunk
    for (;;) {
      if (body !== undefined) {
        const take = Math.min(body.length - filled, input.length)
        body.set(input.subarray(0, take), filled)
        filled += take
        input = input.subarray(take)
        if (filled < body.length) return Either.right(frames)
        frames.push({ _tag: "Send", data: body })
        body = undefined
        filled = 0
      }
      pending = append(pending, input)
      input = new Uint8Array(0)
      for (;;) {
        const result = next()
        if (Either.isLeft(result)) return Either.left(result.left)
        if (result.right === undefined) break
        frames.push(result.right)
      }
      if (body === undefined) {
        // Keep only the unconsumed tail (a slice, so a large chunk is not kept alive by a small tail).
        if (pending.length > 0 && pending.byteOffset > 0) pending = pending.slice()
        return Either.right(frames)
      }
      // A SEND payload started inside this chunk and everything after it was moved into `body`.
      return Either.right(frames)
    }
  }

  return {
    push,
    end: () =>
      body !== undefined
        ? fail("Truncated", `input ended inside a SEND (${filled} of ${body.length} bytes)`)
        : pending.length > 0
        ? fail("Truncated", `input ended inside a frame (${pending.length} bytes pending)`)
        : Either.right(undefined),
    midFrame: () => body !== undefined || pending.length > 0
  }
}

/** Decodes a whole byte array (tests and small fixtures). */
export const decodeAll = (bytes: Uint8Array, limits?: CodecLimits): Either.Either<ReadonlyArray<Frame>, SyncCodecError> => {
  const decoder = makeDecoder(limits)
  return Either.flatMap(decoder.push(bytes), (frames) => Either.map(decoder.end(), () => frames))
}

/** The decoder as a Channel from byte chunks to frames. */
export const decoder = <E>(limits: CodecLimits = defaultCodecLimits) =>
  Channel.suspend(() => {
    const state = makeDecoder(limits)
    const loop: Channel.Channel<Chunk.Chunk<Frame>, Chunk.Chunk<Uint8Array>, SyncCodecError | E, E, void, unknown> =
      Channel.readWithCause({
        onInput: (input: Chunk.Chunk<Uint8Array>) => {
          const out: Array<Frame> = []
          for (const chunk of input) {
            const step = state.push(chunk)
            if (Either.isLeft(step)) return Channel.fail(step.left)
            out.push(...step.right)
          }
          return out.length === 0 ? loop : Channel.zipRight(Channel.write(Chunk.unsafeFromArray(out)), loop)
        },
        onFailure: Channel.failCause,
        onDone: () => Either.match(state.end(), { onLeft: Channel.fail, onRight: () => Channel.void })
      })
    return loop
  })

export const decode = (limits?: CodecLimits) => <E, R>(bytes: Stream.Stream<Uint8Array, E, R>) =>
  Stream.pipeThroughChannelOrFail(bytes, decoder<E>(limits))

/** Encodes a stream of frames (frames this program built; an unencodable one fails the stream). */
export const encodeStream = <E, R>(frames: Stream.Stream<Frame, E, R>) => Stream.mapEffect(frames, encode)
