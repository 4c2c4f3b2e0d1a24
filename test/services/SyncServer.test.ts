import { assert, describe, it } from "@effect/vitest"
import { Chunk, Duration, Effect, Either, FastCheck, Fiber, Layer, Option, Stream, TestClock } from "effect"
import { encodeTag, encodeTree, frame, hashOf } from "../../src/domain/GitObject.js"
import type { ObjectHash } from "../../src/domain/ObjectHash.js"
import * as Codec from "../../src/protocol/SyncCodec.js"
import { randomBytes } from "node:crypto"
import { deflateSync } from "node:zlib"
import { getFramed, makeMemory, ObjectStore } from "../../src/services/ObjectStore.js"
import { ResolvePolicy } from "../../src/services/Policies.js"
import { Release } from "../../src/services/Registry.js"
import { inflateSend } from "../../src/services/SyncGraph.js"
import * as SyncClient from "../../src/services/SyncClient.js"
import { VerifiedRelease } from "../../src/services/Verifier.js"
import { deepFiles, deflating, makeClient, makeRelease, makeServer, pkg, rawSession, type Server, ver, wideFiles } from "./SyncFixtures.js"

const latin1 = (s: string) => new Uint8Array(Buffer.from(s, "latin1"))
const text = new TextEncoder()

/** A scripted client speaking raw frames to the server over an in-memory duplex. */
const rawClient = (server: Pick<Server, "serve">, versions: ReadonlyArray<number> = [0]) =>
  Effect.gen(function* () {
    const transport = yield* SyncClient.connectMemory(server.serve)({ host: "memory", port: 0 })
    const pull = yield* transport.input.pipe(Codec.decode(), Stream.toPull)
    const ready: Array<Codec.Frame> = []
    const next: Effect.Effect<Option.Option<Codec.Frame>> = Effect.suspend(() => {
      const f = ready.shift()
      if (f !== undefined) return Effect.succeed(Option.some(f))
      return pull.pipe(
        Effect.flatMap((chunk) => {
          ready.push(...chunk)
          return next
        }),
        Effect.catchAll(() => Effect.succeed(Option.none()))
      )
    })
    const write = (f: Codec.Frame) => Effect.orDie(Effect.flatMap(Codec.encode(f), transport.write))
    const writeRaw = (bytes: Uint8Array) => Effect.orDie(transport.write(bytes))
    const expect = Effect.map(next, Option.getOrThrow)
    yield* write(Codec.hello(versions))
    assert.deepStrictEqual(yield* expect, Codec.welcome(Math.max(...versions)))
    return { write, writeRaw, next, expect }
  })

const framedIn = (store: ObjectStore["Type"], hash: ObjectHash) =>
  getFramed(hash).pipe(Effect.provideService(ObjectStore, store), Effect.orDie)

const sealDirect = (server: Server, store: ObjectStore["Type"], name: string, version: string, tag: ObjectHash, tree: ObjectHash) =>
  Effect.gen(function* () {
    // Copy the graph (tag, tree, everything) and seal, as if it had been pushed.
    for (const h of yield* store.listObjects()) {
      const o = yield* Effect.orDie(store.get(h))
      yield* Effect.orDie(server.store.put(o.type, o.body))
    }
    yield* Effect.orDie(server.registry.seal(new VerifiedRelease({
      tagHash: tag, tree, name: pkg(name), version: ver(version), signer: "unsigned"
    })))
  })

