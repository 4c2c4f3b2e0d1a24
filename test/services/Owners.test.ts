import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, Layer, Option } from "effect"
import { decodeTag, encodeTag } from "../../src/domain/GitObject.js"
import * as ObjectStore from "../../src/services/ObjectStore.js"
import * as Owners from "../../src/services/Owners.js"
import { memoryKey, publicLine } from "./KeysFixtures.js"

const alice = memoryKey("alice_ed25519")
const bob = memoryKey("bob_rsa3072")
const mallory = memoryKey("mallory_ed25519")

const TestEnv = () => Owners.layer.pipe(Layer.provideMerge(ObjectStore.layerMemory))

const current = (owner: string) => Effect.flatMap(Owners.Owners, (o) => o.get(owner))

/** Builds, signs and applies a change against the namespace's current state. */
const change = (key: typeof alice, owner: string, c: Owners.Change) =>
  Effect.gen(function* () {
    const owners = yield* Owners.Owners
    const made = yield* Owners.makeChange(key, owner, yield* owners.get(owner), c)
    return yield* owners.apply(owner, made.body)
  })

describe("Owners", () => {
  it.effect("claim, add a key, rotate, and keep the chain verifiable", () =>
    Effect.gen(function* () {
      const owners = yield* Owners.Owners
      const claimed = yield* change(alice, "alice", { op: "claim", key: publicLine(alice) })
      assert.deepStrictEqual(claimed.keys, [publicLine(alice)])
      yield* change(alice, "alice", { op: "add-key", key: `${publicLine(bob)} bob@laptop` })
      // Rotation: the new key removes the old one; the namespace stays.
      const rotated = yield* change(bob, "alice", { op: "remove-key", key: publicLine(alice) })
      assert.deepStrictEqual(rotated.keys, [publicLine(bob)])
      assert.strictEqual(rotated.seq, 2)
      const auth = yield* owners.authorize("alice", alice.publicKey)
      assert.strictEqual(auth._tag, "Denied")
      assert.strictEqual((yield* owners.authorize("alice", bob.publicKey))._tag, "Owner")
      assert.strictEqual((yield* owners.authorize("nobody", bob.publicKey))._tag, "Fresh")
      const history = yield* owners.history("alice")
      assert.deepStrictEqual(history.map((h) => h.record.change.op), ["claim", "add-key", "remove-key"])
      // The records are git tags, stored like any object.
      const head = yield* Effect.flatMap(ObjectStore.ObjectStore, (s) => s.readRef(Owners.ownersRefName("alice")))
      assert.deepStrictEqual(Option.map(head, () => true), Option.some(true))
    }).pipe(Effect.provide(TestEnv())))

  it.effect("refuses changes by non-owners, stale heads, unsigned records and lockouts", () =>
    Effect.gen(function* () {
      const owners = yield* Owners.Owners
      yield* change(alice, "alice", { op: "claim", key: publicLine(alice) })
      const state = yield* Effect.map(current("alice"), Option.getOrThrow)

      const byMallory = yield* Effect.flip(change(mallory, "alice", { op: "add-key", key: publicLine(mallory) }))
      assert.strictEqual(byMallory.reason, "NotOwner")

      const lastKey = yield* Effect.flip(change(alice, "alice", { op: "remove-key", key: publicLine(alice) }))
      assert.strictEqual(lastKey.reason, "Invalid")
      assert.match(lastKey.detail, /last key/)

      const first = yield* Owners.makeChange(alice, "alice", Option.some(state), { op: "add-key", key: publicLine(bob) })
      const second = yield* Owners.makeChange(alice, "alice", Option.some(state), { op: "add-key", key: publicLine(mallory) })
      yield* owners.apply("alice", first.body)
      const stale = yield* Effect.flip(owners.apply("alice", second.body))
      assert.strictEqual(stale.reason, "Conflict")

      const now = yield* Effect.map(current("alice"), Option.getOrThrow)
      const signed = yield* Owners.makeChange(alice, "alice", Option.some(now), { op: "add-key", key: publicLine(mallory) })
      const tag = Either.getOrThrow(decodeTag(signed.body))
      const unsigned = yield* Effect.flip(owners.apply("alice", encodeTag({ ...tag, signature: undefined })))
      assert.strictEqual(unsigned.reason, "Unsigned")
      // Alice's signature over another change does not carry over to this one.
      const otherChange = encodeTag({ ...tag, message: tag.message.replace(publicLine(mallory), publicLine(bob)) })
      const reused = yield* Effect.flip(owners.apply("alice", otherChange))
      assert.include(["BadSignature", "Invalid"], reused.reason)

      const claimTaken = yield* Effect.flip(change(mallory, "alice", { op: "claim", key: publicLine(mallory) }))
      assert.strictEqual(claimTaken.reason, "Invalid")
      const claimOther = yield* Effect.flip(Effect.gen(function* () {
        const made = yield* Owners.makeChange(mallory, "bob", Option.none(), { op: "claim", key: publicLine(alice) })
        return yield* owners.apply("bob", made.body)
      }))
      assert.strictEqual(claimOther.reason, "NotOwner", "a claim is signed by the claimed key")
      const wrongOwner = yield* Effect.flip(Effect.gen(function* () {
        const made = yield* Owners.makeChange(mallory, "mallory", Option.none(), { op: "claim", key: publicLine(mallory) })
        return yield* owners.apply("eve", made.body)
      }))
      assert.strictEqual(wrongOwner.reason, "Malformed")
    }).pipe(Effect.provide(TestEnv())))

  it.effect("members must exist; only the namespace's own keys change it", () =>
    Effect.gen(function* () {
      yield* change(bob, "acme", { op: "claim", key: publicLine(bob) })
      const missing = yield* Effect.flip(change(bob, "acme", { op: "add-member", member: "alice" }))
      assert.strictEqual(missing.reason, "Invalid")
      yield* change(alice, "alice", { op: "claim", key: publicLine(alice) })
      const withMember = yield* change(bob, "acme", { op: "add-member", member: "alice" })
      assert.deepStrictEqual(withMember.members, ["alice"])
      const byMember = yield* Effect.flip(change(alice, "acme", { op: "add-key", key: publicLine(alice) }))
      assert.strictEqual(byMember.reason, "NotOwner")
      const removed = yield* change(bob, "acme", { op: "remove-member", member: "alice" })
      assert.deepStrictEqual(removed.members, [])
    }).pipe(Effect.provide(TestEnv())))

  it.effect("preseeds from the operator's file without touching claimed namespaces", () =>
    Effect.gen(function* () {
      const owners = yield* Owners.Owners
      yield* change(mallory, "mallory", { op: "claim", key: publicLine(mallory) })
      const json = JSON.stringify({ owners: { alice: { keys: [publicLine(alice)] }, mallory: { keys: [publicLine(bob)] } } })
      const fromJson = Either.getOrThrow(Owners.parsePreseed("owners.json", json))
      const report = yield* owners.preseed(fromJson)
      assert.deepStrictEqual(report, { written: ["alice"], skipped: ["mallory"] })
      assert.strictEqual((yield* owners.authorize("mallory", mallory.publicKey))._tag, "Owner")
      const lines = `# operator seed\nbob ${publicLine(bob)} bob@work\nbob ${publicLine(alice)}\n`
      const fromLines = Either.getOrThrow(Owners.parsePreseed("allowed_signers", lines))
      yield* owners.preseed(fromLines)
      assert.deepStrictEqual(Option.map(yield* current("bob"), (s) => s.keys.length), Option.some(2))
      const history = yield* owners.history("bob")
      assert.strictEqual(history[0]?.record.change.op, "preseed")
      // A preseed record cannot be pushed by a client.
      const bad = Owners.parsePreseed("x", "bob ssh-dss AAAA")
      assert.isTrue(Either.isLeft(bad) && /line 1/.test(bad.left.detail))
      assert.isTrue(Either.isLeft(Owners.parsePreseed("x", `{"owners":{"Bad Name":{"keys":[]}}}`)))
    }).pipe(Effect.provide(TestEnv())))

  it.effect("history detects a record that was swapped in the store", () =>
    Effect.gen(function* () {
      const store = yield* ObjectStore.ObjectStore
      yield* change(alice, "alice", { op: "claim", key: publicLine(alice) })
      yield* change(alice, "alice", { op: "add-key", key: publicLine(bob) })
      const head = Option.getOrThrow(yield* store.readRef(Owners.ownersRefName("alice")))
      const tag = Either.getOrThrow(decodeTag((yield* store.get(head)).body))
      // An attacker with store access rewrites the head to add their key, keeping alice's signature.
      const forged = encodeTag({ ...tag, message: tag.message.replace(publicLine(bob), publicLine(mallory)) })
      const forgedHash = yield* store.put("tag", forged)
      yield* store.setRef(Owners.ownersRefName("alice"), Option.some(head), forgedHash)
      const e = yield* Effect.flip(Effect.flatMap(Owners.Owners, (o) => o.history("alice")))
      assert.include(["BadSignature", "Invalid"], e.reason)
    }).pipe(Effect.provide(TestEnv())))
})
