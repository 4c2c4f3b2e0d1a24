import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Option, Ref } from "effect"
import { ClientConfig, ServerAddress } from "../../src/services/ClientConfig.js"
import { makeMemory, ObjectStore } from "../../src/services/ObjectStore.js"
import * as Remote from "../../src/services/Remote.js"
import * as SyncClient from "../../src/services/SyncClient.js"
import { makeServer } from "./SyncFixtures.js"

/** A Remote over an in-memory server, counting the connections it opens. */
const setup = (connections: number) =>
  Effect.gen(function* () {
    const server = yield* makeServer()
    const opened = yield* Ref.make(0)
    const connect: SyncClient.Connect = (address) =>
      Effect.zipRight(Ref.update(opened, (n) => n + 1), SyncClient.connectMemory(server.serve)(address))
    const client = yield* SyncClient.make(connect, { versions: [0, 2] }).pipe(Effect.provideService(ObjectStore, yield* makeMemory))
    const config = Layer.succeed(ClientConfig, ClientConfig.of({
      paths: { home: "/nowhere", store: "/nowhere/store", knownKeys: "/nowhere/k", defaultKey: "/nowhere/id", configFile: "/nowhere/c" },
      file: {},
      server: () => Effect.succeed({ address: new ServerAddress({ host: "memory", port: 1 }), source: "flag" as const }),
      keyPath: () => Option.none(),
      set: () => Effect.void
    }))
    const remote = yield* Remote.make(Option.none(), connections).pipe(
      Effect.provide(Layer.merge(config, Layer.succeed(SyncClient.SyncClient, client)))
    )
    return { remote, opened }
  })

describe("Remote", () => {
  it.scoped("withConnection runs at most N operations at once, on at most N connections, reused", () =>
    Effect.gen(function* () {
      const { remote, opened } = yield* setup(3)
      assert.isFalse(yield* remote.connected)
      const active = yield* Ref.make(0)
      const peak = yield* Ref.make(0)
      const op = remote.withConnection((session) =>
        Effect.gen(function* () {
          const now = yield* Ref.updateAndGet(active, (n) => n + 1)
          yield* Ref.update(peak, (p) => Math.max(p, now))
          yield* session.query("authors")
          yield* Effect.yieldNow()
          yield* Ref.update(active, (n) => n - 1)
        }))
      yield* Effect.all(Array.from({ length: 12 }, () => op), { concurrency: "unbounded", discard: true })
      assert.strictEqual(yield* Ref.get(peak), 3)
      assert.strictEqual(yield* Ref.get(opened), 3)
      yield* Effect.all(Array.from({ length: 6 }, () => op), { concurrency: "unbounded", discard: true })
      assert.strictEqual(yield* Ref.get(opened), 3) // reused
      assert.isTrue(yield* remote.connected)
    }))

  it.scoped("a connection whose operation failed is not lent again", () =>
    Effect.gen(function* () {
      const { remote, opened } = yield* setup(2)
      yield* remote.withConnection((session) => session.query("authors"))
      assert.strictEqual(yield* Ref.get(opened), 1)
      // An error reply ends the server's session: that connection is done.
      const failed = yield* Effect.flip(remote.withConnection((session) => session.query("frobnicate")))
      assert.strictEqual(failed._tag, "SyncClientError")
      yield* remote.withConnection((session) => session.query("authors"))
      assert.strictEqual(yield* Ref.get(opened), 2)
    }))
})
