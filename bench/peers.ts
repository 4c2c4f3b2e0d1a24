/**
 * Peers on loopback TCP, in one process (real Server.services + Listener, memory stores, the real Verifier):
 *
 * 1. seal → sealed on a peer: publish on A, time from A's seal to B's seal (announce, pull, verify, seal).
 * 2. anti-entropy bytes between two servers holding the same 10,000 releases (one comparison, counted on the
 *    wire), and what it costs when one release differs.
 * 3. catch-up: B starts empty while A holds 1,000 releases; time until B holds them all.
 *
 *   npx tsx bench/peers.ts [latency] [antientropy] [catchup]     (default: all three)
 */
import { NodeContext } from "@effect/platform-node"
import { Context, Deferred, Duration, Effect, Either, Layer, Logger, LogLevel, Option, Schema, Stream } from "effect"
import { createServer } from "node:net"
import * as AntiEntropy from "../src/services/AntiEntropy.js"
import * as Listener from "../src/services/Listener.js"
import { children, decodeObject } from "../src/domain/GitObject.js"
import type { ObjectHash } from "../src/domain/ObjectHash.js"
import { makeMemory, ObjectStore, RefName } from "../src/services/ObjectStore.js"
import { Registry } from "../src/services/Registry.js"
import * as Server from "../src/services/Server.js"
import { ServerConfig } from "../src/services/ServerConfig.js"
import * as SyncClient from "../src/services/SyncClient.js"
import { buildRelease } from "../test/sim/harness.js"
import { memoryKey } from "../test/services/KeysFixtures.js"

const alice = memoryKey("alice_ed25519")
const SECRET = "bench-shared-secret-0123"

const freePort = Effect.async<number>((resume) => {
  const s = createServer()
  s.listen(0, "127.0.0.1", () => {
    const a = s.address()
    const port = typeof a === "object" && a !== null ? a.port : 0
    s.close(() => resume(Effect.succeed(port)))
  })
})

const startServer = (name: string, port: number, peers: ReadonlyArray<{ name: string; port: number }>, interval = "60m") =>
  Effect.gen(function* () {
    const config = Schema.decodeUnknownSync(ServerConfig)({
      host: "127.0.0.1", port, store: "memory",
      peers: { name, servers: peers.map((p) => ({ name: p.name, address: `127.0.0.1:${p.port}`, secret: SECRET })), interval, timeout: "30s" }
    })
    const layer = Listener.layer(Server.listenerOptions(config)).pipe(Layer.provideMerge(Server.services(config)), Layer.provide(NodeContext.layer))
    const scope = yield* Effect.scope
    const ctx = yield* Layer.buildWithScope(layer, scope)
    return { registry: Context.get(ctx, Registry), store: Context.get(ctx, ObjectStore), port }
  })

const pushTo = (port: number, store: ObjectStore["Type"], tag: Parameters<SyncClient.SyncSession["push"]>[0]) =>
  Effect.scoped(Effect.gen(function* () {
    const client = yield* SyncClient.make(SyncClient.connectTcp).pipe(Effect.provideService(ObjectStore, store))
    const session = yield* client.connect({ host: "127.0.0.1", port })
    return yield* session.push(tag)
  }))

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN

const latency = Effect.scoped(Effect.gen(function* () {
  const [pa, pb] = [yield* freePort, yield* freePort]
  const a = yield* startServer("a", pa, [{ name: "b", port: pb }])
  const b = yield* startServer("b", pb, [{ name: "a", port: pa }])
  const author = yield* makeMemory
  const samples: Array<number> = []
  for (let i = 0; i < 20; i++) {
    const tag = yield* buildRelease(author, alice, "alice/bench", `1.${i}.0`, `release ${i}`)
    const sealedA = yield* Deferred.make<number>()
    const sealedB = yield* Deferred.make<number>()
    const watch = (r: Registry["Type"], d: Deferred.Deferred<number>) =>
      r.sealed.pipe(Stream.filter((x) => x.hash === tag), Stream.runHead, Effect.flatMap(() => Deferred.succeed(d, performance.now())), Effect.forkScoped)
    yield* watch(a.registry, sealedA)
    yield* watch(b.registry, sealedB)
    yield* Effect.yieldNow()
    yield* pushTo(pa, author, tag)
    const t0 = yield* Deferred.await(sealedA)
    const t1 = yield* Deferred.await(sealedB).pipe(Effect.timeout("10 seconds"))
    samples.push(t1 - t0)
  }
  return samples
}))

/** A Connect that counts the bytes both ways. */
const counting = (counter: { sent: number; received: number }): SyncClient.Connect => (address) =>
  Effect.map(SyncClient.connectTcp(address), (t) => ({
    input: Stream.tap(t.input, (chunk) => Effect.sync(() => { counter.received += chunk.length })),
    write: (bytes: Uint8Array) => Effect.zipRight(Effect.sync(() => { counter.sent += bytes.length }), t.write(bytes))
  }))

