/**
 * The composed server runtime in-process (Server.layer on a memory store, port 0): the real sync session and
 * the real message session behind the Listener, over loopback TCP.
 */
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Option } from "effect"
import { PackageName, Range } from "../../src/domain/Package.js"
import * as Listener from "../../src/services/Listener.js"
import { makeMemory, missingReachable, ObjectStore } from "../../src/services/ObjectStore.js"
import * as Server from "../../src/services/Server.js"
import * as ServerConfig from "../../src/services/ServerConfig.js"
import * as SyncClient from "../../src/services/SyncClient.js"
import { graphOf, signedRelease } from "../e2e/release.js"
import { connect, exchange } from "../e2e/tcp.js"

const config = (limits: Partial<ServerConfig.ServerConfig["limits"]> = {}): ServerConfig.ServerConfig => ({
  ...ServerConfig.defaults,
  port: 0,
  store: { _tag: "memory" },
  limits: { ...ServerConfig.defaults.limits, ...limits },
  http: { enabled: false }
})

const startServer = (c: ServerConfig.ServerConfig) =>
  Effect.map(Layer.build(Server.layer(c)), (ctx) => ({
    listener: Context.get(ctx, Listener.Listener),
    store: Context.get(ctx, ObjectStore)
  }))

describe("Server.layer", () => {
  it.scoped("publishes a signed release through the real sync session over TCP, then serves it to another client", () =>
    Effect.gen(function* () {
      const { listener, store } = yield* startServer(config())
      const address = { host: "127.0.0.1", port: listener.address.port }
      const publisher = yield* makeMemory
      const { tag } = yield* signedRelease(publisher, "alice/tool", "2.1.0", { "upm.json": "{}\n", bin: { "tool.js": "run()\n" } })
      const pushed = yield* Effect.scoped(Effect.gen(function* () {
        const client = yield* SyncClient.make(SyncClient.connectTcp).pipe(Effect.provideService(ObjectStore, publisher))
        return yield* (yield* client.connect(address)).push(tag)
      }))
      assert.strictEqual(pushed.status, "Sealed")
      assert.strictEqual(pushed.objects, (yield* graphOf(publisher, tag)).length)
      assert.deepStrictEqual(yield* missingReachable(tag).pipe(Effect.provideService(ObjectStore, store)), [])

      const installer = yield* makeMemory
      const match = yield* Effect.scoped(Effect.gen(function* () {
        const client = yield* SyncClient.make(SyncClient.connectTcp, { versions: [0] }).pipe(Effect.provideService(ObjectStore, installer))
        const session = yield* client.connect(address)
        assert.strictEqual(session.version, 0)
        const found = yield* session.match(PackageName.make("alice/tool"), Range.make("^2.0.0"))
        yield* session.pull(Option.getOrThrow(found).hash)
        return found
      }))
      assert.strictEqual(Option.getOrThrow(match).hash, tag)
      assert.deepStrictEqual(yield* missingReachable(tag).pipe(Effect.provideService(ObjectStore, installer)), [])
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("speaks the seed's handshake byte for byte and refuses versions it does not speak", () =>
    Effect.gen(function* () {
      const { listener } = yield* startServer(config())
      const c = yield* connect(listener.address.port)
      yield* c.write("lit?0\n? match creationix/jack 0.1.2\n\n")
      assert.strictEqual((yield* c.waitFor(9)).toString(), "lit!0\n!\n\n")
      const refused = (yield* exchange(listener.address.port, "lit?7\n")).toString()
      assert.match(refused, /^!error .+\n\n$/)
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("the message protocol answers on the same port; per-address limits apply to both protocols", () =>
    Effect.gen(function* () {
      const { listener } = yield* startServer(config({ maxConnectionsPerAddress: 1 }))
      const port = listener.address.port
      const held = yield* connect(port)
      const body = Buffer.from(JSON.stringify({ header: { scope: "client" }, payload: { type: "no-such-type", data: null } }))
      const frame = Buffer.alloc(4 + body.length)
      frame.writeUInt32LE(body.length, 0)
      body.copy(frame, 4)
      yield* held.write(frame)
      const length = (yield* held.waitFor(4)).readUInt32LE(0)
      const reply = JSON.parse((yield* held.waitFor(4 + length)).subarray(4, 4 + length).toString())
      assert.notStrictEqual(reply.header.status, "ok")
      // a second connection from 127.0.0.1 is over the limit, whatever its protocol
      assert.match((yield* exchange(port, "lit?0\n")).toString(), /^!error too many connections from 127\.0\.0\.1/)
      const refusedMessage = yield* exchange(port, frame)
      assert.include(JSON.parse(refusedMessage.subarray(4).toString()).payload.data, "too many connections")
      yield* held.end
      yield* held.closed
    }).pipe(Effect.provide(NodeContext.layer)))
})
