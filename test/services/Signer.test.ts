import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, TestClock } from "effect"
import { decodeTag, encodeTree, hashOf } from "../../src/domain/GitObject.js"
import { PackageName, Range, Version } from "../../src/domain/Package.js"
import { decodeReleaseMessage, encodeReleaseMessage } from "../../src/domain/ReleaseMessage.js"
import * as Sshsig from "../../src/domain/Sshsig.js"
import * as Signer from "../../src/services/Signer.js"
import { memoryKey } from "./KeysFixtures.js"

const alice = memoryKey("alice_ed25519")
const tree = hashOf("tree", encodeTree([]))
const metadata = {
  name: PackageName.make("alice/greetings"),
  version: Version.make("1.2.0"),
  description: "Says hello\nin many languages",
  dependencies: { [PackageName.make("bob/colors")]: Range.make("^2.0.0") }
}

describe("Signer", () => {
  it.effect("lays the tag out as git tag -s does, signature right after the message", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(1_700_000_123_456)
      const signed = yield* Signer.signRelease(alice, { tree, metadata, tagger: { name: "Alice A.", email: "alice@test" } })
      const text = new TextDecoder().decode(signed.body)
      const expectedHead =
        `object ${tree}\ntype tree\ntag alice/greetings/v1.2.0\ntagger Alice A. <alice@test> 1700000123 +0000\n\n` +
        `alice/greetings 1.2.0: Says hello\n\n` +
        `{"upm":1,"name":"alice/greetings","version":"1.2.0","description":"Says hello\\nin many languages","dependencies":{"bob/colors":"^2.0.0"}}\n` +
        `-----BEGIN SSH SIGNATURE-----\n`
      assert.isTrue(text.startsWith(expectedHead), text)
      assert.isTrue(text.endsWith("-----END SSH SIGNATURE-----\n"))
      const decoded = Either.getOrThrow(decodeTag(signed.body))
      assert.deepStrictEqual(decoded, signed.tag)
      assert.strictEqual(signed.hash, hashOf("tag", signed.body))
      assert.deepStrictEqual(Either.getOrThrow(decodeReleaseMessage(decoded.message)), { upm: 1, ...metadata })
      assert.isTrue(Either.isRight(Sshsig.verify(decoded.signature ?? "", new TextEncoder().encode(text.slice(0, text.indexOf("-----BEGIN"))), "git")))
    }))

  it.effect("writes time zones as git does and refuses bad taggers and messages", () =>
    Effect.gen(function* () {
      assert.strictEqual(yield* Signer.taggerLine({ name: "A", email: "a@b" }, { seconds: 5, offsetMinutes: -330 }), "A <a@b> 5 -0530")
      assert.strictEqual(yield* Signer.taggerLine({ name: "A", email: "a@b" }, { seconds: 5, offsetMinutes: 60 }), "A <a@b> 5 +0100")
      for (const who of [{ name: "A <x>", email: "a@b" }, { name: "A", email: "a>b" }, { name: "", email: "a@b" }, { name: "A\nB", email: "a@b" }]) {
        const e = yield* Effect.flip(Signer.taggerLine(who, { seconds: 1 }))
        assert.strictEqual(e.reason, "BadTagger")
      }
      const badMessage = yield* Effect.flip(Signer.signTag(alice, {
        object: tree, type: "tree", tag: "x", tagger: { name: "A", email: "a@b" }, time: { seconds: 1 },
        message: "hi\n-----BEGIN SSH SIGNATURE-----\nfake\n"
      }))
      assert.strictEqual(badMessage._tag === "SignerError" && badMessage.reason, "BadMessage")
    }))

  it("release messages round-trip and bad metadata is refused with a reason", () => {
    const message = encodeReleaseMessage({ name: PackageName.make("a/b"), version: Version.make("0.1.0") })
    assert.strictEqual(message, `a/b 0.1.0\n\n{"upm":1,"name":"a/b","version":"0.1.0"}\n`)
    for (const bad of [
      "no metadata\n",
      "x\n\n{\"upm\":2,\"name\":\"a/b\",\"version\":\"0.1.0\"}\n",
      "x\n\n{\"upm\":1,\"name\":\"a/b\",\"version\":\"0.1.0\",\"dependencies\":{\"NOT A NAME\":\"^1\"}}\n",
      "x\n\n{\"upm\":1,\"name\":\"a/b\",\"version\":\"01.0.0\"}\n",
      "x\n\n{\n\"upm\":1}\n"
    ]) {
      assert.isTrue(Either.isLeft(decodeReleaseMessage(bad)), bad)
    }
  })
})
