import { assert, describe, it } from "@effect/vitest"
import { Chunk, Effect, Either, FastCheck as fc, Option, Stream } from "effect"
import * as Codec from "../../src/protocol/MessageCodec.js"

const json = fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.parse(JSON.stringify(v)) as unknown)
const word = fc.stringMatching(/^[a-z][a-z0-9-]{0,15}$/)
const id = fc.oneof(fc.string({ minLength: 1, maxLength: 20 }), fc.integer())

const clientRequest: fc.Arbitrary<Codec.ClientRequest> = fc.record({
  header: fc.record({
    authentication: fc.record({ username: fc.string({ maxLength: 20 }), password: fc.string({ maxLength: 40 }) }),
    scope: fc.constantFrom("client" as const, "server" as const),
    id
  }, { requiredKeys: ["scope"] }),
  payload: fc.record({ type: word, data: json })
})

const handlerReply: fc.Arbitrary<Codec.HandlerReply> = fc.record({
  header: fc.record({
    status: fc.string({ maxLength: 10 }),
    command: fc.constantFrom("sendClients" as const, "sendServers" as const),
    commandData: fc.oneof(fc.constant(null), fc.constantFrom("requester" as const, "all" as const), fc.array(word, { maxLength: 3 })),
    id
  }, { requiredKeys: ["status", "command"] }),
  payload: fc.record({ type: word, data: json })
})

/** Splits bytes at random cut points. */
const chunked = (bytes: Uint8Array, cuts: ReadonlyArray<number>) => {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b)
  const out: Array<Uint8Array> = []
  let last = 0
  for (const p of points) {
    out.push(bytes.subarray(last, p))
    last = p
  }
  out.push(bytes.subarray(last))
  return out
}

const concat = (frames: ReadonlyArray<Uint8Array>) => Buffer.concat(frames.map((f) => Buffer.from(f)))

const decodeBytes = <A, I>(schema: import("effect").Schema.Schema<A, I>, chunks: ReadonlyArray<Uint8Array>, limits = Codec.defaultLimits) =>
  Stream.fromIterable(chunks).pipe(Codec.decodeAll(schema, limits), Stream.runCollect, Effect.map(Chunk.toReadonlyArray))

const frameOf = (value: unknown) => Codec.frame(new TextEncoder().encode(JSON.stringify(value)))