describe("SyncServer: seed 004's transcript and the decisions in docs/protocol.md, byte for byte", () => {
  it.scoped("handshake and match, exactly as the seed shows them", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const client = yield* makeClient(server)
      const { tag, tree } = yield* makeRelease(client.store, "creationix/jack", "0.1.2", { "init.lua": "return {}\n" })
      yield* sealDirect(server, client.store, "creationix/jack", "0.1.2", tag, tree)
      const out = yield* rawSession(server, [
        "lit?0,1\n",
        "? match creationix/jack 0.1.2\n\n",
        "? match creationix/jack\n\n",
        "?match creationix/jack 0.2.x\n\n",
        "?match creationix/none\n\n"
      ])
      assert.strictEqual(out, `lit!0\n!0.1.2 ${tag}\n\n!0.1.2 ${tag}\n\n!\n\n!\n\n`)
      // upm's server speaks 0 and 2 (its extension): the highest common version wins; 1 is never chosen.
      assert.strictEqual(yield* rawSession(yield* makeServer(), ["lit?0,1,2\n"]), "lit!2\n")
      assert.strictEqual(yield* rawSession(yield* makeServer(), ["lit?0\n"]), "lit!0\n")
    }))

  it.scoped("list queries: one item per line; empty lists are an empty reply", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const client = yield* makeClient(server)
      const a = yield* makeRelease(client.store, "alice/one", "1.0.0", { a: "1" })
      yield* sealDirect(server, client.store, "alice/one", "1.0.0", a.tag, a.tree)
      const b = yield* makeRelease(client.store, "alice/one", "1.1.0-beta.1", { a: "2" })
      yield* sealDirect(server, client.store, "alice/one", "1.1.0-beta.1", b.tag, b.tree)
      const out = yield* rawSession(server, [
        "lit?0\n",
        "?versions alice/one\n\n",
        "?match alice/one\n\n",
        "?match alice/one >=1.1.0-beta.0\n\n",
        "?authors\n\n",
        "?packages alice\n\n",
        "?search ON\n\n",
        "?packages bob\n\n"
      ])
      assert.strictEqual(out, [
        "lit!0\n",
        `!1.0.0 ${a.tag}\n1.1.0-beta.1 ${b.tag}\n\n`,
        `!1.0.0 ${a.tag}\n\n`, // no range: the newest stable version
        `!1.1.0-beta.1 ${b.tag}\n\n`, // a range naming a prerelease of 1.1.0 matches it
        "!alice\n\n",
        "!alice/one\n\n",
        "!alice/one\n\n",
        "!\n\n"
      ].join(""))
    }))

  it.scoped("no common version: a clear refusal instead of lit!", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      assert.strictEqual(
        yield* rawSession(server, ["lit?5,6\n", "?authors\n\n"]),
        "!error no common protocol version: client speaks 5,6, server speaks 0,2\n\n"
      )
    }))

  it.scoped("errors end the session: unknown query, bad name, garbage, a frame before the handshake", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      assert.strictEqual(yield* rawSession(server, ["lit?0\n", "?frobnicate\n\n", "?authors\n\n"]),
        "lit!0\n!error unknown query \"frobnicate\"\n\n")
      assert.strictEqual(yield* rawSession(server, ["lit?0\n", "?match Alice/X\n\n"]),
        "lit!0\n!error bad package name: \"Alice/X\"\n\n")
      assert.strictEqual(yield* rawSession(server, ["lit?0\n", "GET / HTTP/1.1\r\n\r\n"]),
        "lit!0\n!error unknown frame type byte 0x47\n\n")
      assert.strictEqual(yield* rawSession(server, ["?authors\n\n"]),
        "!error expected the handshake \"lit?<versions>\", got Query\n\n")
      assert.strictEqual(yield* rawSession(server, ["lit?0\n", "?authors"]),
        "lit!0\n!error input ended inside a frame (8 bytes pending)\n\n")
    }))

  it.scoped("WANT is answered with SENDs of the framed objects, in order", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const hello = yield* Effect.orDie(server.store.put("blob", text.encode("Hello World\n")))
      const two = yield* Effect.orDie(server.store.put("blob", text.encode("2")))
      const out = yield* rawSession(server, [
        "lit?0\n",
        Either.getOrThrow(Codec.encodeEither(Codec.want([hello, two])))
      ])
      const framedHello = Buffer.from(frame("blob", text.encode("Hello World\n"))).toString("latin1")
      assert.strictEqual(out, `lit!0\n\xd4${framedHello}\xc8blob 1\x002`)
      assert.strictEqual(hello, "557db03de997c86a4a028e1ebd3a1ceb225be238")
    }))
})

