/**
 * The server's check of a pushed release tag, and the threats it stops (TUF's threat model, applied).
 * Each threat is rejected with a VerificationError whose reason names it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, Layer, Option } from "effect"
import { execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { encodeTag, encodeTagPayload, encodeTree, hashOf, type Tag } from "../../src/domain/GitObject.js"
import { PackageName, releaseRefName, Version } from "../../src/domain/Package.js"
import { encodeReleaseMessage } from "../../src/domain/ReleaseMessage.js"
import * as Sshsig from "../../src/domain/Sshsig.js"
import type { SigningKey } from "../../src/services/Keys.js"
import * as ObjectStore from "../../src/services/ObjectStore.js"
import * as Owners from "../../src/services/Owners.js"
import * as Signer from "../../src/services/Signer.js"
import * as Verifier from "../../src/services/Verifier.js"
import { EMPTY_TREE, fixturePath, memoryKey, privateCopy, publicLine } from "./KeysFixtures.js"

const alice = memoryKey("alice_ed25519")
const bob = memoryKey("bob_rsa3072")
const mallory = memoryKey("mallory_ed25519")

const TestEnv = () => Verifier.layer.pipe(Layer.provideMerge(Owners.layer), Layer.provideMerge(ObjectStore.layerMemory))

const tagger = { name: "Tester", email: "t@test" }
const time = { seconds: 1_700_000_000 }

/** Signs a release over a tree holding one file with `content`, and stores the tree (not the tag). */
const release = (key: SigningKey, name: string, version: string, content = "hello\n") =>
  Effect.gen(function* () {
    const store = yield* ObjectStore.ObjectStore
    const blob = yield* store.put("blob", new TextEncoder().encode(content))
    const tree = yield* store.put("tree", encodeTree([{ mode: "100644", name: "f", hash: blob }]))
    return yield* Signer.signRelease(key, {
      tree, metadata: { name: PackageName.make(name), version: Version.make(version) }, tagger, time
    })
  })

/** What the push flow does: verify, store the tag, (policy accepts), seal. */
const publish = (signed: Signer.SignedTag) =>
  Effect.gen(function* () {
    const verifier = yield* Verifier.Verifier
    const verified = yield* verifier.verifyTag(signed.hash, signed.tag)
    yield* Effect.flatMap(ObjectStore.ObjectStore, (s) => s.put("tag", signed.body))
    yield* Verifier.sealRelease(verified)
    return verified
  })

/** The tag as pushed after tampering: its hash is recomputed, as the server computes it from the bytes. */
const verifyTampered = (tag: Tag) =>
  Effect.flatMap(Verifier.Verifier, (v) => Effect.flip(v.verifyTag(hashOf("tag", encodeTag(tag)), tag)))

const withSignature = (tag: Tag, signature: string | undefined): Tag => ({ ...tag, signature })

/** Re-armors a signature after changing its parts. */
const reSign = (armored: string, change: (s: Sshsig.SshSignature) => Sshsig.SshSignature) =>
  Sshsig.encode(change(Either.getOrThrow(Sshsig.decode(armored))))

