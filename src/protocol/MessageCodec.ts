/**
 * The message protocol's codec (seed 001): `[4-byte little-endian length][JSON]` frames, and the four message
 * directions as Schemas:
 *
 * - client → server: `ClientRequest` (`header.authentication`, `header.scope`, `payload.type`, `payload.data`)
 * - server → client: `ServerResponse` (`header.status`, `payload.type`, `payload.data`)
 * - server → handler: `HandlerRequest` (the client's message without its credentials, plus who sent it)
 * - handler → server: `HandlerReply` (`header.status`, `header.command`, `header.commandData`, payload)
 *
 * Every message may carry `header.id`, a correlation id: the server echoes a client's id on the response, and
 * a persistent handler must echo the id of the request it answers (see docs/protocol.md, "Message protocol").
 *
 * Decoding is streaming and bounded: the frame length is checked before anything is buffered, the JSON nesting
 * depth is checked by a scan before `JSON.parse` runs, and a message that does not match its Schema gives a
 * `MessageError` whose `issues` name each wrong field (`payload.type: Expected string, actual 1`).
 */
import { Channel, Chunk, Effect, Either, Option, ParseResult, Schema, Stream } from "effect"

// ---------------------------------------------------------------------------------------------
// Errors

/** The byte stream is not a sequence of frames: a length over the limit, or input ending inside a frame. */
export class FrameError extends Schema.TaggedError<FrameError>()("FrameError", {
  reason: Schema.Literal("TooLarge", "Truncated"),
  length: Schema.Number,
  limit: Schema.Number
}) {
  override get message() {
    return this.reason === "TooLarge"
      ? `frame of ${this.length} bytes exceeds the limit of ${this.limit} bytes`
      : `input ended inside a frame (${this.length} bytes buffered)`
  }
}

export const Issue = Schema.Struct({ path: Schema.String, message: Schema.String })
export type Issue = typeof Issue.Type

/** One frame that is not a valid message. The frame boundary is intact, so a session can answer and go on. */
export class MessageError extends Schema.TaggedError<MessageError>()("MessageError", {
  reason: Schema.Literal("BadUtf8", "BadJson", "TooDeep", "Invalid", "TooLarge", "Unencodable"),
  detail: Schema.String,
  issues: Schema.Array(Issue)
}) {
  override get message() {
    return this.issues.length === 0
      ? this.detail
      : `${this.detail}: ${this.issues.map((i) => `${i.path === "" ? "(message)" : i.path}: ${i.message}`).join("; ")}`
  }
}

// ---------------------------------------------------------------------------------------------
// Limits

export interface Limits {
  /** Largest frame body in bytes (the 4-byte prefix excluded). */
  readonly maxFrame: number
  /** Deepest nesting of JSON arrays and objects. */
  readonly maxDepth: number
}

export const defaultLimits: Limits = { maxFrame: 1024 * 1024, maxDepth: 32 }

// ---------------------------------------------------------------------------------------------
// Schemas

const text = (max: number) => Schema.String.pipe(Schema.maxLength(max))

/** A correlation id: chosen by the client (echoed on its response) or by the server (for a persistent handler). */
export const CorrelationId = Schema.Union(
  Schema.String.pipe(Schema.minLength(1), Schema.maxLength(128)),
  Schema.Int
)
export type CorrelationId = typeof CorrelationId.Type

/** A message type names a built-in or a handler: 1–64 of `A-Z a-z 0-9 . _ : -`. */
export const MessageType = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/, {
    message: () => "a message type is 1–64 of A-Z a-z 0-9 . _ : - starting with a letter or digit"
  })
)

export const Scope = Schema.Literal("client", "server")
export type Scope = typeof Scope.Type

export const Authentication = Schema.Struct({ username: text(128), password: text(1024) })
export type Authentication = typeof Authentication.Type

/** A status word: `ok`, `error`, `unauthorized`, … or whatever a handler says (at most 64 characters). */
export const Status = text(64)