const antiEntropyBytes = Effect.scoped(Effect.gen(function* () {
  const pb = yield* freePort
  const b = yield* startServer("b", pb, [])
  // 10,000 releases (small graphs) sealed on B; A's index is the same set.
  const author = yield* makeMemory
  const t0 = performance.now()
  for (let i = 0; i < 10_000; i++) yield* buildRelease(author, undefined, `o${i % 50}/p${i % 500}`, `1.${i}.0`, `r${i}`)
  // copy the objects and seal the refs directly: the point here is comparing, not publishing
  for (const hash of yield* Effect.orDie(author.listObjects())) {
    const o = yield* Effect.orDie(author.get(hash))
    yield* Effect.orDie(b.store.put(o.type, o.body))
  }
  const tags = (yield* Effect.forEach(yield* Effect.orDie(author.listObjects()), (h) => Effect.map(Effect.orDie(author.get(h)), (o) => ({ h, o }))))
    .filter((x) => x.o.type === "tag")
  for (const { h, o } of tags) {
    const name = /\ntag (\S+)\n/.exec(`\n${new TextDecoder().decode(o.body)}`)?.[1] ?? ""
    yield* Effect.orDie(b.store.setRef(RefName.make(`refs/tags/${name}`), Option.none(), h))
  }
  const setup = performance.now() - t0
  const refs = yield* Effect.orDie(b.store.listRefs("refs/tags/"))
  const local = AntiEntropy.buildIndex(refs)
  const run = (index: AntiEntropy.ReleaseIndex) =>
    Effect.scoped(Effect.gen(function* () {
      const counter = { sent: 0, received: 0 }
      const client = yield* SyncClient.make(counting(counter)).pipe(Effect.provideService(ObjectStore, author))
      const session = yield* client.connect({ host: "127.0.0.1", port: pb })
      const start = performance.now()
      const diff = yield* AntiEntropy.compare(session, index)
      return { ...counter, ms: performance.now() - start, queries: diff.queries, missing: diff.missing.length }
    }))
  const equal = yield* run(local)
  const oneOff = yield* run(local.filter((_, i) => i !== 1234))
  return { releases: refs.length, setup, equal, oneOff }
}))

/** Copies a release's objects into `store` and writes its ref (setting up a server's content without publishing). */
const plant = (from: ObjectStore["Type"], store: ObjectStore["Type"], tag: ObjectHash, name: string, version: string) =>
  Effect.gen(function* () {
    const copy = (hash: ObjectHash): Effect.Effect<void> =>
      Effect.gen(function* () {
        const o = yield* Effect.orDie(from.get(hash))
        yield* Effect.orDie(store.put(o.type, o.body))
        const decoded = decodeObject(o.type, o.body)
        if (Either.isRight(decoded)) for (const c of children(decoded.right)) yield* copy(c.hash)
      })
    yield* copy(tag)
    yield* Effect.orDie(store.setRef(RefName.make(`refs/tags/${name}/v${version}`), Option.none(), tag))
  })

const catchUp = Effect.scoped(Effect.gen(function* () {
  const [pa, pb] = [yield* freePort, yield* freePort]
  const a = yield* startServer("a", pa, [])
  const author = yield* makeMemory
  // A's 1,000 signed releases are planted in its store (publishing them one by one is not what is measured).
  for (let i = 0; i < 1000; i++) {
    const tag = yield* buildRelease(author, alice, `alice/p${i % 20}`, `1.${i}.0`, `release ${i}`)
    yield* plant(author, a.store, tag, `alice/p${i % 20}`, `1.${i}.0`)
  }
  const t0 = performance.now()
  const cpu0 = process.cpuUsage()
  const b = yield* startServer("b", pb, [{ name: "a", port: pa }], "1s")
  for (;;) {
    const n = (yield* Effect.orDie(b.store.listRefs("refs/tags/"))).length
    if (n >= 1000) break
    yield* Effect.sleep(Duration.millis(20))
  }
  const cpu = process.cpuUsage(cpu0)
  return { ms: performance.now() - t0, cpuMs: (cpu.user + cpu.system) / 1000 }
}))

const parts = process.argv.slice(2)
const wanted = (part: string) => parts.length === 0 || parts.includes(part)

const program = Effect.gen(function* () {
  if (wanted("latency")) {
    const lat = yield* latency
    console.log(`seal → sealed on peer (loopback, signed, 20 releases): median ${median(lat).toFixed(1)} ms, max ${Math.max(...lat).toFixed(1)} ms (target ≤ 200 ms)`)
  }
  if (wanted("antientropy")) {
    const ae = yield* antiEntropyBytes
    console.log(`anti-entropy, ${ae.releases} releases on both sides: ${ae.equal.sent + ae.equal.received} bytes (${ae.equal.sent} sent, ${ae.equal.received} received, handshake included), ${ae.equal.queries} query, ${ae.equal.ms.toFixed(1)} ms (target < 1 KB, constant)`)
    console.log(`anti-entropy, one release missing among ${ae.releases}: ${ae.oneOff.sent + ae.oneOff.received} bytes, ${ae.oneOff.queries} queries, found ${ae.oneOff.missing}, ${ae.oneOff.ms.toFixed(1)} ms`)
  }
  if (!wanted("catchup")) return
  const cu = yield* catchUp
  console.log(`catch-up of 1000 missed releases (signed, verified; both servers in this process): ${(cu.ms / 1000).toFixed(2)} s (${(cu.ms / 1000).toFixed(2)} ms per release), CPU ${(cu.cpuMs / 1000).toFixed(2)} s`)
})

Effect.runPromise(program.pipe(Logger.withMinimumLogLevel(LogLevel.Warning), Effect.provide(NodeContext.layer))).catch((e) => {
  console.error(e)
  process.exitCode = 1
})
