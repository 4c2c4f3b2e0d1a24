import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, Layer, Option, Stream } from "effect"
import { decodeFramed, hashOf } from "../../src/domain/GitObject.js"
import { type ObjectHash, sha1 } from "../../src/domain/ObjectHash.js"
import { getFramed, missingReachable, ObjectStore, RefName } from "../../src/services/ObjectStore.js"
import * as ProposalPolicy from "../../src/services/ProposalPolicy.js"
import * as SyncClient from "../../src/services/SyncClient.js"
import * as SyncServer from "../../src/services/SyncServer.js"
import { deepFiles, makeClient, makeRelease, makeServer, pkg, ver, wideFiles } from "./SyncFixtures.js"

const countReachable = (store: ObjectStore["Type"], root: ObjectHash) =>
  Effect.gen(function* () {
    const seen = new Set<string>()
    let frontier = [root]
    while (frontier.length > 0) {
      const next: Array<ObjectHash> = []
      for (const h of frontier) {
        if (seen.has(h)) continue
        seen.add(h)
        const framed = yield* getFramed(h).pipe(Effect.provideService(ObjectStore, store), Effect.orDie)
        const o = Either.getOrThrow(decodeFramed(framed))
        if (o.type === "tree") next.push(...o.entries.map((e) => e.hash))
        if (o.type === "tag") next.push(o.tag.object)
      }
      frontier = next
    }
    return seen.size
  })