describe("Verifier (real layer)", () => {
  it.effect("a fresh namespace is claimed by its first signer when the release is sealed, not before", () =>
    Effect.gen(function* () {
      const owners = yield* Owners.Owners
      const signed = yield* release(alice, "alice/greetings", "1.0.0")
      const verified = yield* Effect.flatMap(Verifier.Verifier, (v) => v.verifyTag(signed.hash, signed.tag))
      assert.isTrue(verified.claim)
      assert.strictEqual(verified.signer, alice.fingerprint)
      assert.strictEqual(verified.publicKey, publicLine(alice))
      assert.isTrue(Option.isNone(yield* owners.get("alice")), "verification writes nothing")
      yield* Effect.flatMap(ObjectStore.ObjectStore, (s) => s.put("tag", signed.body))
      yield* Verifier.sealRelease(verified)
      const state = yield* owners.get("alice")
      assert.deepStrictEqual(Option.map(state, (s) => s.keys), Option.some([publicLine(alice)]))
      const ref = yield* Effect.flatMap(ObjectStore.ObjectStore, (s) => s.readRef(ObjectStore.RefName.make(releaseRefName(verified.name, verified.version))))
      assert.deepStrictEqual(ref, Option.some(signed.hash))
      // The chain's first record points at the release tag, whose signature proves the claim.
      const history = yield* owners.history("alice")
      assert.strictEqual(history[0]?.record.change.op, "claim-by-release")
      const next = yield* publish(yield* release(alice, "alice/greetings", "1.1.0"))
      assert.isUndefined(next.claim)
    }).pipe(Effect.provide(TestEnv())))

  it.effect("threats: each is rejected with an error naming the reason", () =>
    Effect.gen(function* () {
      const good = yield* release(alice, "alice/greetings", "1.0.0")
      yield* publish(good)
      const t = good.tag
      const sig = t.signature ?? ""
      const dir = mkdtempSync(join(tmpdir(), "upm-verifier-"))
      writeFileSync(join(dir, "payload"), encodeTagPayload(t))
      execFileSync("ssh-keygen", ["-q", "-Y", "sign", "-f", privateCopy("ecdsa_p256"), "-n", "git", join(dir, "payload")], { stdio: "pipe" })
      const ecdsaSig = readFileSync(join(dir, "payload.sig"), "utf8")
      const forged = reSign(sig, (s) => {
        const bytes = Uint8Array.from(s.signature)
        bytes[5] = (bytes[5] ?? 0) ^ 0x40
        return { ...s, signature: bytes }
      })
      const notOwner = yield* release(mallory, "alice/greetings", "2.0.0")
      const republish = yield* release(alice, "alice/greetings", "1.0.0", "other content\n")
      const wrongNamespace = Effect.runSync(alice.sign("file", encodeTagPayload(t)))
      const mismatch = yield* Signer.signTag(alice, {
        object: t.object, type: "tree", tag: "alice/greetings/v1.0.1", tagger, time,
        message: encodeReleaseMessage({ name: PackageName.make("alice/greetings"), version: Version.make("1.0.0") })
      })

      const cases: Array<[string, Effect.Effect<Verifier.VerificationError, unknown, Verifier.Verifier>, Verifier.VerificationError["reason"]]> = [
        ["forged signature", verifyTampered(withSignature(t, forged)), "BadSignature"],
        ["signed by a key that does not own the namespace",
          Effect.flatMap(Verifier.Verifier, (v) => Effect.flip(v.verifyTag(notOwner.hash, notOwner.tag))), "NotOwner"],
        ["renamed to another package", verifyTampered({ ...t, tag: "alice/other/v1.0.0" }), "BadSignature"],
        ["renamed to another version", verifyTampered({ ...t, tag: "alice/greetings/v9.0.0" }), "BadSignature"],
        ["moved to another owner", verifyTampered({ ...t, tag: "mallory/greetings/v1.0.0" }), "BadSignature"],
        ["pointed at another tree", verifyTampered({ ...t, object: republish.tag.object }), "BadSignature"],
        ["republish of a version with other content",
          Effect.flatMap(Verifier.Verifier, (v) => Effect.flip(v.verifyTag(republish.hash, republish.tag))), "VersionExists"],
        ["unsigned", verifyTampered(withSignature(t, undefined)), "Unsigned"],
        ["malformed armor", verifyTampered(withSignature(t, sig.replace(Sshsig.END, "-----END PGP SIGNATURE-----"))), "MalformedSignature"],
        ["malformed blob", verifyTampered(withSignature(t, Sshsig.armor(new TextEncoder().encode("SSHSIG not really")))), "MalformedSignature"],
        ["wrong SSHSIG namespace", verifyTampered(withSignature(t, wrongNamespace)), "WrongNamespace"],
        ["unknown key type (ECDSA)", verifyTampered(withSignature(t, ecdsaSig)), "UnknownKeyType"],
        ["right bytes, wrong key", verifyTampered(withSignature(t, reSign(sig, (s) => ({ ...s, publicKey: mallory.publicKey })))), "BadSignature"],
        ["metadata disagreeing with the tag name",
          Effect.flatMap(Verifier.Verifier, (v) => Effect.flip(v.verifyTag(mismatch.hash, mismatch.tag))), "BadMetadata"],
        ["a hash that is not the tag's", Effect.flatMap(Verifier.Verifier, (v) => Effect.flip(v.verifyTag(notOwner.hash, t))), "MalformedSignature"]
      ]
      for (const [name, effect, reason] of cases) {
        const e = yield* effect
        assert.strictEqual(e.reason, reason, `${name}: ${e.detail}`)
        assert.isTrue(e.detail.length > 0)
      }
      // The same tag pushed again is fine (sealing is idempotent).
      const again = yield* publish(good)
      assert.strictEqual(again.tagHash, good.hash)
    }).pipe(Effect.provide(TestEnv())))

  it.effect("members of a shared namespace may publish in it; others may not", () =>
    Effect.gen(function* () {
      const owners = yield* Owners.Owners
      yield* owners.preseed([{ owner: "acme", keys: [publicLine(bob)] }, { owner: "alice", keys: [publicLine(alice)] }])
      const state = yield* Effect.map(owners.get("acme"), Option.getOrThrow)
      const change = yield* Owners.makeChange(bob, "acme", Option.some(state), { op: "add-member", member: "alice" })
      yield* owners.apply("acme", change.body)
      const byMember = yield* publish(yield* release(alice, "acme/tool", "1.0.0"))
      assert.strictEqual(byMember.via, "alice")
      const byOwner = yield* publish(yield* release(bob, "acme/tool", "1.0.1"))
      assert.isUndefined(byOwner.via)
      const outsider = yield* Effect.flip(publish(yield* release(mallory, "acme/tool", "1.0.2")))
      assert.strictEqual(outsider._tag === "VerificationError" && outsider.reason, "NotOwner")
      assert.deepStrictEqual([...(yield* owners.releaseKeys("acme"))].sort(), [publicLine(alice), publicLine(bob)].sort())
    }).pipe(Effect.provide(TestEnv())))

  it.effect("a key revoked while the release waited is refused at seal", () =>
    Effect.gen(function* () {
      const owners = yield* Owners.Owners
      yield* owners.preseed([{ owner: "alice", keys: [publicLine(alice), publicLine(bob)] }])
      const signed = yield* release(bob, "alice/greetings", "1.0.0")
      const verified = yield* Effect.flatMap(Verifier.Verifier, (v) => v.verifyTag(signed.hash, signed.tag))
      yield* Effect.flatMap(ObjectStore.ObjectStore, (s) => s.put("tag", signed.body))
      const state = yield* Effect.map(owners.get("alice"), Option.getOrThrow)
      const revoke = yield* Owners.makeChange(alice, "alice", Option.some(state), { op: "remove-key", key: publicLine(bob) })
      yield* owners.apply("alice", revoke.body)
      const e = yield* Effect.flip(Verifier.sealRelease(verified))
      assert.strictEqual(e._tag === "VerificationError" && e.reason, "NotOwner")
      const ref = yield* Effect.flatMap(ObjectStore.ObjectStore, (s) => s.readRef(ObjectStore.RefName.make(releaseRefName(verified.name, verified.version))))
      assert.isTrue(Option.isNone(ref), "nothing sealed")
    }).pipe(Effect.provide(TestEnv())))

  it.effect("two first signers race for a fresh namespace: the first seal wins, the other is NotOwner and not sealed", () =>
    Effect.gen(function* () {
      const verifier = yield* Verifier.Verifier
      const a = yield* release(alice, "alice/one", "1.0.0")
      const m = yield* release(mallory, "alice/two", "1.0.0")
      const va = yield* verifier.verifyTag(a.hash, a.tag)
      const vm = yield* verifier.verifyTag(m.hash, m.tag)
      assert.isTrue(va.claim && vm.claim)
      yield* Effect.flatMap(ObjectStore.ObjectStore, (s) => Effect.all([s.put("tag", a.body), s.put("tag", m.body)]))
      yield* Verifier.sealRelease(va)
      const e = yield* Effect.flip(Verifier.sealRelease(vm))
      assert.strictEqual(e._tag === "VerificationError" && e.reason, "NotOwner")
      const refs = yield* Effect.flatMap(ObjectStore.ObjectStore, (s) => s.listRefs("refs/tags/alice/"))
      assert.deepStrictEqual(refs.map((r) => r.name), ["refs/tags/alice/one/v1.0.0"])
    }).pipe(Effect.provide(TestEnv())))

  it.effect("sealing an incomplete graph claims nothing", () =>
    Effect.gen(function* () {
      const signed = yield* Signer.signRelease(alice, {
        tree: hashOf("tree", EMPTY_TREE), metadata: { name: PackageName.make("alice/x"), version: Version.make("1.0.0") }, tagger, time
      })
      const verified = yield* Effect.flatMap(Verifier.Verifier, (v) => v.verifyTag(signed.hash, signed.tag))
      yield* Effect.flatMap(ObjectStore.ObjectStore, (s) => s.put("tag", signed.body))
      const e = yield* Effect.flip(Verifier.sealRelease(verified))
      assert.strictEqual(e._tag, "IncompleteGraph")
      assert.isTrue(Option.isNone(yield* Effect.flatMap(Owners.Owners, (o) => o.get("alice"))))
    }).pipe(Effect.provide(TestEnv())))

  it.effect("a namespace sealed without a claim is claimed for its earliest sealed release's signer, not the next comer", () =>
    Effect.gen(function* () {
      const store = yield* ObjectStore.ObjectStore
      // A flow that sealed with plain sealRef and never claimed.
      const early = yield* Signer.signRelease(alice, {
        tree: yield* store.put("tree", EMPTY_TREE), metadata: { name: PackageName.make("alice/old"), version: Version.make("1.0.0") },
        tagger, time: { seconds: 1_000 }
      })
      const later = yield* Signer.signRelease(bob, {
        tree: yield* store.put("tree", EMPTY_TREE), metadata: { name: PackageName.make("alice/old"), version: Version.make("1.1.0") },
        tagger, time: { seconds: 2_000 }
      })
      for (const s of [early, later]) {
        yield* store.put("tag", s.body)
        yield* ObjectStore.sealRef(ObjectStore.RefName.make(releaseRefName(PackageName.make("alice/old"), Version.make(s === early ? "1.0.0" : "1.1.0"))), s.hash)
      }
      const attempt = yield* release(mallory, "alice/new", "1.0.0")
      const e = yield* Effect.flip(Effect.flatMap(Verifier.Verifier, (v) => v.verifyTag(attempt.hash, attempt.tag)))
      assert.strictEqual(e.reason, "NotOwner")
      const state = yield* Effect.flatMap(Owners.Owners, (o) => o.get("alice"))
      assert.deepStrictEqual(Option.map(state, (s) => s.keys), Option.some([publicLine(alice)]))
      // authorizeSeal is the ownership half for flows that write the ref themselves.
      const byAlice = yield* release(alice, "alice/new", "1.0.0")
      const verified = yield* Effect.flatMap(Verifier.Verifier, (v) => v.verifyTag(byAlice.hash, byAlice.tag))
      yield* Verifier.authorizeSeal(verified)
    }).pipe(Effect.provide(TestEnv())))
})