describe("SyncServer: hostile pushes", () => {
  it.scoped("an unsolicited object (not a tag) is refused", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const blob = frame("blob", text.encode("x"))
      const out = yield* rawSession(server, ["lit?0\n", Either.getOrThrow(Codec.encodeEither(Codec.send(blob)))])
      assert.strictEqual(out, `lit!0\n!error unsolicited blob ${hashOf("blob", text.encode("x"))}: a push starts with a release tag\n\n`)
      assert.isFalse(yield* server.store.has(hashOf("blob", text.encode("x"))))
    }))

  it.scoped("an object that was not asked for, mid-push, is refused and nothing is sealed", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const c = yield* makeClient(server)
      const { tag, tree } = yield* makeRelease(c.store, "alice/pkg", "1.0.0", deepFiles(2))
      const raw = yield* rawClient(server)
      yield* raw.write(Codec.send(yield* framedIn(c.store, tag)))
      assert.deepStrictEqual(yield* raw.expect, Codec.want([tree]))
      const wrong = frame("blob", text.encode("not the tree"))
      yield* raw.write(Codec.send(wrong))
      assert.deepStrictEqual(yield* raw.expect, Codec.reply(`error unsolicited object ${hashOf("blob", text.encode("not the tree"))}: not asked for`))
      assert.isTrue(Option.isNone(yield* raw.next))
      assert.isTrue(Option.isNone(yield* server.registry.match(pkg("alice/pkg"), undefined)))
      assert.isFalse(yield* server.store.has(hashOf("blob", text.encode("not the tree"))))
    }))

  it.scoped("an object whose parent announced another type is refused", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const c = yield* makeClient(server)
      const inner = yield* Effect.orDie(c.store.put("tree", encodeTree([])))
      // The root tree says "file" is a blob, but the hash is a tree's.
      const root = yield* Effect.orDie(c.store.put("tree", encodeTree([{ mode: "100644", name: "file", hash: inner }])))
      const tag = yield* Effect.orDie(c.store.put("tag", encodeTag({
        object: root, type: "tree", tag: "alice/pkg/v1.0.0", tagger: undefined, message: "x\n", signature: undefined
      })))
      const raw = yield* rawClient(server)
      yield* raw.write(Codec.send(yield* framedIn(c.store, tag)))
      assert.deepStrictEqual(yield* raw.expect, Codec.want([root]))
      yield* raw.write(Codec.send(yield* framedIn(c.store, root)))
      assert.deepStrictEqual(yield* raw.expect, Codec.want([inner]))
      yield* raw.write(Codec.send(yield* framedIn(c.store, inner)))
      assert.deepStrictEqual(yield* raw.expect, Codec.reply(`error object ${inner} is a tree, its parent says blob`))
    }))

  it.scoped("a second tag during a push is unsolicited", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const c = yield* makeClient(server)
      const one = yield* makeRelease(c.store, "alice/pkg", "1.0.0", deepFiles(2))
      const two = yield* makeRelease(c.store, "alice/pkg", "2.0.0", deepFiles(2, 2, "x"))
      const raw = yield* rawClient(server)
      yield* raw.write(Codec.send(yield* framedIn(c.store, one.tag)))
      assert.strictEqual((yield* raw.expect)._tag, "Want")
      yield* raw.write(Codec.send(yield* framedIn(c.store, two.tag)))
      assert.deepStrictEqual(yield* raw.expect, Codec.reply(`error unsolicited object ${two.tag}: not asked for`))
    }))

  it.scoped("an oversized SEND is refused from its header; an oversized query too", () =>
    Effect.gen(function* () {
      const server = yield* makeServer({ limits: { maxObjectSize: 1000, maxTextSize: 100 } })
      assert.strictEqual(
        yield* rawSession(server, [latin1("lit?0\n"), Codec.sendHeader(2000)]),
        "lit!0\n!error SEND of 2000 bytes exceeds the limit of 1000\n\n"
      )
      assert.strictEqual(
        yield* rawSession(server, ["lit?0\n", "?" + "x".repeat(200)]),
        "lit!0\n!error QUERY longer than 100 bytes\n\n"
      )
    }))

  it.scoped("a bad tag name is refused before any object is asked for", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const c = yield* makeClient(server)
      const { tag } = yield* makeRelease(c.store, "alice/pkg", "1.0.0", deepFiles(1), "Alice/pkg/1.0")
      const out = yield* rawSession(server, ["lit?0\n", Either.getOrThrow(Codec.encodeEither(Codec.send(yield* framedIn(c.store, tag))))])
      assert.match(out, /^lit!0\n!error tag [0-9a-f]{40} refused \(BadTagName\): expected owner\/name\/v<version>\n\n$/)
    }))

  it.scoped("a version already sealed with other content is refused at once", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const c = yield* makeClient(server)
      const first = yield* makeRelease(c.store, "alice/pkg", "1.0.0", deepFiles(2))
      yield* (yield* c.connect).push(first.tag)
      const other = yield* makeRelease(c.store, "alice/pkg", "1.0.0", deepFiles(2, 2, "changed"))
      const out = yield* rawSession(server, ["lit?0\n", Either.getOrThrow(Codec.encodeEither(Codec.send(yield* framedIn(c.store, other.tag))))])
      assert.strictEqual(out, `lit!0\n!error alice/pkg/v1.0.0 is already published as ${first.tag}\n\n`)
      // The same content again is simply confirmed.
      const again = yield* rawSession(server, ["lit?0\n", Either.getOrThrow(Codec.encodeEither(Codec.send(yield* framedIn(c.store, first.tag))))])
      assert.strictEqual(again, `lit!0\n!conf ${first.tag}\n\n`)
    }))

  it.scoped("push objects cap", () =>
    Effect.gen(function* () {
      const server = yield* makeServer({ limits: { maxPushObjects: 20 } })
      const c = yield* makeClient(server)
      const { tag } = yield* makeRelease(c.store, "alice/pkg", "1.0.0", wideFiles(30))
      const err = yield* (yield* c.connect).push(tag).pipe(Effect.flip)
      assert.strictEqual(err.detail, "push exceeds 20 objects")
    }))

  it.scoped("WANT batches outstanding stay within maxWantBatches", () =>
    Effect.gen(function* () {
      const server = yield* makeServer({ limits: { maxWantBatches: 2 } })
      const c = yield* makeClient(server)
      const { tag, tree } = yield* makeRelease(c.store, "alice/pkg", "1.0.0", { lib: wideFiles(64 * 5).lib as Record<string, string> })
      const raw = yield* rawClient(server)
      yield* raw.write(Codec.send(yield* framedIn(c.store, tag)))
      assert.deepStrictEqual(yield* raw.expect, Codec.want([tree]))
      yield* raw.write(Codec.send(yield* framedIn(c.store, tree)))
      const lib = yield* raw.expect
      assert.strictEqual(lib._tag, "Want")
      if (lib._tag !== "Want") return
      yield* raw.write(Codec.send(yield* framedIn(c.store, lib.hashes[0]!)))
      const w1 = yield* raw.expect
      const w2 = yield* raw.expect
      assert.strictEqual(w1._tag === "Want" && w2._tag === "Want" ? w1.hashes.length + w2.hashes.length : 0, 128)
      // Nothing more until a batch completes: the next frame only comes after answering the first batch.
      if (w1._tag !== "Want") return
      for (const h of w1.hashes) yield* raw.write(Codec.send(yield* framedIn(c.store, h)))
      const w3 = yield* raw.expect
      assert.strictEqual(w3._tag === "Want" ? w3.hashes.length : 0, 64)
    }))
})

