/**
 * The upstream pull-through cache over the in-memory network on the TestClock: fetched once and verified, served
 * locally afterwards, single flight, max age for new versions, upstream down.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option, TestClock } from "effect"
import { makeSimulation, noFaults } from "../../src/services/Network.js"
import { makeMemory, ObjectStore, RefName } from "../../src/services/ObjectStore.js"
import * as SyncClient from "../../src/services/SyncClient.js"
import { memoryKey } from "./KeysFixtures.js"
import { buildRelease, makeServer, publish } from "../sim/harness.js"

const alice = memoryKey("alice_ed25519")

const setup = Effect.gen(function* () {
  const sim = yield* makeSimulation(1, noFaults)
  const up = yield* makeServer(sim, { name: "up", peers: [] }, { interval: 60_000, signed: true })
  const cache = yield* makeServer(sim, { name: "cache", peers: [], upstream: "up", upstreamMaxAge: 60_000 }, { interval: 60_000, signed: true })
  yield* up.boot
  yield* cache.boot
  const author = yield* makeMemory
  const pub = (version: string) =>
    Effect.flatMap(buildRelease(author, alice, "alice/lib", version, `lib ${version}`), (tag) =>
      Effect.as(publish(sim, "author", "up", author, tag), tag))
  const user = yield* makeMemory
  const client = yield* SyncClient.make(sim.node("user").connect).pipe(Effect.provideService(ObjectStore, user))
  const ask = (query: string) => Effect.scoped(Effect.flatMap(client.connect({ host: "cache", port: 0 }), (s) => s.query(query)))
  /** Connections the cache opened to the upstream so far. */
  return { sim, up, cache, pub, ask, user, client }
})

describe("Upstream", () => {
  it.scoped("a match the cache lacks is fetched from the upstream, verified, stored, and then served locally", () =>
    Effect.gen(function* () {
      const { sim, cache, pub, ask, client } = yield* setup
      const tag = yield* pub("1.0.0")
      const c0 = (yield* sim.stats).connections
      assert.strictEqual(yield* ask("match alice/lib ^1"), `1.0.0 ${tag}`)
      assert.deepStrictEqual(yield* Effect.orDie(cache.store.readRef(RefName.make("refs/tags/alice/lib/v1.0.0"))), Option.some(tag))
      // the user's pull is served from the cache's store
      const pulled = yield* Effect.scoped(Effect.flatMap(client.connect({ host: "cache", port: 0 }), (s) => s.pull(tag)))
      assert.isAbove(pulled.objects, 3)
      const c1 = (yield* sim.stats).connections
      assert.strictEqual(c1 - c0, 3) // user→cache (match), cache→upstream, user→cache (pull)
      assert.strictEqual(yield* ask("match alice/lib ^1"), `1.0.0 ${tag}`)
      assert.strictEqual((yield* sim.stats).connections - c1, 1) // only the user's connection: answered locally
    }))

  it.scoped("many clients asking at once for the same missing release cause exactly one upstream exchange", () =>
    Effect.gen(function* () {
      const { sim, pub, ask } = yield* setup
      const tag = yield* pub("1.0.0")
      const c0 = (yield* sim.stats).connections
      const answers = yield* Effect.forEach(Array.from({ length: 20 }), () => ask("match alice/lib"), { concurrency: "unbounded" })
      assert.deepStrictEqual(new Set(answers), new Set([`1.0.0 ${tag}`]))
      assert.strictEqual((yield* sim.stats).connections - c0, 21) // 20 users + 1 upstream
    }))

  it.scoped("new upstream versions appear once the max age has passed; held releases are never re-fetched", () =>
    Effect.gen(function* () {
      const { pub, ask } = yield* setup
      const v1 = yield* pub("1.0.0")
      assert.strictEqual(yield* ask("match alice/lib"), `1.0.0 ${v1}`)
      const v2 = yield* pub("1.1.0")
      assert.strictEqual(yield* ask("match alice/lib"), `1.0.0 ${v1}`) // within max age: the cached answer
      yield* TestClock.adjust("61 seconds")
      assert.strictEqual(yield* ask("match alice/lib"), `1.1.0 ${v2}`)
    }))

  it.scoped("upstream down: held releases are served, a miss says which upstream could not be reached, publishing works", () =>
    Effect.gen(function* () {
      const { up, pub, ask, sim } = yield* setup
      const v1 = yield* pub("1.0.0")
      assert.strictEqual(yield* ask("match alice/lib"), `1.0.0 ${v1}`)
      yield* up.crash
      yield* TestClock.adjust("61 seconds")
      assert.strictEqual(yield* ask("match alice/lib"), `1.0.0 ${v1}`)
      const miss = yield* Effect.flip(ask("match alice/other"))
      assert.strictEqual(miss.reason, "Remote")
      assert.include(miss.detail, "upstream up:0 could not be reached")
      const author = yield* makeMemory
      const tag = yield* buildRelease(author, alice, "alice/local", "1.0.0", "local")
      assert.strictEqual(yield* publish(sim, "author", "cache", author, tag), "Sealed")
    }))
})
