import { assert, describe, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { ObjectStore } from "../../src/services/ObjectStore.js"
import * as OwnerChanges from "../../src/services/OwnerChanges.js"
import * as Owners from "../../src/services/Owners.js"
import { memoryKey, publicLine } from "./KeysFixtures.js"
import { makeClient, makeServer, rawSession } from "./SyncFixtures.js"

const alice = memoryKey("alice_ed25519")
const bob = memoryKey("bob_rsa3072")
const mallory = memoryKey("mallory_ed25519")
const TAGGER = "Alice <alice@example.com>"

describe("OwnerChanges (owner queries over the sync protocol)", () => {
  it.scoped("reads, claims, adds and removes keys and members through a v2 session", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const { connect } = yield* makeClient(server, { versions: [0, 2] })
      const session = yield* connect
      assert.isTrue(Option.isNone(yield* OwnerChanges.current(session, "alice")))

      const claimed = yield* OwnerChanges.change(session, alice, "alice", { op: "claim", key: publicLine(alice) }, TAGGER)
      assert.isTrue(Option.isNone(claimed.before))
      assert.deepStrictEqual(claimed.after.keys, [publicLine(alice)])
      const added = yield* OwnerChanges.change(session, alice, "alice", { op: "add-key", key: `${publicLine(bob)} bob@laptop` }, TAGGER)
      assert.strictEqual(added.after.seq, 1)
      assert.deepStrictEqual([...added.after.keys].sort(), [publicLine(alice), publicLine(bob)].sort())
      assert.deepStrictEqual(yield* OwnerChanges.current(session, "alice"), Option.some(added.after))

      // The byte form of the read (docs/protocol.md).
      const raw = yield* rawSession(server, ["lit?2\n", "?owner alice\n\n"])
      assert.strictEqual(raw, `lit!2\n!${OwnerChanges.formatState(Option.some(added.after))}\n\n`)
      assert.match(raw, /^lit!2\n!head [0-9a-f]{40} 1\nkey ssh-(ed25519|rsa) \S+\nkey ssh-(ed25519|rsa) \S+\n\n$/)

      // The added key may change the namespace too; the server's chain verifies from genesis.
      yield* OwnerChanges.change(session, mallory, "mallory", { op: "claim", key: publicLine(mallory) }, TAGGER)
      const member = yield* OwnerChanges.change(session, bob, "alice", { op: "add-member", member: "mallory" }, TAGGER)
      assert.deepStrictEqual(member.after.members, ["mallory"])
      const removed = yield* OwnerChanges.change(session, bob, "alice", { op: "remove-key", key: publicLine(alice) }, TAGGER)
      assert.deepStrictEqual(removed.after.keys, [publicLine(bob)])
      const owners = yield* Owners.make.pipe(Effect.provideService(ObjectStore, server.store))
      assert.deepStrictEqual((yield* owners.history("alice")).map((h) => h.record.change.op), ["claim", "add-key", "add-member", "remove-key"])
    }))

  it.scoped("a refused change comes back as the OwnersError it was, and ends the session", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const client = yield* makeClient(server, { versions: [0, 2] })
      const session = yield* client.connect
      yield* OwnerChanges.change(session, alice, "alice", { op: "claim", key: publicLine(alice) }, TAGGER)

      // A key that does not own the namespace.
      const notOwner = yield* Effect.flip(OwnerChanges.change(session, mallory, "alice", { op: "add-key", key: publicLine(mallory) }, TAGGER))
      assert.strictEqual(notOwner._tag, "OwnersError")
      assert.strictEqual(notOwner._tag === "OwnersError" ? notOwner.reason : "", "NotOwner")

      // A record built on a stale head: someone else changed the namespace in between.
      const fresh = yield* client.connect
      const stale = yield* OwnerChanges.current(fresh, "alice")
      const first = yield* Owners.makeChange(alice, "alice", stale, { op: "add-key", key: publicLine(bob) }, TAGGER)
      // built fine locally; only the server knows it is stale
      const second = yield* Owners.makeChange(alice, "alice", stale, { op: "add-key", key: publicLine(mallory) }, TAGGER)
      yield* OwnerChanges.submit(fresh, "alice", first.body)
      const conflict = yield* Effect.flip(OwnerChanges.submit(yield* client.connect, "alice", second.body))
      assert.strictEqual(conflict._tag === "OwnersError" ? conflict.reason : conflict._tag, "Conflict")

      // The last key can never be removed: refused before anything is sent.
      const solo = yield* client.connect
      yield* OwnerChanges.change(solo, mallory, "mallory", { op: "claim", key: publicLine(mallory) }, TAGGER)
      const last = yield* Effect.flip(OwnerChanges.change(solo, mallory, "mallory", { op: "remove-key", key: publicLine(mallory) }, TAGGER))
      assert.strictEqual(last._tag === "OwnersError" ? last.reason : last._tag, "Invalid")
      assert.match(last.message, /last key/)
    }))

  it.scoped("followChain: the current keys when the verified chain passes through a trusted key, else None", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      const client = yield* makeClient(server, { versions: [0, 2] })
      const session = yield* client.connect
      const follow = (trusted: ReadonlyArray<string>) =>
        OwnerChanges.followChain(session, "alice", trusted).pipe(Effect.provideService(ObjectStore, client.store))
      assert.isTrue(Option.isNone(yield* follow([publicLine(alice)]))) // no record yet
      yield* OwnerChanges.change(session, alice, "alice", { op: "claim", key: publicLine(alice) }, TAGGER)
      yield* OwnerChanges.change(session, alice, "alice", { op: "add-key", key: publicLine(bob) }, TAGGER)
      yield* OwnerChanges.change(session, bob, "alice", { op: "remove-key", key: publicLine(alice) }, TAGGER)
      // alice's key (trusted) added bob's, which then removed hers: bob's key is the one to trust now.
      assert.deepStrictEqual(yield* follow([`${publicLine(alice)} alice@old-laptop`]), Option.some([publicLine(bob)]))
      // A key the chain never held leads nowhere.
      assert.isTrue(Option.isNone(yield* follow([publicLine(mallory)])))
    }))

  it.scoped("v0 sessions do not know the owner queries; garbage records are refused", () =>
    Effect.gen(function* () {
      const server = yield* makeServer()
      assert.strictEqual(yield* rawSession(server, ["lit?0\n", "?owner alice\n\n"]), `lit!0\n!error unknown query "owner"\n\n`)
      assert.strictEqual(
        yield* rawSession(server, ["lit?2\n", "?owner-change alice not*base64\n\n"]),
        `lit!2\n!error owners Malformed: usage: owner-change <owner> <record, base64>\n\n`
      )
      assert.match(yield* rawSession(server, ["lit?2\n", `?owner-change alice ${Buffer.from("tag 1\0x").toString("base64")}\n\n`]), /^lit!2\n!error owners Malformed: /)
      assert.strictEqual(yield* rawSession(server, ["lit?2\n", "?owner Alice\n\n"]), `lit!2\n!error owners Invalid: bad owner name "Alice"\n\n`)
    }))
})
