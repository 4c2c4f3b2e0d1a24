import { assert, describe, it } from "@effect/vitest"
import { Either, FastCheck } from "effect"
import { execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createHash } from "node:crypto"
import { fingerprint, parsePublicKeyLine, wireString } from "../../src/domain/SshKey.js"
import * as Sshsig from "../../src/domain/Sshsig.js"
import { fixturePath, memoryKey, privateCopy } from "../services/KeysFixtures.js"
import { Effect } from "effect"

const alice = memoryKey("alice_ed25519")
const bob = memoryKey("bob_rsa3072")
const mallory = memoryKey("mallory_ed25519")
const message = new TextEncoder().encode("object 4b825dc642cb6eb9a060e54bf8d69288fbee4904\ntype tree\n")

const signed = (key = alice, namespace = "git", bytes = message) => Effect.runSync(key.sign(namespace, bytes))

const reasonOf = <A>(result: Either.Either<A, Sshsig.SshsigError>) =>
  Either.isLeft(result) ? result.left.reason : "accepted"

/** Builds an SSHSIG blob field by field, for malformed cases. */
const craft = (fields: {
  magic?: string
  version?: number
  key?: Uint8Array
  namespace?: string
  reserved?: string
  hash?: string
  algorithm?: string
  signature?: Uint8Array
  trailing?: Uint8Array
}) => {
  const good = Either.getOrThrow(Sshsig.dearmor(signed()))
  const base = Either.getOrThrow(Sshsig.decodeBlob(good))
  const version = Buffer.alloc(4)
  version.writeUInt32BE(fields.version ?? 1)
  return Sshsig.armor(Buffer.concat([
    Buffer.from(fields.magic ?? "SSHSIG"),
    version,
    wireString(fields.key ?? base.publicKey.blob),
    wireString(fields.namespace ?? "git"),
    wireString(fields.reserved ?? ""),
    wireString(fields.hash ?? "sha512"),
    wireString(Buffer.concat([wireString(fields.algorithm ?? "ssh-ed25519"), wireString(fields.signature ?? base.signature)])),
    fields.trailing ?? new Uint8Array()
  ]))
}

const tmp = () => mkdtempSync(join(tmpdir(), "upm-sshsig-"))