/** client → server (seed 001 "Client -> Server"). `authentication` may be omitted after the first message. */
export const ClientRequest = Schema.Struct({
  header: Schema.Struct({
    authentication: Schema.optional(Authentication),
    scope: Scope,
    id: Schema.optional(CorrelationId)
  }),
  payload: Schema.Struct({ type: MessageType, data: Schema.Unknown })
})
export type ClientRequest = typeof ClientRequest.Type

/** server → client (seed 001 "Client <- Server"); also the frames the server pushes during a conversation. */
export const ServerResponse = Schema.Struct({
  header: Schema.Struct({ status: Status, id: Schema.optional(CorrelationId) }),
  payload: Schema.Struct({ type: text(64), data: Schema.Unknown })
})
export type ServerResponse = typeof ServerResponse.Type

/**
 * server → handler. Seed 001 sends only `payload.data`; a handler that serves several types, answers several
 * requests at once, or talks with the user needs more, so upm sends the client's message without its
 * credentials, plus: `id` (echo it), who asked (`user` or `peer`), and the conversation `handle`.
 */
export const HandlerRequest = Schema.Struct({
  header: Schema.Struct({
    id: CorrelationId,
    scope: Scope,
    user: Schema.optional(text(128)),
    peer: Schema.optional(text(128)),
    handle: Schema.optional(text(128)),
    handleSocket: Schema.optional(text(4096))
  }),
  payload: Schema.Struct({ type: MessageType, data: Schema.Unknown })
})
export type HandlerRequest = typeof HandlerRequest.Type

/** Where a handler's reply goes: `requester`/absent, `all` (servers), or named clients (users) / peers. */
export const CommandData = Schema.Union(
  Schema.Null,
  Schema.Literal("requester", "all"),
  Schema.Array(text(128)).pipe(Schema.maxItems(1000))
)
export type CommandData = typeof CommandData.Type

/** handler → server (seed 001 "Message Handler -> Server"). */
export const HandlerReply = Schema.Struct({
  header: Schema.Struct({
    status: Status,
    command: Schema.Literal("sendClients", "sendServers"),
    commandData: Schema.optional(CommandData),
    id: Schema.optional(CorrelationId)
  }),
  payload: Schema.Struct({ type: text(64), data: Schema.Unknown })
})
export type HandlerReply = typeof HandlerReply.Type

// ---------------------------------------------------------------------------------------------
// Frames

/**
 * The synchronous core of the frame decoder: bytes in, complete frame bodies out, the length checked before
 * anything is buffered. Sessions call it once per socket read (a Channel step per read costs more than the rest
 * of a small request); the Channel below is built on it. Bodies are views into the input where a frame arrived
 * whole; a frame split across reads is joined once, when its last byte arrives.
 */
export interface FrameReader {
  /**
   * Adds bytes: the frames they complete, and the error of a length over the limit if one came after them (then
   * every later push gives that error and no frames).
   */
  readonly push: (bytes: Uint8Array) => Cut
  /** The input ended: an error if it ended inside a frame. */
  readonly end: () => Option.Option<FrameError>
}

export interface Cut {
  readonly frames: ReadonlyArray<Uint8Array>
  readonly error: FrameError | undefined
}

const EMPTY = Buffer.alloc(0)
const NOTHING: Cut = { frames: [], error: undefined }
const asBuffer = (bytes: Uint8Array) =>
  Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)