describe("MessageCodec", () => {
  it.effect.prop("round-trips any client request, in any chunking", [fc.array(clientRequest, { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 8 })], ([requests, cuts]) =>
    Effect.gen(function* () {
      const frames = yield* Effect.forEach(requests, Codec.encodeOne(Codec.ClientRequest))
      const decoded = yield* decodeBytes(Codec.ClientRequest, chunked(concat(frames), cuts))
      assert.deepStrictEqual(decoded.map(Either.getOrThrow), requests)
    }))

  it.effect.prop("round-trips any handler reply, in any chunking", [fc.array(handlerReply, { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 8 })], ([replies, cuts]) =>
    Effect.gen(function* () {
      const frames = yield* Effect.forEach(replies, Codec.encodeOne(Codec.HandlerReply))
      const decoded = yield* decodeBytes(Codec.HandlerReply, chunked(concat(frames), cuts))
      assert.deepStrictEqual(decoded.map(Either.getOrThrow), replies)
    }))

  it.effect.prop("garbage gives typed results or a typed FrameError, never a defect", [fc.uint8Array({ maxLength: 300 }), fc.array(fc.nat(), { maxLength: 5 })], ([bytes, cuts]) =>
    Effect.gen(function* () {
      const result = yield* decodeBytes(Codec.ClientRequest, chunked(bytes, cuts), { maxFrame: 200, maxDepth: 8 }).pipe(Effect.either)
      if (Either.isLeft(result)) assert.strictEqual(result.left._tag, "FrameError")
      else for (const item of result.right) if (Either.isLeft(item)) assert.strictEqual(item.left._tag, "MessageError")
    }))

  it.effect.prop("mutated valid frames never escape untyped", [clientRequest, fc.nat(), fc.integer({ min: 0, max: 255 })], ([request, at, byte]) =>
    Effect.gen(function* () {
      const bytes = Buffer.from(yield* Codec.encodeOne(Codec.ClientRequest)(request))
      bytes[at % bytes.length] = byte
      const result = yield* decodeBytes(Codec.ClientRequest, [bytes]).pipe(Effect.either)
      if (Either.isLeft(result)) assert.strictEqual(result.left._tag, "FrameError")
    }))

  it.effect("names the wrong fields", () =>
    Effect.gen(function* () {
      const [one] = yield* decodeBytes(Codec.ClientRequest, [
        frameOf({ header: { scope: "everyone", authentication: { username: 1, password: "x" } }, payload: { type: 3 } })
      ])
      assert(one !== undefined && Either.isLeft(one))
      const paths = one.left.issues.map((i) => i.path).sort()
      assert.deepStrictEqual(paths, ["header.authentication.username", "header.scope", "payload.type"])
      assert.include(one.left.message, "header.scope")
    }))

  it.effect("names a wrong handler command", () =>
    Effect.gen(function* () {
      const [one] = yield* decodeBytes(Codec.HandlerReply, [
        frameOf({ header: { status: "ok", command: "sendEveryone" }, payload: { type: "x", data: 1 } })
      ])
      assert(one !== undefined && Either.isLeft(one))
      assert.deepStrictEqual(one.left.issues.map((i) => i.path), ["header.command"])
    }))

  it.effect("several frames in one chunk, and a bad one between good ones", () =>
    Effect.gen(function* () {
      const good = { header: { scope: "client" as const }, payload: { type: "resolve", data: "a/b" } }
      const bytes = concat([frameOf(good), Codec.frame(new TextEncoder().encode("{nope")), frameOf(good)])
      const out = yield* decodeBytes(Codec.ClientRequest, [bytes])
      assert.deepStrictEqual(out.map((e) => Either.isRight(e)), [true, false, true])
      const bad = out[1]
      assert(bad !== undefined && Either.isLeft(bad))
      assert.strictEqual(bad.left.reason, "BadJson")
    }))

  it.effect("rejects a frame over the limit before buffering it", () =>
    Effect.gen(function* () {
      const header = Buffer.alloc(4)
      header.writeUInt32LE(10_000_000, 0)
      const result = yield* decodeBytes(Codec.ClientRequest, [header], { maxFrame: 1000, maxDepth: 8 }).pipe(Effect.flip)
      assert.strictEqual(result._tag, "FrameError")
      assert(result._tag === "FrameError" && result.reason === "TooLarge")
    }))

  it.effect("a truncated tail is an error, not silently dropped", () =>
    Effect.gen(function* () {
      const bytes = frameOf({ header: { scope: "client" }, payload: { type: "x", data: null } })
      const result = yield* decodeBytes(Codec.ClientRequest, [bytes.subarray(0, bytes.length - 3)]).pipe(Effect.flip)
      assert(result._tag === "FrameError" && result.reason === "Truncated")
    }))

  it.effect("rejects JSON nested deeper than the limit, without parsing it", () =>
    Effect.gen(function* () {
      const deep = "[".repeat(100_000) + "]".repeat(100_000)
      const [one] = yield* decodeBytes(Codec.ClientRequest, [Codec.frame(new TextEncoder().encode(deep))], { maxFrame: 1 << 20, maxDepth: 32 })
      assert(one !== undefined && Either.isLeft(one))
      assert.strictEqual(one.left.reason, "TooDeep")
      // brackets inside strings do not count
      assert.strictEqual(Codec.jsonDepth(new TextEncoder().encode(JSON.stringify({ a: "[[[[\\\"[[[" })), 3), 1)
    }))

  it.effect("invalid UTF-8 is a typed error", () =>
    Effect.gen(function* () {
      const [one] = yield* decodeBytes(Codec.ClientRequest, [Codec.frame(Uint8Array.from([0x22, 0xff, 0x22]))])
      assert(one !== undefined && Either.isLeft(one))
      assert.strictEqual(one.left.reason, "BadUtf8")
    }))

  it.prop("frameReader: any chunking gives the same frames, each whole", [fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 6 }), fc.array(fc.nat(), { maxLength: 10 })], ([bodies, cuts]) => {
    const reader = Codec.frameReader(64)
    const got: Array<Uint8Array> = []
    for (const part of chunked(concat(bodies.map(Codec.frame)), cuts)) {
      const cut = reader.push(part)
      assert.isUndefined(cut.error)
      got.push(...cut.frames)
    }
    assert.deepStrictEqual(got.map((b) => [...b]), bodies.map((b) => [...b]))
    assert.isTrue(Option.isNone(reader.end()))
  })

  it.effect("frameReader: frames before an oversized length are delivered with the error; a cut frame is Truncated", () =>
    Effect.sync(() => {
      const reader = Codec.frameReader(10)
      const huge = Buffer.alloc(4)
      huge.writeUInt32LE(11, 0)
      const first = reader.push(Buffer.concat([Buffer.from(Codec.frame(Uint8Array.of(1, 2))), huge]))
      assert.deepStrictEqual(first.frames.map((b) => [...b]), [[1, 2]])
      assert(first.error !== undefined && first.error.reason === "TooLarge" && first.error.length === 11)
      const next = reader.push(Uint8Array.of(0))
      assert(next.frames.length === 0 && next.error?.reason === "TooLarge")
      const cut = Codec.frameReader(10)
      assert.isUndefined(cut.push(Codec.frame(Uint8Array.of(1, 2, 3)).subarray(0, 5)).error)
      const end = cut.end()
      assert(Option.isSome(end) && end.value.reason === "Truncated" && end.value.length === 5)
    }))

  it.effect("refuses to encode a message over the frame limit", () =>
    Effect.gen(function* () {
      const error = yield* Codec.encodeOne(Codec.ServerResponse, { maxFrame: 50, maxDepth: 8 })({
        header: { status: "ok" }, payload: { type: "x", data: "y".repeat(100) }
      }).pipe(Effect.flip)
      assert.strictEqual(error.reason, "TooLarge")
    }))
})
