import { assert, describe, it } from "@effect/vitest"
import { Chunk, Effect, Either, FastCheck as fc, Stream } from "effect"
import { ObjectHash } from "../../src/domain/ObjectHash.js"
import {
  type CodecLimits, decode, decodeAll, encodeEither, type Frame, hello, query, reply, send, sendHeader,
  SyncCodecError, want, welcome
} from "../../src/protocol/SyncCodec.js"

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")
const bytes = (s: string) => new Uint8Array(Buffer.from(s, "latin1"))
const enc = (f: Frame) => Either.getOrThrow(encodeEither(f))
const limits: CodecLimits = { maxSendSize: 1 << 20, maxTextSize: 4096 }

// ---------------------------------------------------------------------------------------------
// Arbitraries

const hashArb = fc.uint8Array({ minLength: 20, maxLength: 20 }).map((b) => ObjectHash.make(hex(b)))
const textArb = fc.fullUnicodeString({ maxLength: 200 }).filter((s) => !s.includes("\n\n") && !s.endsWith("\n"))
const versionArb = fc.integer({ min: 0, max: 9999 })
const sendArb = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 300 }) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 20_000 }).map((n) => new Uint8Array(n).fill(n & 0xff)) }
)
const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  fc.array(versionArb, { minLength: 1, maxLength: 4 }).map(hello),
  versionArb.map(welcome),
  fc.array(hashArb, { minLength: 1, maxLength: 64 }).map(want),
  sendArb.map(send),
  textArb.map(query),
  textArb.map(reply)
)
/** Cut points for splitting a byte array into chunks. */
const splitAt = (data: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = [...new Set(cuts.map((c) => c % (data.length + 1)))].sort((a, b) => a - b)
  const out: Array<Uint8Array> = []
  let at = 0
  for (const p of points) {
    out.push(data.subarray(at, p))
    at = p
  }
  out.push(data.subarray(at))
  return out
}
const concat = (parts: ReadonlyArray<Uint8Array>) => new Uint8Array(Buffer.concat(parts))

const normalize = (f: Frame) => (f._tag === "Send" ? { ...f, data: hex(f.data) } : f)

describe("SyncCodec: seed 004's examples, byte for byte", () => {
  it("handshake lines", () => {
    assert.strictEqual(hex(enc(hello([0, 1]))), hex(bytes("lit?0,1\n")))
    assert.strictEqual(hex(enc(welcome(0))), hex(bytes("lit!0\n")))
    assert.deepStrictEqual(decodeAll(bytes("lit?0,1\nlit!0\n")), Either.right([hello([0, 1]), welcome(0)]))
  })

  it("WANT of 9012ffdb…", () => {
    const h = ObjectHash.make("9012ffdba8018cf1f7a9b77a3145a459d40fa125")
    assert.strictEqual(hex(enc(want([h]))), "80" + "9012ffdba8018cf1f7a9b77a3145a459d40fa125")
    assert.deepStrictEqual(decodeAll(enc(want([h]))), Either.right([want([h])]))
    const many = Array.from({ length: 64 }, (_, i) => ObjectHash.make(i.toString(16).padStart(40, "0")))
    assert.strictEqual(enc(want(many))[0], 0xbf)
    assert.isTrue(Either.isLeft(encodeEither(want([]))))
    assert.isTrue(Either.isLeft(encodeEither(want([...many, h]))))
  })

  it("SEND of \"Hello World\\n\" is CC + the bytes", () => {
    assert.strictEqual(hex(enc(send(bytes("Hello World\n")))), "cc48656c6c6f20576f726c640a")
  })

  it("SEND sizes go most significant group first (lit's encoder)", () => {
    assert.strictEqual(hex(sendHeader(1000)), "e768")
    assert.strictEqual(hex(sendHeader(10000)), "e0ce10")
    assert.strictEqual(hex(sendHeader(0)), "c0")
    assert.strictEqual(hex(sendHeader(31)), "df")
    assert.strictEqual(hex(sendHeader(32)), "e020")
    const data = bytes("0123456789".repeat(1000))
    const decoded = decodeAll(concat([sendHeader(10000), data]), limits)
    assert.strictEqual(Either.getOrThrow(decoded).length, 1)
  })

  it("the match transcript: the query's whitespace is the session's to trim, replies are exact", () => {
    assert.deepStrictEqual(
      decodeAll(bytes("? match creationix/jack 0.1.2\n\n")),
      Either.right([query(" match creationix/jack 0.1.2")])
    )
    assert.strictEqual(
      Buffer.from(enc(reply("0.1.2 59d6ef82e7bbb7b2d585c3680d3207c3a1a97be4"))).toString("latin1"),
      "!0.1.2 59d6ef82e7bbb7b2d585c3680d3207c3a1a97be4\n\n"
    )
    assert.strictEqual(Buffer.from(enc(reply(""))).toString("latin1"), "!\n\n")
    assert.strictEqual(Buffer.from(enc(query("match creationix/jack"))).toString("latin1"), "?match creationix/jack\n\n")
  })

  it("multi-line replies keep their single newlines; texts that would break framing are refused", () => {
    assert.deepStrictEqual(decodeAll(bytes("!a/b\nc/d\n\n")), Either.right([reply("a/b\nc/d")]))
    assert.isTrue(Either.isLeft(encodeEither(reply("a\n\nb"))))
    assert.isTrue(Either.isLeft(encodeEither(reply("a\n"))))
  })
})