describe("Sshsig", () => {
  it("signs and verifies with ed25519 and RSA", () => {
    for (const key of [alice, bob]) {
      const result = Sshsig.verify(signed(key), message, "git")
      assert.isTrue(Either.isRight(result))
      if (Either.isRight(result)) assert.strictEqual(fingerprint(result.right.publicKey), key.fingerprint)
    }
    const rsa = Either.getOrThrow(Sshsig.decode(signed(bob)))
    assert.strictEqual(rsa.signatureAlgorithm, "rsa-sha2-512")
    assert.strictEqual(rsa.hashAlgorithm, "sha512")
  })

  it("armors as ssh-keygen does: 70-column lines and a trailing newline", () => {
    const armored = signed(bob)
    const lines = armored.split("\n")
    assert.strictEqual(lines[0], Sshsig.BEGIN)
    assert.strictEqual(lines.at(-2), Sshsig.END)
    assert.strictEqual(lines.at(-1), "")
    const body = lines.slice(1, -2)
    assert.isTrue(body.slice(0, -1).every((l) => l.length === 70))
    assert.isTrue((body.at(-1) ?? "").length <= 70)
  })

  it("is byte-identical to ssh-keygen for ed25519 (deterministic signatures)", () => {
    const dir = tmp()
    writeFileSync(join(dir, "m"), message)
    execFileSync("ssh-keygen", ["-q", "-Y", "sign", "-f", privateCopy("alice_ed25519"), "-n", "git", join(dir, "m")], { stdio: "pipe" })
    assert.strictEqual(readFileSync(join(dir, "m.sig"), "utf8"), signed(alice))
  })

  it("verifies what ssh-keygen -Y sign made (ed25519 and RSA), and ssh-keygen verifies ours", () => {
    const dir = tmp()
    writeFileSync(join(dir, "m"), message)
    for (const [name, key] of [["alice_ed25519", alice], ["bob_rsa3072", bob]] as const) {
      execFileSync("ssh-keygen", ["-q", "-Y", "sign", "-f", privateCopy(name), "-n", "git", join(dir, "m")], { stdio: "pipe" })
      const theirs = readFileSync(join(dir, "m.sig"), "utf8")
      assert.strictEqual(reasonOf(Sshsig.verify(theirs, message, "git")), "accepted", name)
      writeFileSync(join(dir, "allowed"), `me ${readFileSync(fixturePath(`${name}.pub`), "utf8")}`)
      writeFileSync(join(dir, "ours.sig"), signed(key))
      const out = execFileSync("ssh-keygen", ["-Y", "verify", "-f", join(dir, "allowed"), "-I", "me", "-n", "git", "-s", join(dir, "ours.sig")], { input: message, stdio: "pipe" })
      assert.match(out.toString(), /Good "git" signature for me/)
      execFileSync("rm", ["-f", join(dir, "m.sig")])
    }
  })

  it("rejects each kind of bad signature with its reason", () => {
    const good = signed()
    const raw = Either.getOrThrow(Sshsig.decode(good))
    const forged = Uint8Array.from(raw.signature)
    forged[10] = (forged[10] ?? 0) ^ 1
    const ecdsaLine = readFileSync(fixturePath("ecdsa_p256.pub"), "utf8").split(" ")[1] ?? ""
    const cases: Array<[string, string, Uint8Array?]> = [
      [good.replace(Sshsig.END, ""), "MalformedArmor"],
      [good + "junk\n", "MalformedArmor"],
      [good.replace(/\n[A-Za-z0-9+/]{10}/, "\n**********"), "MalformedArmor"],
      ["-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n", "MalformedArmor"],
      [`${Sshsig.BEGIN}\n${"A".repeat(70)}\n`.repeat(300), "TooLarge"],
      [craft({ magic: "SSHSIH" }), "BadMagic"],
      [craft({ version: 2 }), "UnsupportedVersion"],
      [craft({ reserved: "x" }), "NonEmptyReserved"],
      [craft({ hash: "sha1" }), "UnsupportedHash"],
      [craft({ algorithm: "rsa-sha2-512" }), "AlgorithmMismatch"],
      [craft({ trailing: new Uint8Array([0]) }), "MalformedBlob"],
      [craft({ signature: raw.signature.subarray(0, 63) }), "MalformedBlob"],
      [craft({ key: Buffer.from(ecdsaLine, "base64") }), "UnknownKeyType"],
      [craft({ namespace: "file" }), "WrongNamespace"],
      [craft({ signature: forged }), "BadSignature"],
      // right bytes, wrong key: alice's signature presented with mallory's key
      [craft({ key: mallory.publicKey.blob }), "BadSignature"],
      [good, "BadSignature", new TextEncoder().encode("object 0000")]
    ]
    for (const [armored, reason, bytes] of cases) {
      assert.strictEqual(reasonOf(Sshsig.verify(armored, bytes ?? message, "git")), reason, reason)
    }
  })

  it("refuses ssh-rsa (SHA-1) signatures and RSA keys under 2048 bits", () => {
    const rsa = Either.getOrThrow(Sshsig.decode(signed(bob)))
    const sha1 = Sshsig.armor(Buffer.concat([
      Buffer.from("SSHSIG"), Buffer.from([0, 0, 0, 1]), wireString(rsa.publicKey.blob), wireString("git"),
      wireString(""), wireString("sha512"), wireString(Buffer.concat([wireString("ssh-rsa"), wireString(rsa.signature)]))
    ]))
    assert.strictEqual(reasonOf(Sshsig.verify(sha1, message, "git")), "WeakAlgorithm")
    const weak = parsePublicKeyLine(readFileSync(fixturePath("weak_rsa1024.pub"), "utf8"))
    assert.isTrue(Either.isLeft(weak) && weak.left.reason === "WeakKey")
    const weakBlob = Buffer.from(readFileSync(fixturePath("weak_rsa1024.pub"), "utf8").split(" ")[1] ?? "", "base64")
    assert.strictEqual(reasonOf(Sshsig.verify(craft({ key: weakBlob, algorithm: "rsa-sha2-512" }), message, "git")), "WeakKey")
  })

  it("never throws on truncations and random bytes", () => {
    const blob = Either.getOrThrow(Sshsig.dearmor(signed(bob)))
    for (let n = 0; n < blob.length; n += 7) {
      const r = Sshsig.decodeBlob(blob.subarray(0, n))
      assert.isTrue(Either.isLeft(r))
    }
    FastCheck.assert(FastCheck.property(FastCheck.uint8Array({ maxLength: 600 }), (bytes) => {
      const withMagic = Buffer.concat([Buffer.from("SSHSIG"), bytes])
      return Either.isLeft(Sshsig.decodeBlob(withMagic)) && Either.isLeft(Sshsig.verify(Sshsig.armor(bytes), message, "git"))
    }), { numRuns: 300 })
  })

  it("hashes the message as PROTOCOL.sshsig says", () => {
    const data = Sshsig.signedData("git", "sha512", message)
    const expected = Buffer.concat([
      Buffer.from("SSHSIG"), wireString("git"), wireString(""), wireString("sha512"),
      wireString(createHash("sha512").update(message).digest())
    ])
    assert.isTrue(Buffer.from(data).equals(expected))
  })
})
