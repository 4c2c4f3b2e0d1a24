/**
 * Real loopback tests of the Listener (port 0), with small fake protocols so that each test is about the
 * listener: sniffing, limits, the first-bytes deadline, hostile input, graceful shutdown.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Fiber, Layer, Metric, Option, Stream } from "effect"
import { ConnectionError, MessageProtocol, SyncProtocol } from "../../src/services/Connection.js"
import * as Listener from "../../src/services/Listener.js"
import * as Metrics from "../../src/services/Metrics.js"
import { connect, exchange } from "../e2e/tcp.js"

const bytes = (s: string) => new TextEncoder().encode(s)

/** Fake protocols: each tags its output and echoes its whole input (so the sniffed bytes must be there). */
const echo = (tag: string) => (input: Stream.Stream<Uint8Array, ConnectionError>) =>
  Stream.concat(Stream.make(bytes(tag)), input)

const fakeSync = Layer.succeed(SyncProtocol, SyncProtocol.of({ serve: echo("sync:") }))
const fakeMessage = Layer.succeed(MessageProtocol, MessageProtocol.of({ serve: echo("message:") }))

const options = (overrides: Partial<Listener.ListenerOptions> = {}): Listener.ListenerOptions => ({
  ...Listener.defaultOptions,
  port: 0,
  ...overrides
})

/**
 * Runs a listener in its own fiber, the way `upm serve` runs the server under `runMain`: `stop` interrupts that
 * fiber, as SIGINT/SIGTERM do, and returns once its scope has closed.
 */
const start = (
  opts: Partial<Listener.ListenerOptions> = {},
  protocols: Layer.Layer<SyncProtocol | MessageProtocol> = Layer.merge(fakeSync, fakeMessage)
) =>
  Effect.gen(function* () {
    const ready = yield* Deferred.make<Listener.Listener["Type"], Listener.ListenerError>()
    const fiber = yield* Effect.forkDaemon(Effect.scoped(Effect.gen(function* () {
      const context = yield* Layer.build(Listener.layer(options(opts)).pipe(Layer.provide(protocols)))
      yield* Deferred.succeed(ready, Context.get(context, Listener.Listener))
      return yield* Effect.never
    })).pipe(Effect.onError((cause) => Deferred.failCause(ready, cause))))
    const stop = Fiber.interrupt(fiber)
    yield* Effect.addFinalizer(() => stop)
    return { listener: yield* Deferred.await(ready), stop }
  })

const until = (listener: Listener.Listener["Type"], predicate: (s: Listener.ListenerState) => boolean) =>
  listener.changes.pipe(Stream.filter(predicate), Stream.runHead, Effect.map(Option.getOrThrow))