export const frameReader = (maxFrame: number): FrameReader => {
  // Bytes of the incomplete frame at the head of the input, and how many the whole frame needs (4 + length;
  // 0 while fewer than 4 bytes are known).
  let parts: Array<Buffer> = []
  let size = 0
  let need = 0
  let failed: FrameError | undefined
  const tooLarge = (length: number) => (failed = new FrameError({ reason: "TooLarge", length, limit: maxFrame }))
  return {
    push: (bytes) => {
      if (failed !== undefined) return { frames: [], error: failed }
      if (bytes.length === 0) return NOTHING
      parts.push(asBuffer(bytes))
      size += bytes.length
      if (need === 0 && size >= 4) {
        const head = parts[0]!.length >= 4 ? parts[0]! : Buffer.concat(parts, size)
        if (head !== parts[0]) parts = [head]
        const length = head.readUInt32LE(0)
        if (length > maxFrame) return { frames: [], error: tooLarge(length) }
        need = 4 + length
      }
      if (need === 0 || size < need) return NOTHING
      const buf = parts.length === 1 ? parts[0]! : Buffer.concat(parts, size)
      const frames: Array<Uint8Array> = []
      let at = 0
      while (buf.length - at >= 4) {
        const length = buf.readUInt32LE(at)
        if (length > maxFrame) return { frames, error: tooLarge(length) }
        if (buf.length - at - 4 < length) break
        frames.push(buf.subarray(at + 4, at + 4 + length))
        at += 4 + length
      }
      const rest = at === buf.length ? EMPTY : buf.subarray(at)
      parts = rest.length === 0 ? [] : [rest]
      size = rest.length
      need = rest.length >= 4 ? 4 + rest.readUInt32LE(0) : 0
      return { frames, error: need - 4 > maxFrame ? tooLarge(need - 4) : undefined }
    },
    end: () =>
      failed !== undefined
        ? Option.some(failed)
        : size === 0
        ? Option.none()
        : Option.some(new FrameError({ reason: "Truncated", length: size, limit: maxFrame }))
  }
}

/** Streaming frame decoder: byte chunks in, `map(body)` of each frame out; the length is checked before buffering. */
const frameChannel = <E, A>(maxFrame: number, map: (body: Uint8Array) => A): Channel.Channel<
  Chunk.Chunk<A>, Chunk.Chunk<Uint8Array>, FrameError | E, E, void, unknown
> =>
  Channel.suspend(() => {
    const reader = frameReader(maxFrame)
    const loop: Channel.Channel<Chunk.Chunk<A>, Chunk.Chunk<Uint8Array>, FrameError | E, E, void, unknown> = Channel.readWithCause({
      onInput: (input: Chunk.Chunk<Uint8Array>) => {
        const out: Array<A> = []
        for (const bytes of input) {
          const cut = reader.push(bytes)
          for (const body of cut.frames) out.push(map(body))
          if (cut.error !== undefined) {
            const fail = Channel.fail(cut.error)
            return out.length === 0 ? fail : Channel.zipRight(Channel.write(Chunk.unsafeFromArray(out)), fail)
          }
        }
        return out.length === 0 ? loop : Channel.zipRight(Channel.write(Chunk.unsafeFromArray(out)), loop)
      },
      onFailure: Channel.failCause,
      onDone: () => Option.match(reader.end(), { onNone: () => Channel.void, onSome: Channel.fail })
    })
    return loop
  })

/** Streaming frame decoder: byte chunks in, frame bodies out; the length is checked before buffering. */
export const frameDecoder = <E>(maxFrame: number) => frameChannel<E, Uint8Array>(maxFrame, (body) => body)

/** Splits a byte stream into frame bodies. */
export const decodeFrames = (maxFrame: number = defaultLimits.maxFrame) =>
<E, R>(bytes: Stream.Stream<Uint8Array, E, R>): Stream.Stream<Uint8Array, FrameError | E, R> =>
  Stream.pipeThroughChannelOrFail(bytes, frameDecoder<E>(maxFrame))

/** Prefixes a body with its 4-byte little-endian length. */
export const frame = (body: Uint8Array): Uint8Array => {
  const out = Buffer.allocUnsafe(4 + body.length)
  out.writeUInt32LE(body.length, 0)
  out.set(body, 4)
  return out
}

