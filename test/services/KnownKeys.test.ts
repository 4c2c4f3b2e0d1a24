import { assert, describe, it } from "@effect/vitest"
import { NodeContext } from "@effect/platform-node"
import { Effect, Layer, Option } from "effect"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { encodeTag, encodeTree, hashOf } from "../../src/domain/GitObject.js"
import { PackageName, Version } from "../../src/domain/Package.js"
import * as KnownKeys from "../../src/services/KnownKeys.js"
import * as Signer from "../../src/services/Signer.js"
import { memoryKey, publicLine } from "./KeysFixtures.js"

const alice = memoryKey("alice_ed25519")
const bob = memoryKey("bob_rsa3072")
const mallory = memoryKey("mallory_ed25519")
const tree = hashOf("tree", encodeTree([]))

const release = (key: typeof alice, version: string, name = "alice/greetings") =>
  Signer.signRelease(key, {
    tree, metadata: { name: PackageName.make(name), version: Version.make(version) },
    tagger: { name: "A", email: "a@test" }, time: { seconds: 1_700_000_000 }
  })

const pull = (signed: Signer.SignedTag, serverKeys: ReadonlyArray<string>, pin?: KnownKeys.Pin) =>
  KnownKeys.verifyRelease({ tagHash: signed.hash, tag: signed.tag, serverKeys, ...(pin === undefined ? {} : { pin }) })

describe("KnownKeys (client-side verification)", () => {
  it.effect("trusts on first use, then refuses a changed key loudly until accepted", () =>
    Effect.gen(function* () {
      const first = yield* pull(yield* release(alice, "1.0.0"), [publicLine(alice)])
      assert.strictEqual(first.trust._tag, "FirstUse")
      const again = yield* pull(yield* release(alice, "1.1.0"), [publicLine(alice)])
      assert.strictEqual(again.trust._tag, "Known")
      // The server now says mallory's key owns alice (compromised server, or a real rotation).
      const changed = yield* Effect.flip(pull(yield* release(mallory, "1.2.0"), [publicLine(mallory)]))
      assert.strictEqual(changed._tag === "VerificationError" && changed.reason, "KeyChanged")
      assert.match(changed.message, /HAS CHANGED.*upm trust alice/s)
      yield* Effect.flatMap(KnownKeys.KnownKeys, (k) => k.accept("alice", [publicLine(mallory)]))
      const accepted = yield* pull(yield* release(mallory, "1.2.0"), [publicLine(mallory)])
      assert.strictEqual(accepted.trust._tag, "Known")
    }).pipe(Effect.provide(KnownKeys.layerMemory())))

  it.effect("refuses a signer the server does not list, and the server-side threats too", () =>
    Effect.gen(function* () {
      const notListed = yield* Effect.flip(pull(yield* release(mallory, "1.0.0"), [publicLine(alice)]))
      assert.strictEqual(notListed._tag === "VerificationError" && notListed.reason, "NotOwner")
      const known = yield* KnownKeys.KnownKeys
      const direct = yield* Effect.flip(known.check("alice", mallory.publicKey, [publicLine(alice)]))
      assert.strictEqual(direct._tag === "VerificationError" && direct.reason, "NotOwner")
      assert.isTrue(Option.isNone(yield* known.get("alice")), "a refused first use pins nothing")
      const signed = yield* release(alice, "1.0.0")
      const bare = { ...signed.tag, signature: undefined }
      const unsigned = yield* Effect.flip(KnownKeys.verifyRelease({ tagHash: hashOf("tag", encodeTag(bare)), tag: bare, serverKeys: [publicLine(alice)] }))
      assert.strictEqual(unsigned._tag === "VerificationError" && unsigned.reason, "Unsigned")
      const renamed = { ...signed.tag, tag: "alice/greetings/v9.9.9" }
      const moved = yield* Effect.flip(KnownKeys.verifyRelease({ tagHash: hashOf("tag", encodeTag(renamed)), tag: renamed, serverKeys: [publicLine(alice)] }))
      assert.strictEqual(moved._tag === "VerificationError" && moved.reason, "BadSignature")
      const wrongHash = yield* Effect.flip(KnownKeys.verifyRelease({ tagHash: hashOf("blob", new Uint8Array()), tag: signed.tag, serverKeys: [publicLine(alice)] }))
      assert.strictEqual(wrongHash._tag === "VerificationError" && wrongHash.reason, "MalformedSignature")
    }).pipe(Effect.provide(KnownKeys.layerMemory())))

  it.effect("checks the lockfile pin: rollback and substitution are refused, upgrades pass", () =>
    Effect.gen(function* () {
      const v2 = yield* release(bob, "2.0.0")
      const pin: KnownKeys.Pin = { name: PackageName.make("alice/greetings"), version: Version.make("2.0.0"), tagHash: v2.hash }
      const keys = [publicLine(bob)]
      yield* pull(v2, keys, pin)
      const rollback = yield* Effect.flip(pull(yield* release(bob, "1.9.0"), keys, pin))
      assert.strictEqual(rollback._tag === "VerificationError" && rollback.reason, "Rollback")
      const substituted = yield* Effect.flip(pull(yield* Signer.signRelease(bob, {
        tree: hashOf("tree", encodeTree([{ mode: "100644", name: "evil", hash: tree }])),
        metadata: { name: PackageName.make("alice/greetings"), version: Version.make("2.0.0") },
        tagger: { name: "A", email: "a@test" }, time: { seconds: 1_700_000_000 }
      }), keys, pin))
      assert.strictEqual(substituted._tag === "VerificationError" && substituted.reason, "PinMismatch")
      yield* pull(yield* release(bob, "2.1.0"), keys, pin)
    }).pipe(Effect.provide(KnownKeys.layerMemory())))

  it.effect("keeps pins in a JSON file, and reports a damaged file", () =>
    Effect.gen(function* () {
      const dir = mkdtempSync(join(tmpdir(), "upm-known-"))
      const file = join(dir, "sub", "known_keys.json")
      const layer = KnownKeys.layer(file).pipe(Layer.provide(NodeContext.layer))
      yield* pull(yield* release(alice, "1.0.0"), [`${publicLine(alice)} alice@laptop`]).pipe(Effect.provide(layer))
      const saved = JSON.parse(readFileSync(file, "utf8"))
      assert.deepStrictEqual(saved, { version: 1, namespaces: { alice: [publicLine(alice)] } })
      const reloaded = yield* Effect.flatMap(KnownKeys.KnownKeys, (k) => k.get("alice")).pipe(Effect.provide(layer))
      assert.deepStrictEqual(reloaded, Option.some([publicLine(alice)]))
      writeFileSync(file, "{ not json")
      const damaged = yield* Effect.flip(Effect.flatMap(KnownKeys.KnownKeys, (k) => k.get("alice")).pipe(Effect.provide(layer)))
      assert.strictEqual(damaged.reason, "Malformed")
      assert.include(damaged.message, file)
    }))
})