describe("SyncServer: timeouts on the TestClock", () => {
  const collect = (server: Server, input: Stream.Stream<Uint8Array>) =>
    server.serve(input, { id: 1, remoteAddress: "memory" }).pipe(
      Stream.runCollect,
      Effect.map((chunks) => Buffer.concat(Chunk.toArray(chunks)).toString("latin1")),
      Effect.orDie
    )

  it.scoped("handshake timeout", () =>
    Effect.gen(function* () {
      const server = yield* makeServer({ limits: { handshakeTimeout: Duration.seconds(5) } })
      const fiber = yield* Effect.fork(collect(server, Stream.make(latin1("lit?0")).pipe(Stream.concat(Stream.never))))
      yield* TestClock.adjust("4 seconds")
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* Fiber.join(fiber), "!error handshake timeout: nothing received in time\n\n")
    }))

  it.scoped("idle timeout between frames", () =>
    Effect.gen(function* () {
      const server = yield* makeServer({ limits: { idleTimeout: Duration.seconds(30) } })
      const fiber = yield* Effect.fork(collect(server, Stream.make(latin1("lit?0\n?authors\n\n")).pipe(Stream.concat(Stream.never))))
      yield* TestClock.adjust("29 seconds")
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* Fiber.join(fiber), "lit!0\n!\n\n!error idle timeout: nothing received in time\n\n")
    }))

  it.scoped("per-message timeout: a frame trickling in too slowly", () =>
    Effect.gen(function* () {
      const server = yield* makeServer({ limits: { messageTimeout: Duration.seconds(10), idleTimeout: Duration.seconds(60) } })
      // Part of a query, more of it 8 seconds later: each wait is shorter than the idle timeout, the frame is not.
      const bytes = Stream.make(latin1("lit?0\n"), latin1("?aut")).pipe(
        Stream.concat(Stream.fromEffect(Effect.as(Effect.sleep("8 seconds"), latin1("ho")))),
        Stream.concat(Stream.never)
      )
      const fiber = yield* Effect.fork(collect(server, bytes))
      yield* TestClock.adjust("8 seconds")
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust("2 seconds")
      assert.strictEqual(yield* Fiber.join(fiber), "lit!0\n!error message timeout: nothing received in time\n\n")
    }))
})

