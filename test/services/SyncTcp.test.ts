/** The sync client and server over real TCP on 127.0.0.1 (the Listener on port 0, connectTcp). */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import { SyncProtocol } from "../../src/services/Connection.js"
import * as Listener from "../../src/services/Listener.js"
import { makeMemory, missingReachable, ObjectStore } from "../../src/services/ObjectStore.js"
import * as SyncClient from "../../src/services/SyncClient.js"
import { deflating, makeRelease, makeServer, pkg, wideFiles } from "./SyncFixtures.js"

describe("sync over TCP", () => {
  it.live("push then pull a package over loopback, v0, v2 and v3 (deflated), with a large blob", () =>
    Effect.scoped(Effect.gen(function* () {
      const server = yield* makeServer({ store: deflating(yield* makeMemory) })
      const listener = yield* Layer.build(
        Listener.layer({ ...Listener.defaultOptions, port: 0 }).pipe(
          Layer.provide(Layer.mergeAll(Layer.succeed(SyncProtocol, server.sync), Listener.layerRefuse))
        )
      ).pipe(Effect.map((ctx) => ctx.unsafeMap.get(Listener.Listener.key) as Listener.Listener["Type"]))
      const address = listener.address
      const big = new Uint8Array(2 * 1024 * 1024).map((_, i) => (i * 7919) & 0xff)
      const files = { ...wideFiles(300), "big.bin": Buffer.from(big).toString("latin1") }
      for (const versions of [[0], [0, 2], [0, 2, 3]]) {
        const local = deflating(yield* makeMemory)
        const client = yield* SyncClient.make(SyncClient.connectTcp, { versions }).pipe(Effect.provideService(ObjectStore, local))
        const version = `1.0.${versions.length}`
        const { tag } = yield* makeRelease(local, "alice/tcp", version, files)
        const session = yield* client.connect(address)
        assert.strictEqual(session.version, Math.max(...versions))
        assert.strictEqual((yield* session.push(tag)).status, "Sealed")
        const other = deflating(yield* makeMemory)
        const puller = yield* SyncClient.make(SyncClient.connectTcp, { versions }).pipe(Effect.provideService(ObjectStore, other))
        const pullSession = yield* puller.connect(address)
        const found = yield* pullSession.match(pkg("alice/tcp"), undefined)
        assert.isTrue(Option.isSome(found))
        assert.strictEqual(pullSession.version, Math.max(...versions))
        yield* pullSession.pull(tag)
        assert.deepStrictEqual(yield* missingReachable(tag).pipe(Effect.provideService(ObjectStore, other)), [])
      }
      const refused = yield* SyncClient.make(SyncClient.connectTcp).pipe(Effect.provideService(ObjectStore, yield* makeMemory))
      const err = yield* refused.connect({ host: "127.0.0.1", port: 1 }).pipe(Effect.flip)
      assert.strictEqual(err.reason, "Connect")
    })))
})