describe("Listener", () => {
  it.live("sniffs lit? to the sync protocol, with the sniffed bytes re-prepended, and counts it", () =>
    Effect.gen(function* () {
      const { listener } = yield* start()
      const syncTotal = Metric.tagged(Metrics.connectionsTotal, "protocol", "sync")
      const before = (yield* Metric.value(syncTotal)).count
      const got = yield* exchange(listener.address.port, "lit?0,1\nmore bytes")
      assert.strictEqual(got.toString(), "sync:lit?0,1\nmore bytes")
      assert.strictEqual((yield* Metric.value(syncTotal)).count, before + 1)
      assert.strictEqual(listener.address.host, "127.0.0.1")
      assert.isAbove(listener.address.port, 0)
    }).pipe(Effect.scoped))

  it.live("sends anything else to the message protocol, even when the first bytes arrive one at a time", () =>
    Effect.gen(function* () {
      const { listener } = yield* start()
      const frame = Buffer.concat([Buffer.from([5, 0, 0, 0]), Buffer.from("{\"a\"}")])
      assert.strictEqual((yield* exchange(listener.address.port, frame)).subarray(8).toString("latin1"), frame.toString("latin1"))
      // "lit" then "!" one byte at a time: not the sync magic
      const got = yield* Effect.scoped(Effect.gen(function* () {
        const c = yield* connect(listener.address.port)
        for (const b of ["l", "i", "t", "!", "x"]) {
          yield* c.write(b)
          yield* Effect.yieldNow()
        }
        yield* c.end
        return yield* c.closed
      }))
      assert.strictEqual(got.toString(), "message:lit!x")
      // "lit?" split over writes still goes to sync
      const split = yield* Effect.scoped(Effect.gen(function* () {
        const c = yield* connect(listener.address.port)
        yield* c.write("li")
        yield* c.write("t?0\n")
        yield* c.end
        return yield* c.closed
      }))
      assert.strictEqual(split.toString(), "sync:lit?0\n")
    }).pipe(Effect.scoped))

  it.live("a connection that ends before 4 bytes goes to the message protocol; an empty one is just closed", () =>
    Effect.gen(function* () {
      const { listener } = yield* start()
      assert.strictEqual((yield* exchange(listener.address.port, "li")).toString(), "message:li")
      assert.strictEqual((yield* exchange(listener.address.port, "")).toString(), "message:")
      const s = yield* until(listener, (s) => s.active === 0 && s.accepted === 2)
      assert.strictEqual(s.refused, 0)
    }).pipe(Effect.scoped))

  it.live("layerRefuse answers message connections with a seed-001 error frame and closes", () =>
    Effect.gen(function* () {
      const { listener } = yield* start({}, Layer.merge(fakeSync, Listener.layerRefuse))
      const got = yield* exchange(listener.address.port, "GET / HTTP/1.1\r\n\r\n")
      assert.strictEqual(got.readUInt32LE(0), got.length - 4)
      assert.deepStrictEqual(JSON.parse(got.subarray(4).toString("utf8")), {
        header: { status: "error" },
        payload: { type: "error", data: "message protocol not available" }
      })
    }).pipe(Effect.scoped))

  it.live("limits connections per address and in total, refusing only the extra ones", () =>
    Effect.gen(function* () {
      const { listener } = yield* start({ maxConnections: 3, maxConnectionsPerAddress: 2 })
      const port = listener.address.port
      const a1 = yield* connect(port)
      const a2 = yield* connect(port)
      yield* a1.write("lit?0\n")
      yield* a2.write("lit?0\n")
      yield* a1.waitFor(11)
      yield* a2.waitFor(11)
      // a third from 127.0.0.1: over the per-address limit, refused in its own protocol
      const refusedSync = yield* exchange(port, "lit?0,1\n")
      assert.strictEqual(refusedSync.toString(), "!error too many connections from 127.0.0.1 (limit 2)\n\n")
      const refusedMessage = yield* exchange(port, "\x02\x00\x00\x00{}")
      assert.include(JSON.parse(refusedMessage.subarray(4).toString()).payload.data, "too many connections from 127.0.0.1")
      // another address is still welcome, up to the total limit
      const b1 = yield* connect(port, { localAddress: "127.0.0.2" })
      yield* b1.write("lit?0\n")
      yield* b1.waitFor(11)
      const overTotal = yield* exchange(port, "lit?0\n", { localAddress: "127.0.0.3" })
      assert.include(overTotal.toString(), "too many connections (limit 3)")
      // the admitted ones are unaffected
      yield* a1.write("after")
      yield* a1.end
      assert.strictEqual((yield* a1.closed).toString(), "sync:lit?0\nafter")
      const s = yield* until(listener, (s) => s.active === 2)
      assert.strictEqual(s.refused, 3)
      // a slot is free again
      assert.strictEqual((yield* exchange(port, "lit?1\n")).toString(), "sync:lit?1\n")
      yield* a2.end
      yield* b1.end
      yield* a2.closed
      yield* b1.closed
    }).pipe(Effect.scoped))

  it.live("closes a connection that does not send its first bytes in time; others are unaffected", () =>
    Effect.gen(function* () {
      const { listener } = yield* start({ firstBytesTimeout: "150 millis" })
      const port = listener.address.port
      const slow = yield* connect(port)
      yield* slow.write("li") // 2 of the 4 bytes, then nothing
      const silent = yield* connect(port)
      const good = yield* connect(port)
      yield* good.write("lit?0\n")
      yield* good.waitFor(11)
      assert.strictEqual((yield* slow.closed).length, 0)
      assert.strictEqual((yield* silent.closed).length, 0)
      yield* good.write("x")
      yield* good.end
      assert.strictEqual((yield* good.closed).toString(), "sync:lit?0\nx")
    }).pipe(Effect.scoped))

  it.live("garbage and protocol errors on one connection do not affect another", () =>
    Effect.gen(function* () {
      const failing = Layer.succeed(MessageProtocol, MessageProtocol.of({
        serve: (input) =>
          input.pipe(
            Stream.mapEffect((chunk) =>
              Effect.fail(new ConnectionError({ reason: "Protocol", detail: `bad frame (${chunk.length} bytes)` })))
          )
      }))
      const { listener } = yield* start({}, Layer.merge(fakeSync, failing))
      const port = listener.address.port
      const good = yield* connect(port)
      yield* good.write("lit?0,1\n")
      yield* good.waitFor(13)
      const garbage = new Uint8Array(64 * 1024).map((_, i) => (i * 7919) & 0xff)
      for (let i = 0; i < 5; i++) {
        const got = yield* exchange(port, garbage).pipe(Effect.either)
        assert.isTrue(got._tag === "Right" && got.right.length === 0)
      }
      yield* good.write("still here")
      yield* good.end
      assert.strictEqual((yield* good.closed).toString(), "sync:lit?0,1\nstill here")
    }).pipe(Effect.scoped))

  it.live("shutdown stops accepting and lets an in-flight session finish", () =>
    Effect.gen(function* () {
      const gate = yield* Deferred.make<void>()
      const slowSync = Layer.succeed(SyncProtocol, SyncProtocol.of({
        serve: () =>
          Stream.concat(Stream.make(bytes("started;")), Stream.fromEffect(Deferred.await(gate)).pipe(Stream.as(bytes("finished"))))
      }))
      const { listener, stop } = yield* start({ shutdownGrace: "30 seconds" }, Layer.merge(slowSync, fakeMessage))
      const port = listener.address.port
      const c = yield* connect(port)
      yield* c.write("lit?0,1\n")
      yield* c.waitFor(8)
      const closing = yield* Effect.fork(stop)
      yield* until(listener, (s) => !s.listening)
      // the listening socket is closed: new connections are refused by the OS
      const refused = yield* Effect.scoped(connect(port)).pipe(Effect.flip)
      assert.strictEqual(refused.code, "ECONNREFUSED")
      yield* Deferred.succeed(gate, undefined)
      assert.strictEqual((yield* c.closed).toString(), "started;finished")
      yield* closing.await
    }).pipe(Effect.scoped))

  it.live("shutdown interrupts sessions still running when the grace period ends", () =>
    Effect.gen(function* () {
      const interrupted = yield* Deferred.make<void>()
      const stuckSync = Layer.succeed(SyncProtocol, SyncProtocol.of({
        serve: () =>
          Stream.concat(
            Stream.make(bytes("started")),
            Stream.fromEffect(Effect.never.pipe(Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined))))
          )
      }))
      const { listener, stop } = yield* start({ shutdownGrace: "100 millis" }, Layer.merge(stuckSync, fakeMessage))
      const c = yield* connect(listener.address.port)
      yield* c.write("lit?0,1\n")
      yield* c.waitFor(7)
      yield* stop
      yield* Deferred.await(interrupted)
      assert.strictEqual((yield* c.closed).toString(), "started")
    }).pipe(Effect.scoped))
})