describe("SyncServer: protocol v2 frames, byte for byte", () => {
  it.scoped("push: tag → !need <tree> have <previous tag>; streamed objects must hang below what was needed", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const c = yield* makeClient(server)
      const first = yield* makeRelease(c.store, "alice/pkg", "1.0.0", deepFiles(1))
      yield* (yield* c.connect).push(first.tag)
      const next = yield* makeRelease(c.store, "alice/pkg", "1.0.1", deepFiles(1, 2, "!"))
      const raw = yield* rawClient(server, [0, 2])
      yield* raw.write(Codec.send(yield* framedIn(c.store, next.tag)))
      assert.deepStrictEqual(yield* raw.expect, Codec.reply(`need ${next.tree} have ${first.tag}`))
      yield* raw.write(Codec.send(yield* framedIn(c.store, next.tree)))
      const stray = frame("blob", text.encode("stray"))
      yield* raw.write(Codec.send(stray))
      assert.deepStrictEqual(
        yield* raw.expect,
        Codec.reply(`error unsolicited object ${hashOf("blob", text.encode("stray"))}: not below what the server needs`)
      )
    }))

  it.scoped("push: ?verify completes what the stream left out with WANTs, then !conf", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const c = yield* makeClient(server)
      const { tag, tree } = yield* makeRelease(c.store, "alice/pkg", "1.0.0", { "a.txt": "a\n" })
      const blob = hashOf("blob", text.encode("a\n"))
      const raw = yield* rawClient(server, [0, 2])
      yield* raw.write(Codec.send(yield* framedIn(c.store, tag)))
      assert.deepStrictEqual(yield* raw.expect, Codec.reply(`need ${tree}`))
      yield* raw.write(Codec.send(yield* framedIn(c.store, tree)))
      yield* raw.write(Codec.query(`verify ${tag}`))
      assert.deepStrictEqual(yield* raw.expect, Codec.want([blob]))
      yield* raw.write(Codec.send(yield* framedIn(c.store, blob)))
      assert.deepStrictEqual(yield* raw.expect, Codec.reply(`conf ${tag}`))
    }))

  it.scoped("fetch: the graph parent first, minus what the haves reach, then !fetched <n>; v0 has no fetch", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const c = yield* makeClient(server)
      const one = yield* makeRelease(c.store, "alice/pkg", "1.0.0", { "a.txt": "a\n", "b.txt": "b\n" })
      yield* (yield* c.connect).push(one.tag)
      const two = yield* makeRelease(c.store, "alice/pkg", "1.0.1", { "a.txt": "a\n", "b.txt": "B\n" })
      yield* (yield* c.connect).push(two.tag)
      const send = (h: ObjectHash) => Effect.map(framedIn(c.store, h), (f) => Buffer.from(Either.getOrThrow(Codec.encodeEither(Codec.send(f)))).toString("latin1"))
      const out = yield* rawSession(server, ["lit?2\n", `?fetch ${two.tag} have ${one.tag}\n\n`])
      assert.strictEqual(out, `lit!2\n${yield* send(two.tag)}${yield* send(two.tree)}${yield* send(hashOf("blob", text.encode("B\n")))}!fetched 3\n\n`)
      assert.strictEqual(yield* rawSession(server, ["lit?0\n", `?fetch ${two.tag}\n\n`]), "lit!0\n!error unknown query \"fetch\"\n\n")
    }))
})

