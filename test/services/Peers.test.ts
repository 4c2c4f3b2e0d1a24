/**
 * Peers over the in-memory network on the TestClock: announce → pull → seal (and re-announce along a line),
 * no storms, conflicts kept and reported, anti-entropy after lost announcements and restarts, O(1) bytes between
 * equal sets, the digest queries' bad input, and the config schema.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Either, Option, Schema, TestClock } from "effect"
import * as AntiEntropy from "../../src/services/AntiEntropy.js"
import type { ConflictReport } from "../../src/services/AntiEntropy.js"
import { makeSimulation, noFaults } from "../../src/services/Network.js"
import { makeMemory, ObjectStore, RefName } from "../../src/services/ObjectStore.js"
import * as Owners from "../../src/services/Owners.js"
import * as Peers from "../../src/services/Peers.js"
import { formatPublicKey } from "../../src/domain/SshKey.js"
import * as SyncClient from "../../src/services/SyncClient.js"
import { memoryKey } from "./KeysFixtures.js"
import { buildRelease, makeServer, publish, type SimServer } from "../sim/harness.js"

const alice = memoryKey("alice_ed25519")
const bob = memoryKey("bob_rsa3072")
const mallory = memoryKey("mallory_ed25519")
const INTERVAL = 10_000

const refOf = (s: SimServer, release: string) => Effect.orDie(s.store.readRef(RefName.make(`refs/tags/${release}`)))
const count = (s: SimServer) => Effect.map(Effect.orDie(s.store.listRefs("refs/tags/")), (r) => r.length)

const line = (names: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const sim = yield* makeSimulation(1, noFaults)
    const servers: Array<SimServer> = []
    for (const [i, name] of names.entries()) {
      const peers = names.filter((_, j) => Math.abs(i - j) === 1)
      servers.push(yield* makeServer(sim, { name, peers }, { interval: INTERVAL, signed: true }))
    }
    yield* Effect.forEach(servers, (s) => s.boot, { discard: true })
    const client = yield* makeMemory
    const pub = (server: string, name: string, version: string, content = `${name}@${version}`) =>
      Effect.flatMap(buildRelease(client, alice, name, version, content), (tag) =>
        Effect.map(publish(sim, "client", server, client, tag), (status) => ({ tag, status })))
    return { sim, servers, pub }
  })

describe("Peers", () => {
  it.scoped("a release published on A is announced, pulled, verified and sealed on B, then on C through B", () =>
    Effect.gen(function* () {
      const { sim, servers: [a, b, c], pub } = yield* line(["a", "b", "c"])
      yield* TestClock.adjust("1 millis") // first anti-entropy round: nothing to do
      const before = (yield* sim.stats).connections
      const { tag, status } = yield* pub("a", "alice/one", "1.0.0")
      assert.strictEqual(status, "Sealed")
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* refOf(b!, "alice/one/v1.0.0"), Option.some(tag))
      assert.deepStrictEqual(yield* refOf(c!, "alice/one/v1.0.0"), Option.some(tag))
      assert.deepStrictEqual(yield* refOf(a!, "alice/one/v1.0.0"), Option.some(tag))
      // No storm: publish (1) + a→b announce, b pulls (2), b→a and b→c announces, c pulls (3), c→b announce (1).
      const used = (yield* sim.stats).connections - before
      assert.isAtMost(used, 8)
      yield* TestClock.adjust("1 minute")
      const later = (yield* sim.stats).connections - before
      // only anti-entropy rounds (4 directed pairs per interval) from now on
      assert.isAtMost(later - used, 4 * 7)
    }))

  it.scoped("announcements lost to a crash are healed by anti-entropy after the restart", () =>
    Effect.gen(function* () {
      const { servers: [a, b], pub } = yield* line(["a", "b"])
      yield* b!.crash
      for (let i = 0; i < 5; i++) assert.strictEqual((yield* pub("a", "alice/one", `1.${i}.0`)).status, "Sealed")
      assert.strictEqual(yield* count(b!), 0)
      yield* b!.boot
      yield* TestClock.adjust("1 millis") // b's start-up round pulls everything
      assert.strictEqual(yield* count(b!), 5)
    }))

  it.scoped("a conflict (one release, two contents) is never merged: the first sealed stays, both sides record it", () =>
    Effect.gen(function* () {
      const { sim, servers: [a, b], pub } = yield* line(["a", "b"])
      yield* sim.partition([["a", "client"], ["b"]])
      const onA = yield* pub("a", "alice/one", "1.0.0", "from a")
      yield* sim.partition([["a"], ["b", "client"]])
      const onB = yield* pub("b", "alice/one", "1.0.0", "from b")
      assert.deepStrictEqual([onA.status, onB.status], ["Sealed", "Sealed"])
      assert.notStrictEqual(onA.tag, onB.tag)
      yield* sim.heal
      yield* TestClock.adjust(Duration.millis(2 * INTERVAL))
      assert.deepStrictEqual(yield* refOf(a!, "alice/one/v1.0.0"), Option.some(onA.tag))
      assert.deepStrictEqual(yield* refOf(b!, "alice/one/v1.0.0"), Option.some(onB.tag))
      // Each side also claimed the namespace with its own first release: their ownership chains fork too.
      const releasesOnly = (cs: ReadonlyArray<ConflictReport>) => cs.filter((c) => !c.release.startsWith("@owners/"))
      const ca = yield* a!.conflicts
      const cb = yield* b!.conflicts
      assert.deepStrictEqual(releasesOnly(ca).map((c) => [c.release, c.kept, c.other, c.peer]), [["alice/one/v1.0.0", onA.tag, onB.tag, "b"]])
      assert.deepStrictEqual(releasesOnly(cb).map((c) => [c.release, c.kept, c.other, c.peer]), [["alice/one/v1.0.0", onB.tag, onA.tag, "a"]])
      assert.deepStrictEqual(ca.filter((c) => c.release === "@owners/alice").map((c) => c.peer), ["b"])
      // what `upm peers status` reads: the `?peers` query
      const client = yield* SyncClient.make(sim.node("probe").connect).pipe(Effect.provideService(ObjectStore, a!.store))
      const report = AntiEntropy.parsePeersReply(yield* Effect.scoped(Effect.flatMap(client.connect({ host: "a", port: 0 }), (s) => s.query("peers"))))
      assert.strictEqual(report.self, "a")
      assert.deepStrictEqual(report.peers.map((p) => [p.name, p.address, p.state, p.lag, p.behind]), [["b", "b:0", "up", Option.some(0), Option.some(0)]])
      assert.deepStrictEqual(releasesOnly(report.conflicts).map((c) => [c.release, c.kept, c.other, c.peer]), [["alice/one/v1.0.0", onA.tag, onB.tag, "b"]])
      // Conflicts are stored: after a restart (cut off from b, so no round can find it again) `?peers` still shows it.
      yield* a!.crash
      yield* sim.partition([["a", "probe"], ["b"]])
      yield* a!.boot
      yield* TestClock.adjust("1 millis")
      const again = AntiEntropy.parsePeersReply(yield* Effect.scoped(Effect.flatMap(client.connect({ host: "a", port: 0 }), (s) => s.query("peers"))))
      assert.deepStrictEqual(again.peers.map((p) => p.state), ["down"])
      assert.sameDeepMembers([...again.conflicts], [...report.conflicts])
      assert.includeMembers((yield* Effect.orDie(a!.store.listRefs(Peers.CONFLICTS_PREFIX))).map((r) => r.name), [`refs/upm/conflicts/alice/one/v1.0.0/${onB.tag}`])
    }))

  it.scoped("ownership chains replicate: adopted before the first release is sealed, changes by anti-entropy, a fork is a recorded conflict", () =>
    Effect.gen(function* () {
      const { sim, servers: [a, b], pub } = yield* line(["a", "b"])
      yield* TestClock.adjust("1 millis")
      assert.strictEqual((yield* pub("a", "alice/one", "1.0.0")).status, "Sealed")
      yield* TestClock.adjust("1 millis")
      const ownersOf = (s: SimServer) => Owners.make.pipe(Effect.provideService(ObjectStore, s.store))
      const [oa, ob] = [yield* ownersOf(a!), yield* ownersOf(b!)]
      const head = (o: typeof oa) => Effect.map(Effect.orDie(o.get("alice")), Option.map((s) => s.head))
      // b holds a's chain (a's claim by release), not a claim of its own
      assert.isTrue(Option.isSome(yield* head(oa)))
      assert.deepStrictEqual(yield* head(ob), yield* head(oa))
      // A change made on a (alice adds bob's key) reaches b with the next anti-entropy round, verified.
      const addBob = yield* Effect.orDie(Owners.makeChange(alice, "alice", yield* Effect.orDie(oa.get("alice")), { op: "add-key", key: formatPublicKey(bob.publicKey) }))
      yield* Effect.orDie(oa.apply("alice", addBob.body))
      yield* TestClock.adjust(Duration.millis(INTERVAL))
      assert.deepStrictEqual(yield* head(ob), Option.some(addBob.hash))
      assert.strictEqual(Option.getOrThrow(yield* Effect.orDie(ob.get("alice"))).keys.length, 2)
      // A forged record (mallory signs) is never adopted: b stays where it is.
      const before = yield* Effect.orDie(ob.get("alice"))
      const forged = yield* Effect.orDie(Owners.makeChange(mallory, "alice", before, { op: "add-key", key: formatPublicKey(mallory.publicKey) }))
      yield* Effect.orDie(a!.store.put("tag", forged.body))
      assert.strictEqual((yield* Effect.flip(oa.adopt("alice", forged.hash))).reason, "NotOwner")
      // A fork: during a partition each side makes a different change at the same place in the chain.
      yield* sim.partition([["a"], ["b"]])
      const onA = yield* Effect.orDie(Owners.makeChange(alice, "alice", before, { op: "remove-key", key: formatPublicKey(bob.publicKey) }))
      const onB = yield* Effect.orDie(Owners.makeChange(bob, "alice", before, { op: "add-member", member: "alice" }).pipe(Effect.either))
      yield* Effect.orDie(oa.apply("alice", onA.body))
      const other = Either.isRight(onB) ? onB.right : yield* Effect.orDie(Owners.makeChange(bob, "alice", before, { op: "remove-key", key: formatPublicKey(alice.publicKey) }))
      yield* Effect.orDie(ob.apply("alice", other.body))
      yield* sim.heal
      yield* TestClock.adjust(Duration.millis(INTERVAL))
      // Neither side moved; both recorded the fork for `upm peers status`.
      assert.deepStrictEqual(yield* head(oa), Option.some(onA.hash))
      assert.deepStrictEqual(yield* head(ob), Option.some(other.hash))
      const ca = (yield* a!.conflicts).filter((c) => c.release === "@owners/alice")
      const cb = (yield* b!.conflicts).filter((c) => c.release === "@owners/alice")
      assert.deepStrictEqual(ca.map((c) => [c.kept, c.other]), [[onA.hash, other.hash]])
      assert.deepStrictEqual(cb.map((c) => [c.kept, c.other]), [[other.hash, onA.hash]])
    }))

  it.scoped("servers holding the same releases compare them with one digest query, whatever their number", () =>
    Effect.gen(function* () {
      const { sim, servers: [a], pub } = yield* line(["a", "b"])
      for (let i = 0; i < 30; i++) yield* pub("a", `alice/p${i % 7}`, `1.${i}.0`)
      yield* TestClock.adjust("1 millis")
      const client = yield* SyncClient.make(sim.node("probe").connect).pipe(Effect.provideService(ObjectStore, a!.store))
      const session = yield* client.connect({ host: "b", port: 0 })
      const before = (yield* sim.stats).bytes
      const local = yield* Effect.orDie(AntiEntropy.listIndexed(a!.store))
      const diff = yield* AntiEntropy.compare(session, local)
      const bytes = (yield* sim.stats).bytes - before
      assert.deepStrictEqual({ missing: diff.missing.length, lag: diff.lag, conflicts: diff.conflicts.length, queries: diff.queries }, { missing: 0, lag: 0, conflicts: 0, queries: 1 })
      assert.isBelow(bytes, 100)
      // Narrowing finds one difference among many.
      const fewer = AntiEntropy.buildIndex((yield* Effect.orDie(a!.store.listRefs("refs/tags/"))).slice(1).concat(yield* Effect.orDie(a!.store.listRefs("refs/upm/owners/"))))
      const one = yield* AntiEntropy.compare(session, fewer)
      assert.strictEqual(one.missing.length, 1)
      assert.strictEqual(one.lag, 0)
    }))

  it.scoped("the digest queries refuse bad prefixes with a clear error", () =>
    Effect.gen(function* () {
      const { sim, servers: [a] } = yield* line(["a"])
      const client = yield* SyncClient.make(sim.node("probe").connect).pipe(Effect.provideService(ObjectStore, a!.store))
      for (const bad of ["digest XYZ", "digests 0 1", `refs ${"a".repeat(41)}`]) {
        const session = yield* client.connect({ host: "a", port: 0 })
        const e = yield* Effect.flip(session.query(bad))
        assert.strictEqual(e.reason, "Remote")
        assert.include(e.detail, "bad key prefix")
      }
      const session = yield* client.connect({ host: "a", port: 0 })
      assert.strictEqual(yield* session.query("digest"), `${AntiEntropy.summarize([]).digest} 0`)
      assert.strictEqual(yield* session.query("refs"), "")
      assert.strictEqual(yield* session.query("peers"), "self a")
    }))

  it("config: unique names, not our own, secrets of 16+ characters, addresses host:port", () => {
    const decode = Schema.decodeUnknownEither(Peers.PeersConfig)
    const peer = (name: string, address = "127.0.0.1:4822", secret = "0123456789abcdef") => ({ name, address, secret })
    assert.isTrue(Either.isRight(decode({ name: "a", servers: [peer("b"), peer("c", "[::1]:1")] })))
    assert.isTrue(Either.isLeft(decode({ name: "a", servers: [peer("b"), peer("b")] })))
    assert.isTrue(Either.isLeft(decode({ name: "a", servers: [peer("a")] })))
    assert.isTrue(Either.isLeft(decode({ name: "a", servers: [peer("b", "nohost")] })))
    assert.isTrue(Either.isLeft(decode({ name: "a", servers: [peer("b", "h:99999")] })))
    assert.isTrue(Either.isLeft(decode({ name: "a", servers: [peer("b", "h:1", "short")] })))
    assert.isTrue(Either.isLeft(decode({ name: "a b" })))
  })
})