describe("SyncCodec: hostile and broken input", () => {
  const reason = (input: Uint8Array, l: CodecLimits = limits) =>
    Either.match(decodeAll(input, l), { onLeft: (e) => e.reason, onRight: () => "ok" })

  it("checks sizes before buffering", () => {
    // Header announces 2^40 bytes; nothing follows. Refused at once, not after waiting for the bytes.
    assert.strictEqual(reason(new Uint8Array([0xe0, 0xa0, 0x80, 0x80, 0x80, 0x80, 0x00])), "TooLarge")
    assert.strictEqual(reason(concat([sendHeader(limits.maxSendSize + 1)])), "TooLarge")
    assert.strictEqual(reason(concat([bytes("?"), bytes("x".repeat(5000))])), "TooLarge")
    assert.strictEqual(reason(bytes("lit?" + "0,".repeat(40))), "BadHandshake")
  })

  it("names what is wrong", () => {
    assert.strictEqual(reason(bytes("GET / HTTP/1.1\r\n")), "UnknownFrame")
    assert.strictEqual(reason(bytes("lit?x\n")), "BadHandshake")
    assert.strictEqual(reason(bytes("LIT?0,1\n")), "UnknownFrame")
    assert.strictEqual(reason(bytes("lot")), "BadHandshake")
    assert.strictEqual(reason(new Uint8Array([0x3f, 0xff, 0xfe, 0x0a, 0x0a])), "BadText")
    assert.strictEqual(reason(new Uint8Array([0x80, 1, 2, 3])), "Truncated")
    assert.strictEqual(reason(new Uint8Array([0xcc, 1, 2, 3])), "Truncated")
    assert.strictEqual(reason(bytes("?match")), "Truncated")
    assert.strictEqual(reason(new Uint8Array([0xe0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 1])), "BadSize")
  })

  it.effect("a stream error is a typed SyncCodecError", () =>
    Effect.gen(function* () {
      const result = yield* Stream.make(bytes("?ok\n\n"), bytes("\x01")).pipe(decode(limits), Stream.runCollect, Effect.either)
      assert.isTrue(Either.isLeft(result))
      if (Either.isLeft(result)) assert.instanceOf(result.left, SyncCodecError)
    }))
})

describe("SyncCodec: properties", () => {
  it.prop("encode → decode is the identity", [fc.array(frameArb, { maxLength: 8 })], ([frames]) => {
    const decoded = Either.getOrThrow(decodeAll(concat(frames.map(enc)), { maxSendSize: 1 << 20, maxTextSize: 4096 }))
    assert.deepStrictEqual(decoded.map(normalize), frames.map(normalize))
  }, { fastCheck: { numRuns: 150 } })

  it.effect.prop(
    "any split into chunks decodes to the same frames",
    [fc.array(frameArb, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 12 })],
    ([frames, cuts]) =>
      Effect.gen(function* () {
        const whole = concat(frames.map(enc))
        const chunks = splitAt(whole, cuts)
        const decoded = yield* Stream.fromIterable(chunks).pipe(decode(limits), Stream.runCollect)
        assert.deepStrictEqual(Chunk.toArray(decoded).map(normalize), frames.map(normalize))
      }),
    { fastCheck: { numRuns: 150 } }
  )

  it.effect.prop(
    "random and mutated bytes give frames or a typed error, never a defect or a hang",
    [
      fc.oneof(
        fc.uint8Array({ maxLength: 400 }),
        fc.tuple(fc.array(frameArb, { minLength: 1, maxLength: 4 }), fc.array(fc.tuple(fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 6 }))
          .map(([frames, edits]) => {
            const b = concat(frames.map(enc))
            for (const [at, v] of edits) if (b.length > 0) b[at % b.length] = v
            return b
          })
      ),
      fc.array(fc.nat(), { maxLength: 6 })
    ],
    ([input, cuts]) =>
      Effect.gen(function* () {
        const result = yield* Stream.fromIterable(splitAt(input, cuts)).pipe(
          decode({ maxSendSize: 1 << 16, maxTextSize: 1024 }),
          Stream.runCollect,
          Effect.either
        )
        if (Either.isLeft(result)) assert.instanceOf(result.left, SyncCodecError)
      }),
    { fastCheck: { numRuns: 150 } }
  )
})