// ---------------------------------------------------------------------------------------------
// JSON with limits

const utf8 = new TextDecoder("utf-8", { fatal: true })
const QUOTE = 0x22, BACKSLASH = 0x5c, OPEN_BRACE = 0x7b, CLOSE_BRACE = 0x7d, OPEN_BRACKET = 0x5b, CLOSE_BRACKET = 0x5d

/** The deepest nesting of `{`/`[` outside strings, scanning bytes; stops early once `limit` is passed. */
export const jsonDepth = (bytes: Uint8Array, limit: number): number => {
  let depth = 0, max = 0, inString = false
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]
    if (inString) {
      if (b === BACKSLASH) i++
      else if (b === QUOTE) inString = false
    } else if (b === QUOTE) inString = true
    else if (b === OPEN_BRACE || b === OPEN_BRACKET) {
      depth++
      if (depth > max) {
        max = depth
        if (max > limit) return max
      }
    } else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) depth--
  }
  return max
}

const formatPath = (path: ReadonlyArray<PropertyKey>) =>
  path.map((p) => (typeof p === "number" ? `[${p}]` : String(p))).join(".").replace(/\.\[/g, "[")

/** Schema issues as `{ path, message }` items (ArrayFormatter), paths dotted: `header.authentication.username`. */
export const issuesOf = (error: ParseResult.ParseError): ReadonlyArray<Issue> => {
  // A literal union reports one issue per member: merge them into one issue per path.
  const byPath = new Map<string, Array<string>>()
  for (const i of ParseResult.ArrayFormatter.formatErrorSync(error)) {
    const path = formatPath(i.path)
    const messages = byPath.get(path) ?? []
    if (!messages.includes(i.message)) messages.push(i.message)
    byPath.set(path, messages)
  }
  // An optional field that is present but wrong also reports "Expected undefined" at its parent: keep the
  // more precise issues below it.
  const paths = [...byPath.keys()]
  return [...byPath]
    .filter(([path]) => !paths.some((other) => other !== path && other.startsWith(path === "" ? "" : `${path}.`)))
    .map(([path, messages]) => ({ path, message: messages.join(" | ") }))
}

/** Parses one frame body as JSON within the depth limit. */
export const parseJson = (body: Uint8Array, limits: Limits = defaultLimits): Either.Either<unknown, MessageError> => {
  if (body.length > limits.maxFrame) {
    return Either.left(new MessageError({ reason: "TooLarge", detail: `message of ${body.length} bytes exceeds ${limits.maxFrame}`, issues: [] }))
  }
  const depth = jsonDepth(body, limits.maxDepth)
  if (depth > limits.maxDepth) {
    return Either.left(new MessageError({ reason: "TooDeep", detail: `JSON nested deeper than ${limits.maxDepth} levels`, issues: [] }))
  }
  let source: string
  try {
    source = utf8.decode(body)
  } catch {
    return Either.left(new MessageError({ reason: "BadUtf8", detail: "the message is not valid UTF-8", issues: [] }))
  }
  try {
    return Either.right(JSON.parse(source))
  } catch (e) {
    return Either.left(new MessageError({ reason: "BadJson", detail: `the message is not JSON (${e instanceof Error ? e.message : String(e)})`, issues: [] }))
  }
}

/** Decodes one frame body into a message of `schema`; every wrong field is named. */
export const decodeMessage = <A, I>(schema: Schema.Schema<A, I>, limits: Limits = defaultLimits) => {
  const decode = Schema.decodeUnknownEither(schema, { errors: "all", onExcessProperty: "ignore" })
  return (body: Uint8Array): Either.Either<A, MessageError> =>
    Either.flatMap(parseJson(body, limits), (json) =>
      Either.mapLeft(decode(json), (e) => new MessageError({ reason: "Invalid", detail: "malformed message", issues: issuesOf(e) })))
}

/**
 * A byte stream as messages: each frame decodes to `Right(message)` or `Left(MessageError)` (the stream goes on:
 * the next frame is intact); a framing violation ends the stream with a `FrameError`.
 */
export const decodeAll = <A, I>(schema: Schema.Schema<A, I>, limits: Limits = defaultLimits) => {
  const one = decodeMessage(schema, limits)
  return <E, R>(bytes: Stream.Stream<Uint8Array, E, R>): Stream.Stream<Either.Either<A, MessageError>, FrameError | E, R> =>
    Stream.pipeThroughChannelOrFail(bytes, frameChannel<E, Either.Either<A, MessageError>>(limits.maxFrame, one))
}

/**
 * One frame of a message this program built from values it has already validated (a response around a decoded
 * handler reply, a request around a decoded client request): JSON and the size limit, without a Schema pass.
 * `encodeMessage` checks a message of unknown origin.
 */
export const encodeJson = (message: unknown, maxFrame: number = defaultLimits.maxFrame): Either.Either<Uint8Array, MessageError> => {
  let json: string | undefined
  try {
    json = JSON.stringify(message)
  } catch (e) {
    return Either.left(new MessageError({ reason: "Unencodable", detail: e instanceof Error ? e.message : String(e), issues: [] }))
  }
  if (json === undefined) return Either.left(new MessageError({ reason: "Unencodable", detail: "not a JSON value", issues: [] }))
  const length = Buffer.byteLength(json)
  if (length > maxFrame) {
    return Either.left(new MessageError({ reason: "TooLarge", detail: `message of ${length} bytes exceeds ${maxFrame}`, issues: [] }))
  }
  const out = Buffer.allocUnsafe(4 + length)
  out.writeUInt32LE(length, 0)
  out.write(json, 4, "utf8")
  return Either.right(out)
}

/** Encodes a message of `schema` as one frame, within the frame limit. */
export const encodeMessage = <A, I>(schema: Schema.Schema<A, I>, limits: Limits = defaultLimits) => {
  const encode = Schema.encodeEither(schema, { errors: "all" })
  return (message: A): Either.Either<Uint8Array, MessageError> =>
    Either.flatMap(
      Either.mapLeft(encode(message), (e) => new MessageError({ reason: "Invalid", detail: "cannot encode message", issues: issuesOf(e) })),
      (encoded) => encodeJson(encoded, limits.maxFrame)
    )
}

/** `encodeMessage` as an Effect. */
export const encodeOne = <A, I>(schema: Schema.Schema<A, I>, limits: Limits = defaultLimits) => {
  const encode = encodeMessage(schema, limits)
  return (message: A): Effect.Effect<Uint8Array, MessageError> => encode(message)
}

// ---------------------------------------------------------------------------------------------
// The local handle channel (`upm send` / `upm receive` ⇄ server), same framing

/** `upm send <handle> <message>` / `upm receive <handle> [prompt]` → server. */
export const HandleRequest = Schema.Struct({
  handle: text(128),
  op: Schema.Literal("send", "receive"),
  message: text(64 * 1024)
})
export type HandleRequest = typeof HandleRequest.Type

/** server → `upm send` / `upm receive`: done (with the user's answer for `receive`), or why not. */
export const HandleReply = Schema.Struct({
  ok: Schema.Boolean,
  answer: Schema.optional(text(64 * 1024)),
  error: Schema.optional(text(4096))
})
export type HandleReply = typeof HandleReply.Type

/** Data of the frames the server pushes to a client during a conversation (`payload.type` "send" / "receive"). */
export const ConversationSend = Schema.Struct({ conversation: text(128), message: text(64 * 1024) })
export const ConversationReceive = Schema.Struct({ conversation: text(128), id: Schema.Int, prompt: text(64 * 1024) })
/** Data of the client's `conversation-answer` request. */
export const ConversationAnswer = Schema.Struct({ conversation: text(128), id: Schema.Int, answer: text(64 * 1024) })