describe("SyncServer: a client that stops reading", () => {
  it.scoped("stalls the output, then the session ends after the idle timeout", () =>
    Effect.gen(function* () {
      const server = yield* makeServer({ limits: { idleTimeout: Duration.seconds(30) } })
      const blob = yield* Effect.orDie(server.store.put("blob", text.encode("x".repeat(1000))))
      const wants = Either.getOrThrow(Codec.encodeEither(Codec.want(Array.from({ length: 64 }, () => blob))))
      const input = Stream.make(latin1("lit?0\n")).pipe(
        Stream.concat(Stream.make(...Array.from({ length: 10 }, () => wants))),
        Stream.concat(Stream.never)
      )
      const pull = yield* server.serve(input, { id: 1, remoteAddress: "memory" }).pipe(Stream.toPull)
      const first = yield* pull
      assert.strictEqual(Buffer.from(Chunk.toReadonlyArray(first)[0]!).toString("latin1").slice(0, 6), "lit!0\n")
      // Stop reading: the server fills its output buffer and waits. After 30 s (and 30 s more for the error
      // reply nobody reads), the session is over and the output ends.
      yield* TestClock.adjust("30 seconds")
      yield* TestClock.adjust("30 seconds")
      let ended = false
      let bytes = 0
      for (let i = 0; !ended && i < 10_000; i++) {
        const next = yield* pull.pipe(Effect.either)
        if (Either.isLeft(next)) ended = true
        else for (const c of next.right) bytes += c.length
      }
      assert.isTrue(ended)
      // Far fewer than the 640 objects asked for were produced (each SEND is ~1 kB).
      assert.isBelow(bytes, 200 * 1012)
    }))
})