describe("SyncClient ⇄ SyncServer (in memory)", () => {
  it.scoped("push seals a release; match, versions, search, authors, packages see it; pull copies it", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const alice = yield* makeClient(server)
      const { tag } = yield* makeRelease(alice.store, "alice/pkg", "1.0.0", deepFiles(4))
      const total = yield* countReachable(alice.store, tag)

      const session = yield* alice.connect
      assert.strictEqual(session.version, 0)
      assert.isTrue(Option.isNone(yield* session.match(pkg("alice/pkg"))))
      const pushed = yield* session.push(tag)
      assert.strictEqual(pushed.status, "Sealed")
      assert.strictEqual(pushed.objects, total)
      assert.deepStrictEqual(yield* session.match(pkg("alice/pkg")), Option.some({ version: ver("1.0.0"), hash: tag }))
      assert.deepStrictEqual(yield* session.versions(pkg("alice/pkg")), [{ version: ver("1.0.0"), hash: tag }])
      assert.deepStrictEqual(yield* session.search("pk"), ["alice/pkg"])
      assert.deepStrictEqual(yield* session.authors(), ["alice"])
      assert.deepStrictEqual(yield* session.packages("alice"), ["alice/pkg"])
      assert.deepStrictEqual(yield* session.packages("bob"), [])

      const bob = yield* makeClient(server)
      const bobSession = yield* bob.connect
      const pulled = yield* bobSession.pull(tag)
      assert.strictEqual(pulled.objects, total)
      assert.deepStrictEqual(yield* missingReachable(tag).pipe(Effect.provideService(ObjectStore, bob.store)), [])
      // Pulling again is free: the graph is complete locally.
      const again = yield* bobSession.pull(tag)
      assert.strictEqual(again.objects, 0)
      assert.strictEqual(again.wants, 0)
    }))

  it.scoped("round trips stay within tree depth + 3, with WANTs pipelined", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const alice = yield* makeClient(server)
      const depth = 6
      const { tag } = yield* makeRelease(alice.store, "alice/deep", "1.0.0", deepFiles(depth, 3))
      const session = yield* alice.connect
      const pushed = yield* session.push(tag)
      // Tag → tree → depth-1 levels of subtrees: one WANT wave per level.
      assert.isAtMost(pushed.wants, depth + 1)
      const bob = yield* makeClient(server)
      const pulled = yield* (yield* bob.connect).pull(tag)
      // One wave per level of objects: the tag, `depth` levels of trees, the blobs of the deepest tree.
      // With the handshake that is depth + 3 round trips.
      assert.strictEqual(pulled.rounds, depth + 2)

      // A wide tree: 300 files in one folder go out in 5 WANT frames, all in flight at once.
      const { tag: wide } = yield* makeRelease(alice.store, "alice/wide", "1.0.0", wideFiles(300))
      const wideResult = yield* session.push(wide)
      assert.strictEqual(wideResult.wants, 1 + 1 + Math.ceil(300 / 64))
      const pulledWide = yield* (yield* bob.connect).pull(wide)
      assert.strictEqual(pulledWide.rounds, 4)
    }))

  it.scoped("a republish with one changed file sends only that blob and the trees on its path", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const alice = yield* makeClient(server)
      const session = yield* alice.connect
      const files = deepFiles(4, 5)
      const { tag: v1 } = yield* makeRelease(alice.store, "alice/pkg", "1.0.0", files)
      yield* session.push(v1)
      const changed = { ...files, sub: { ...(files["sub"] as object), "f0.txt": "changed\n" } }
      const { tag: v2 } = yield* makeRelease(alice.store, "alice/pkg", "1.0.1", changed)
      const pushed = yield* session.push(v2)
      assert.strictEqual(pushed.objects, 4) // tag, root tree, sub tree, the blob
    }))

  it.scoped("an interrupted push resumes: only the missing objects are sent", () =>
    Effect.gen(function* () {
      const server = yield* makeServer({ limits: { maxWantBatches: 1 } })
      const alice = yield* makeClient(server)
      const { tag } = yield* makeRelease(alice.store, "alice/big", "1.0.0", wideFiles(200))
      const total = yield* countReachable(alice.store, tag)
      // First attempt: interrupted once 80 objects have gone out.
      const first = yield* Effect.scoped(Effect.gen(function* () {
        const session = yield* alice.connect
        return yield* session.push(tag, {
          onProgress: (p) => (p.objects >= 80 ? Effect.interrupt : Effect.void)
        }).pipe(Effect.exit)
      }))
      assert.isTrue(first._tag === "Failure")
      assert.isTrue(Option.isNone(yield* server.registry.match(pkg("alice/big"), undefined)))
      const stored = total - (yield* server.store.missing(yield* alice.store.listObjects())).length
      assert.isAtLeast(stored, 60)
      // Second attempt: only what is missing.
      const session = yield* alice.connect
      const second = yield* session.push(tag)
      assert.strictEqual(second.status, "Sealed")
      assert.strictEqual(second.objects, 1 + total - stored) // the tag is always sent first
    }))

  it.scoped("an interrupted pull resumes from what is stored locally", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const alice = yield* makeClient(server)
      const { tag } = yield* makeRelease(alice.store, "alice/big", "1.0.0", wideFiles(150))
      const total = yield* countReachable(alice.store, tag)
      yield* (yield* alice.connect).push(tag)
      const bob = yield* makeClient(server, { maxWantBatches: 1 })
      const first = yield* Effect.scoped(Effect.gen(function* () {
        const session = yield* bob.connect
        return yield* session.pull(tag, { onProgress: (p) => (p.objects >= 70 ? Effect.interrupt : Effect.void) })
          .pipe(Effect.exit)
      }))
      assert.isTrue(first._tag === "Failure")
      const have = (yield* bob.store.listObjects()).length
      const second = yield* (yield* bob.connect).pull(tag)
      assert.strictEqual(second.objects, total - have)
    }))

  it.scoped("two clients pushing the same release at once: both confirmed, one seal", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const a = yield* makeClient(server)
      const b = yield* makeClient(server)
      const files = wideFiles(100)
      const { tag } = yield* makeRelease(a.store, "alice/pkg", "1.0.0", files)
      const { tag: same } = yield* makeRelease(b.store, "alice/pkg", "1.0.0", files)
      assert.strictEqual(tag, same)
      const sa = yield* a.connect
      const sb = yield* b.connect
      const [ra, rb] = yield* Effect.all([sa.push(tag), sb.push(tag)], { concurrency: 2 })
      assert.strictEqual(ra.status, "Sealed")
      assert.strictEqual(rb.status, "Sealed")
      assert.strictEqual((yield* server.registry.versions(pkg("alice/pkg"))).length, 1)
    }))

  it.scoped("two clients pushing different content for one version: one wins, the other gets a conflict", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const a = yield* makeClient(server)
      const b = yield* makeClient(server)
      const { tag: ta } = yield* makeRelease(a.store, "alice/pkg", "1.0.0", wideFiles(100, "a"))
      const { tag: tb } = yield* makeRelease(b.store, "alice/pkg", "1.0.0", wideFiles(100, "b"))
      const sa = yield* a.connect
      const sb = yield* b.connect
      const [ra, rb] = yield* Effect.all([Effect.either(sa.push(ta)), Effect.either(sb.push(tb))], { concurrency: 2 })
      const wins = [ra, rb].filter(Either.isRight)
      const losses = [ra, rb].filter(Either.isLeft)
      assert.strictEqual(wins.length, 1)
      assert.strictEqual(losses.length, 1)
      const loss = losses[0]!
      if (Either.isLeft(loss)) {
        assert.strictEqual(loss.left.reason, "Remote")
        assert.match(loss.left.detail, /already published/)
      }
      const sealed = yield* server.registry.match(pkg("alice/pkg"), undefined)
      assert.isTrue(Option.isSome(sealed))
      // Whatever won is complete.
      if (Option.isSome(sealed)) {
        assert.deepStrictEqual(yield* missingReachable(sealed.value.hash).pipe(Effect.provideService(ObjectStore, server.store)), [])
      }
    }))

  it.scoped("policy: Queued keeps the release unsealed under refs/upm/queue/…; Rejected is an error", () =>
    Effect.gen(function* () {
      const queued = yield* makeServer({
        policy: Layer.succeed(ProposalPolicy.ProposalPolicy, {
          propose: () => Effect.succeed({ _tag: "Queued" as const, message: "waiting for a moderator" })
        })
      })
      const a = yield* makeClient(queued)
      const { tag } = yield* makeRelease(a.store, "alice/pkg", "1.0.0", deepFiles(2))
      const r = yield* (yield* a.connect).push(tag)
      assert.strictEqual(r.status, "Queued")
      assert.strictEqual(r.message, "waiting for a moderator")
      assert.isTrue(Option.isNone(yield* queued.registry.match(pkg("alice/pkg"), undefined)))
      assert.deepStrictEqual(
        yield* queued.store.readRef(SyncServer.queueRefName({ name: pkg("alice/pkg"), version: ver("1.0.0") })),
        Option.some(tag)
      )

      const rejecting = yield* makeServer({
        policy: Layer.succeed(ProposalPolicy.ProposalPolicy, {
          propose: () => Effect.succeed({ _tag: "Rejected" as const, reason: "no new packages today" })
        })
      })
      const b = yield* makeClient(rejecting)
      yield* makeRelease(b.store, "alice/pkg", "1.0.0", deepFiles(2))
      const err = yield* (yield* b.connect).push(tag).pipe(Effect.flip)
      assert.strictEqual(err.reason, "Remote")
      assert.strictEqual(err.detail, "rejected: no new packages today")
    }))

  it.scoped("attach hands the conversation to the policy", () =>
    Effect.gen(function* () {
      const said: Array<string> = []
      const server = yield* makeServer({
        conversations: Layer.succeed(ProposalPolicy.Conversations, {
          attach: (token) =>
            Effect.succeed(token === "t0k3n"
              ? Option.some({ send: (m: string) => Effect.sync(() => void said.push(m)), receive: () => Effect.succeed("yes") })
              : Option.none())
        }),
        policy: Layer.succeed(ProposalPolicy.ProposalPolicy, {
          propose: (_release, conversation) =>
            conversation === undefined
              ? Effect.succeed({ _tag: "Rejected" as const, reason: "no conversation" })
              : Effect.as(conversation.send("hello"), { _tag: "Accepted" as const })
        })
      })
      const a = yield* makeClient(server)
      const { tag } = yield* makeRelease(a.store, "alice/pkg", "1.0.0", deepFiles(2))
      const session = yield* a.connect
      yield* session.attach("t0k3n")
      assert.strictEqual((yield* session.push(tag)).status, "Sealed")
      assert.deepStrictEqual(said, ["hello"])
      const bad = yield* (yield* a.connect).attach("nope").pipe(Effect.flip)
      assert.strictEqual(bad.detail, "unknown conversation token")
    }))

  it.scoped("progress is a stream of events ending with the result", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const a = yield* makeClient(server)
      const { tag } = yield* makeRelease(a.store, "alice/pkg", "1.0.0", wideFiles(50))
      const session = yield* a.connect
      const events = yield* SyncClient.withProgress((onProgress) => session.push(tag, { onProgress })).pipe(Stream.runCollect)
      const list = [...events]
      const last = list.at(-1)
      assert.strictEqual(last?._tag, "Done")
      const progress = list.filter((e) => e._tag === "Progress")
      assert.isAbove(progress.length, 0)
      const final = progress.at(-1)
      if (final?._tag === "Progress") assert.strictEqual(final.progress.objects, 50 + 4) // files, lib/, upm.json, root tree, tag
    }))

  it.scoped("the client refuses an object it did not ask for, and reports an unknown root", () =>
    Effect.gen(function* () {
      // A hostile server: answers the handshake, then sends a blob nobody asked for.
      const blob = new Uint8Array(Buffer.from("blob 3\0abc"))
      const hostile = {
        serve: () =>
          Stream.make(new Uint8Array(Buffer.from("lit!0\n")), new Uint8Array([0xc0 | blob.length]), blob)
            .pipe(Stream.concat(Stream.never))
      }
      const a = yield* makeClient(hostile)
      const err = yield* (yield* a.connect).pull(hashOf("blob", new Uint8Array([1]))).pipe(Effect.flip)
      assert.strictEqual(err.reason, "Unsolicited")
      assert.strictEqual(yield* a.store.has(sha1(blob)), false)

      const server = yield* makeServer()
      const b = yield* makeClient(server)
      const unknown = yield* (yield* b.connect).pull("0".repeat(40) as ObjectHash).pipe(Effect.flip)
      assert.strictEqual(unknown.reason, "Remote")
      assert.strictEqual(unknown.detail, `no such object ${"0".repeat(40)}`)
    }))
})