describe("SyncServer: random input", () => {
  it.effect.prop(
    "any bytes after the handshake end the session cleanly: its output is frames, the last an error or a reply",
    [FastCheck.array(FastCheck.oneof(
      FastCheck.uint8Array({ maxLength: 64 }),
      FastCheck.constantFrom(
        latin1("?authors\n\n"), latin1("?match a/b\n\n"), latin1("?versions a/b\n\n"), latin1("?fetch 00\n\n"),
        latin1("?verify 0000000000000000000000000000000000000000\n\n"), new Uint8Array([0x80, ...new Uint8Array(20)]),
        new Uint8Array([0xc5, 0x62, 0x6c, 0x6f, 0x62, 0x20]), latin1("lit?0\n")
      )
    ), { maxLength: 8 })],
    ([chunks]) =>
      Effect.scoped(Effect.gen(function* () {
        const server = yield* makeServer()
        const out = yield* rawSession(server, [latin1("lit?0,2\n"), ...chunks])
        const frames = Codec.decodeAll(latin1(out), { maxSendSize: 1 << 20, maxTextSize: 1 << 16 })
        assert.isTrue(Either.isRight(frames))
        if (Either.isRight(frames)) {
          assert.deepStrictEqual(frames.right[0], Codec.welcome(2))
          const errors = frames.right.filter((f) => f._tag === "Reply" && f.text.startsWith("error "))
          assert.isAtMost(errors.length, 1)
          if (errors.length === 1) assert.strictEqual(frames.right.at(-1), errors[0])
        }
      })),
    { fastCheck: { numRuns: 60 } }
  )
})

describe("SyncServer: protocol v3, deflated SENDs", () => {
  const deflated = (bytes: Uint8Array) => new Uint8Array(deflateSync(bytes, { level: 1 }))
  const sendText = (bytes: Uint8Array) => Buffer.from(Either.getOrThrow(Codec.encodeEither(Codec.send(bytes)))).toString("latin1")

  it.scoped("offered only by a store that keeps objects deflated; fetch sends the stored zlib bytes", () =>
    Effect.gen(function* () {
      // A memory store has no deflated bytes to serve: version 2 is the highest it speaks.
      assert.strictEqual(yield* rawSession(yield* makeServer(), ["lit?0,2,3\n"]), "lit!2\n")
      const server = yield* makeServer({ store: deflating(yield* makeMemory) })
      assert.strictEqual(yield* rawSession(server, ["lit?0,1\n"]), "lit!0\n")
      const c = yield* makeClient(server, { versions: [0, 2, 3] }, true)
      const { tag, tree } = yield* makeRelease(c.store, "alice/pkg", "1.0.0", { "a.txt": "Hello World\n" })
      const session = yield* c.connect
      assert.strictEqual(session.version, 3)
      assert.strictEqual((yield* session.push(tag)).status, "Sealed")
      const blob = hashOf("blob", text.encode("Hello World\n"))
      const out = yield* rawSession(server, ["lit?0,2,3\n", `?fetch ${tag}\n\n`])
      const expected = [tag, tree, blob].map((h) => Effect.map(framedIn(c.store, h), (f) => sendText(deflated(f))))
      assert.strictEqual(out, `lit!3\n${(yield* Effect.all(expected)).join("")}!fetched 3\n\n`)
      // The blob's SEND: `dc` (a SEND of 28 bytes), then zlib's 78 01 header and the deflated "blob 12\0Hello World\n".
      const blobSend = Buffer.from(Either.getOrThrow(Codec.encodeEither(Codec.send(deflated(frame("blob", text.encode("Hello World\n")))))))
      assert.strictEqual(blobSend.toString("hex"), "dc78014bcac94f52303462f048cdc9c95708cf2fca49e1020041d10649") // docs/protocol.md
      // A v3 pull into another deflating store: complete, and the objects are the same.
      const other = yield* makeClient(server, { versions: [0, 2, 3] }, true)
      const pulled = yield* (yield* other.connect).pull(tag)
      assert.strictEqual(pulled.objects, 3)
      assert.deepStrictEqual(yield* framedIn(other.store, blob), frame("blob", text.encode("Hello World\n")))
    }))

  it.scoped("a SEND that inflates past the ratio or size limit, has garbage after its zlib stream, or is not zlib ends the session", () =>
    Effect.gen(function* () {
      const server = yield* makeServer({ store: deflating(yield* makeMemory), limits: { maxInflateRatio: 50, maxObjectSize: 64 * 1024 } })
      const bomb = deflated(frame("blob", new Uint8Array(60 * 1024)))
      const run = (payload: Uint8Array) =>
        Effect.map(rawSession(server, ["lit?3\n", Either.getOrThrow(Codec.encodeEither(Codec.send(payload)))]), (out) => out)
      assert.strictEqual(
        yield* run(bomb),
        `lit!3\n!error deflated SEND of ${bomb.length} bytes inflates past ${bomb.length * 50} bytes (inflate ratio limit 50)\n\n`
      )
      // 100 KiB of 16 letters: deflates to about half (under the frame limit), inflates past the object limit.
      const big = deflated(frame("blob", new Uint8Array(randomBytes(100 * 1024)).map((b) => 97 + (b & 15))))
      assert.strictEqual(yield* run(big), "lit!3\n!error deflated SEND inflates past the object size limit of 65536 bytes\n\n")
      const ok = deflated(frame("blob", text.encode("x")))
      const garbage = new Uint8Array([...ok, 1, 2])
      assert.strictEqual(yield* run(garbage), "lit!3\n!error deflated SEND: 2 bytes of garbage after the zlib stream\n\n")
      assert.match(yield* run(frame("blob", text.encode("x"))), /^lit!3\n!error deflated SEND: does not inflate: .*\n\n$/)
      // The same limits hold on the client side (SyncClient uses the same check).
      const check = inflateSend(bomb, { maxObjectSize: 1024 * 1024, maxInflateRatio: 10 })
      assert.isTrue(Either.isLeft(check) && check.left.reason === "Limit")
      assert.deepStrictEqual(inflateSend(ok, { maxObjectSize: 10, maxInflateRatio: 1032 }), Either.right(frame("blob", text.encode("x"))))
    }))
})