describe("protocol v2: the graph in one stream", () => {
  const v2 = { versions: [0, 2] }

  it.scoped("push and pull take one round trip each after the handshake, whatever the depth", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const alice = yield* makeClient(server, v2)
      const { tag } = yield* makeRelease(alice.store, "alice/deep", "1.0.0", deepFiles(10, 3))
      const total = yield* countReachable(alice.store, tag)
      const session = yield* alice.connect
      assert.strictEqual(session.version, 2)
      const pushed = yield* session.push(tag)
      // handshake, tag → !need, stream + ?verify → !conf: 3 round trips, no WANT.
      assert.deepStrictEqual([pushed.status, pushed.objects, pushed.wants], ["Sealed", total, 0])
      const bob = yield* makeClient(server, v2)
      const bobSession = yield* bob.connect
      const found = yield* bobSession.match(pkg("alice/deep"))
      assert.isTrue(Option.isSome(found))
      const pulled = yield* bobSession.pull(tag)
      // handshake, match, fetch: 3 round trips.
      assert.deepStrictEqual([pulled.objects, pulled.wants, pulled.rounds], [total, 0, 1])
      assert.deepStrictEqual(yield* missingReachable(tag).pipe(Effect.provideService(ObjectStore, bob.store)), [])
    }))

  it.scoped("a one-file republish sends only the blob and the trees on its path, both ways", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const alice = yield* makeClient(server, v2)
      const session = yield* alice.connect
      const files = deepFiles(4, 5)
      const { tag: v1tag } = yield* makeRelease(alice.store, "alice/pkg", "1.0.0", files)
      yield* session.push(v1tag)
      const changed = { ...files, sub: { ...(files["sub"] as object), "f0.txt": "changed\n" } }
      const { tag: v2tag } = yield* makeRelease(alice.store, "alice/pkg", "1.0.1", changed)
      const pushed = yield* session.push(v2tag)
      assert.deepStrictEqual([pushed.objects, pushed.wants], [4, 0]) // tag, root tree, sub tree, the blob

      const bob = yield* makeClient(server, v2)
      const bobSession = yield* bob.connect
      yield* bobSession.pull(v1tag)
      // Bob seals 1.0.0 locally (as an install does); localHaves names it for the upgrade.
      yield* Effect.orDie(bob.store.setRef(RefName.make("refs/tags/alice/pkg/v1.0.0"), Option.none(), v1tag))
      const haves = yield* Effect.orDie(SyncClient.localHaves(pkg("alice/pkg")).pipe(Effect.provideService(ObjectStore, bob.store)))
      assert.deepStrictEqual(haves, [v1tag])
      const upgrade = yield* bobSession.pull(v2tag, { haves })
      assert.deepStrictEqual([upgrade.objects, upgrade.wants], [4, 0])
      // Pushing a sealed tag again: confirmed at once.
      assert.deepStrictEqual([(yield* session.push(v2tag)).objects, (yield* session.push(v2tag)).status], [1, "Sealed"])
    }))

  it.scoped("an interrupted v2 push resumes: the server names only what it still needs", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const alice = yield* makeClient(server, v2)
      // Files of ~10 kB, so the client's 256 kB write buffer goes out several times before the interruption.
      const big = { lib: Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`f${i}.txt`, `${i} `.repeat(3000)])) }
      const { tag } = yield* makeRelease(alice.store, "alice/big", "1.0.0", big)
      const total = yield* countReachable(alice.store, tag)
      const first = yield* Effect.scoped(Effect.gen(function* () {
        const session = yield* alice.connect
        // Cut the connection once the server has stored some of what was sent (the rest is lost in flight).
        const serverHas = Effect.map(Effect.orDie(server.store.listObjects()), (all) => all.length)
        const cut = Effect.yieldNow().pipe(
          Effect.zipRight(serverHas),
          Effect.repeat({ until: (n) => n >= 30, times: 10_000 }),
          Effect.zipRight(Effect.interrupt)
        )
        return yield* session.push(tag, { onProgress: (p) => (p.objects >= 128 ? cut : Effect.void) })
          .pipe(Effect.exit)
      }))
      assert.isTrue(first._tag === "Failure")
      assert.isTrue(Option.isNone(yield* server.registry.match(pkg("alice/big"), undefined)))
      const stored = total - (yield* server.store.missing(yield* alice.store.listObjects())).length
      assert.isAtLeast(stored, 30)
      assert.isBelow(stored, total)
      const second = yield* (yield* alice.connect).push(tag)
      assert.strictEqual(second.status, "Sealed")
      assert.strictEqual(second.objects, 1 + total - stored)
    }))

  it.scoped("an interrupted v2 pull resumes from what is stored locally", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const alice = yield* makeClient(server, v2)
      const { tag } = yield* makeRelease(alice.store, "alice/big", "1.0.0", wideFiles(150))
      const total = yield* countReachable(alice.store, tag)
      yield* (yield* alice.connect).push(tag)
      const bob = yield* makeClient(server, v2)
      const first = yield* Effect.scoped(Effect.gen(function* () {
        const session = yield* bob.connect
        return yield* session.pull(tag, { onProgress: (p) => (p.objects >= 70 ? Effect.interrupt : Effect.void) })
          .pipe(Effect.exit)
      }))
      assert.isTrue(first._tag === "Failure")
      const have = (yield* bob.store.listObjects()).length
      assert.isAtLeast(have, 70)
      const second = yield* (yield* bob.connect).pull(tag)
      assert.deepStrictEqual([second.objects, second.wants], [total - have, 0])
    }))

  it.scoped("a v2 client talks v0 to a server that only speaks v0", () =>
    Effect.gen(function* () {
      const server = yield* makeServer({ versions: [0] })
      const alice = yield* makeClient(server, v2)
      const { tag } = yield* makeRelease(alice.store, "alice/pkg", "1.0.0", deepFiles(3))
      const session = yield* alice.connect
      assert.strictEqual(session.version, 0)
      assert.strictEqual((yield* session.push(tag)).status, "Sealed")
      const bob = yield* makeClient(server, v2)
      assert.isAbove((yield* (yield* bob.connect).pull(tag)).wants, 0)
    }))

  it.scoped("concurrent v2 pushes of different content for one version: one wins, the other gets a conflict", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const a = yield* makeClient(server, v2)
      const b = yield* makeClient(server, v2)
      const { tag: ta } = yield* makeRelease(a.store, "alice/pkg", "1.0.0", wideFiles(100, "a"))
      const { tag: tb } = yield* makeRelease(b.store, "alice/pkg", "1.0.0", wideFiles(100, "b"))
      const [ra, rb] = yield* Effect.all([Effect.either(Effect.flatMap(a.connect, (s) => s.push(ta))),
        Effect.either(Effect.flatMap(b.connect, (s) => s.push(tb)))], { concurrency: 2 })
      assert.strictEqual([ra, rb].filter(Either.isRight).length, 1)
      const loss = [ra, rb].find(Either.isLeft)
      if (loss !== undefined && Either.isLeft(loss)) assert.match(loss.left.detail, /already published/)
    }))
})