describe("SyncServer: match asks the ResolvePolicy", () => {
  it.scoped("a maintainer's resolve decision is the match answer; without a policy the registry's newest match", () =>
    Effect.gen(function* () {
      const asked: Array<string> = []
      // A policy that holds everyone at 1.0.0 (as a `resolve` handler could), and knows nothing of other names.
      let pinned: ObjectHash | undefined
      const resolve = Layer.succeed(ResolvePolicy, ResolvePolicy.of({
        resolve: (identifier) =>
          Effect.sync(() => {
            asked.push(identifier)
            return identifier.startsWith("alice/one") && pinned !== undefined
              ? Option.some(new Release({ name: pkg("alice/one"), version: ver("1.0.0"), hash: pinned }))
              : Option.none()
          })
      }))
      const server = yield* makeServer({ resolve })
      const c = yield* makeClient(server)
      const one = yield* makeRelease(c.store, "alice/one", "1.0.0", { "a.txt": "1\n" })
      const two = yield* makeRelease(c.store, "alice/one", "1.1.0", { "a.txt": "2\n" })
      yield* sealDirect(server, c.store, "alice/one", "1.0.0", one.tag, one.tree)
      yield* sealDirect(server, c.store, "alice/one", "1.1.0", two.tag, two.tree)
      pinned = one.tag
      const out = yield* rawSession(server, ["lit?0\n", "?match alice/one\n\n", "?match alice/one ^1.0\n\n", "?match alice/two\n\n"])
      assert.strictEqual(out, `lit!0\n!1.0.0 ${one.tag}\n\n!1.0.0 ${one.tag}\n\n!\n\n`)
      assert.deepStrictEqual(asked, ["alice/one", "alice/one@^1.0", "alice/two"])
      // The same server without the policy: the registry's newest.
      const plain = yield* makeServer({ store: server.store })
      assert.strictEqual(yield* rawSession(plain, ["lit?0\n", "?match alice/one\n\n"]), `lit!0\n!1.1.0 ${two.tag}\n\n`)
    }))
})
