/**
 * upm's signed tags and git's are one world: git verify-tag and ssh-keygen accept what upm signs, and upm
 * accepts what `git tag -s` (gpg.format=ssh) signs — and each side refuses a tampered tag.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, Layer } from "effect"
import { execFileSync, spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { decodeTag, encodeTagPayload, hashOf } from "../../src/domain/GitObject.js"
import { ObjectHash } from "../../src/domain/ObjectHash.js"
import { PackageName, Version } from "../../src/domain/Package.js"
import { encodeReleaseMessage } from "../../src/domain/ReleaseMessage.js"
import { NodeContext } from "@effect/platform-node"
import { Option } from "effect"
import { encodeTree } from "../../src/domain/GitObject.js"
import { layerFs } from "../../src/services/FsStore.js"
import * as ObjectStore from "../../src/services/ObjectStore.js"
import * as Owners from "../../src/services/Owners.js"
import * as Signer from "../../src/services/Signer.js"
import * as Verifier from "../../src/services/Verifier.js"
import { fixturePath, memoryKey, privateCopy, publicLine } from "./KeysFixtures.js"

const TestEnv = Verifier.layer.pipe(Layer.provideMerge(Owners.layer), Layer.provideMerge(ObjectStore.layerMemory))

const git = (repo: string, args: ReadonlyArray<string>, input?: Uint8Array | string) =>
  execFileSync("git", ["-C", repo, ...args], { input, stdio: "pipe", env: { ...process.env, GIT_CONFIG_NOSYSTEM: "1", HOME: repo } })

const tryGit = (repo: string, args: ReadonlyArray<string>) =>
  spawnSync("git", ["-C", repo, ...args], { stdio: "pipe", env: { ...process.env, GIT_CONFIG_NOSYSTEM: "1", HOME: repo } })

/** A git repo with one file, its tree hash, and an allowed-signers file for the fixture keys. */
const makeRepo = () => {
  const repo = mkdtempSync(join(tmpdir(), "upm-interop-"))
  git(repo, ["init", "-q"])
  writeFileSync(join(repo, "upm.json"), `{"name":"alice/greetings","version":"1.0.0"}\n`)
  git(repo, ["add", "upm.json"])
  const tree = ObjectHash.make(git(repo, ["write-tree"]).toString().trim())
  const allowed = join(repo, "allowed_signers")
  writeFileSync(allowed, ["alice_ed25519", "bob_rsa3072"]
    .map((k) => `${k}@test ${readFileSync(fixturePath(`${k}.pub`), "utf8").trim()}`).join("\n") + "\n")
  return { repo, tree, allowed }
}

const metadata = { name: PackageName.make("alice/greetings"), version: Version.make("1.0.0"), description: "Says hello" }

describe("signing interop with git 2.39 and OpenSSH", () => {
  for (const keyName of ["alice_ed25519", "bob_rsa3072"]) {
    it.effect(`git verify-tag and ssh-keygen accept a tag upm signed (${keyName}); tampered, they refuse it`, () =>
      Effect.gen(function* () {
        const { repo, tree, allowed } = makeRepo()
        const signed = yield* Signer.signRelease(memoryKey(keyName), {
          tree, metadata, tagger: { name: "Alice", email: "alice@test" }, time: { seconds: 1_700_000_000, offsetMinutes: 60 }
        })
        const hash = git(repo, ["hash-object", "-t", "tag", "-w", "--stdin"], signed.body).toString().trim()
        assert.strictEqual(hash, signed.hash, "git hashes the tag as upm does")
        git(repo, ["update-ref", "refs/tags/alice/greetings/v1.0.0", hash])
        const ok = tryGit(repo, ["-c", `gpg.ssh.allowedSignersFile=${allowed}`, "verify-tag", "alice/greetings/v1.0.0"])
        assert.strictEqual(ok.status, 0, ok.stderr.toString())
        assert.match(ok.stderr.toString(), /Good "git" signature/)
        assert.strictEqual(tryGit(repo, ["fsck", "--strict", "--no-dangling"]).status, 0)

        // ssh-keygen on the payload and the signature block alone.
        writeFileSync(join(repo, "sig"), signed.tag.signature ?? "")
        const verify = spawnSync("ssh-keygen", ["-Y", "verify", "-f", allowed, "-I", `${keyName}@test`, "-n", "git", "-s", join(repo, "sig")],
          { input: encodeTagPayload(signed.tag), stdio: "pipe" })
        assert.strictEqual(verify.status, 0, verify.stderr.toString())

        const tampered = Buffer.from(Buffer.from(signed.body).toString("utf8").replace("Says hello", "Says hellO"))
        const badHash = git(repo, ["hash-object", "-t", "tag", "-w", "--stdin"], tampered).toString().trim()
        git(repo, ["update-ref", "refs/tags/alice/greetings/v1.0.0", badHash])
        const bad = tryGit(repo, ["-c", `gpg.ssh.allowedSignersFile=${allowed}`, "verify-tag", "alice/greetings/v1.0.0"])
        assert.notStrictEqual(bad.status, 0)
      }))

    it.effect(`upm accepts a tag git tag -s made with an SSH key (${keyName}); tampered, it refuses it`, () =>
      Effect.gen(function* () {
        const { repo, tree } = makeRepo()
        writeFileSync(join(repo, "msg"), encodeReleaseMessage(metadata))
        git(repo, [
          "-c", "gpg.format=ssh", "-c", `user.signingkey=${privateCopy(keyName)}`,
          "-c", "user.name=Alice", "-c", "user.email=alice@test",
          "tag", "-s", "-F", join(repo, "msg"), "alice/greetings/v1.0.0", tree
        ])
        const body = git(repo, ["cat-file", "tag", "alice/greetings/v1.0.0"])
        const tagHash = ObjectHash.make(git(repo, ["rev-parse", "alice/greetings/v1.0.0"]).toString().trim())
        assert.strictEqual(hashOf("tag", body), tagHash)
        const tag = Either.getOrThrow(decodeTag(body))
        const verifier = yield* Verifier.Verifier
        const release = yield* verifier.verifyTag(tagHash, tag)
        assert.strictEqual(release.signer, memoryKey(keyName).fingerprint)
        assert.strictEqual(release.name, "alice/greetings")
        assert.isTrue(release.claim)

        if (keyName === "alice_ed25519") {
          // ed25519 signatures are deterministic: upm's Signer makes the very same bytes as git tag -s.
          const [, seconds, sign, hh, mm] = /(\d+) ([+-])(\d\d)(\d\d)$/.exec(tag.tagger ?? "") ?? []
          const ours = yield* Signer.signRelease(memoryKey(keyName), {
            tree, metadata, tagger: { name: "Alice", email: "alice@test" },
            time: { seconds: Number(seconds), offsetMinutes: (sign === "-" ? -1 : 1) * (Number(hh) * 60 + Number(mm)) }
          })
          assert.strictEqual(ours.hash, tagHash)
        }

        const tamperedBody = Buffer.from(body.toString("utf8").replace(`"version":"1.0.0"`, `"version":"1.0.0" `))
        const tamperedTag = Either.getOrThrow(decodeTag(tamperedBody))
        const refused = yield* Effect.flip(verifier.verifyTag(hashOf("tag", tamperedBody), tamperedTag))
        assert.strictEqual(refused.reason, "BadSignature")
      }).pipe(Effect.provide(TestEnv)))
  }

  it.effect("on the fs store, releases and owner records are a repository git fsck and git verify-tag accept", () => {
    const root = mkdtempSync(join(tmpdir(), "upm-interop-fs-"))
    const env = Verifier.layer.pipe(
      Layer.provideMerge(Owners.layer),
      Layer.provideMerge(layerFs(root)),
      Layer.provide(NodeContext.layer)
    )
    return Effect.gen(function* () {
      const store = yield* ObjectStore.ObjectStore
      const alice = memoryKey("alice_ed25519")
      const blob = yield* store.put("blob", new TextEncoder().encode("hello\n"))
      const tree = yield* store.put("tree", encodeTree([{ mode: "100644", name: "hello.txt", hash: blob }]))
      const signed = yield* Signer.signRelease(alice, { tree, metadata, tagger: { name: "Alice", email: "alice@test" } })
      const verified = yield* Effect.flatMap(Verifier.Verifier, (v) => v.verifyTag(signed.hash, signed.tag))
      yield* store.put("tag", signed.body)
      yield* Verifier.sealRelease(verified)
      const owners = yield* Owners.Owners
      const state = yield* Effect.map(owners.get("alice"), Option.getOrThrow)
      const change = yield* Owners.makeChange(alice, "alice", Option.some(state), { op: "add-key", key: publicLine(memoryKey("bob_rsa3072")) })
      yield* owners.apply("alice", change.body)
      const fsck = tryGit(root, ["fsck", "--strict", "--no-dangling"])
      assert.strictEqual(fsck.status, 0, fsck.stderr.toString() + fsck.stdout.toString())
      const allowed = join(root, "..", `${root.split("/").at(-1)}-allowed`)
      writeFileSync(allowed, `alice@test ${readFileSync(fixturePath("alice_ed25519.pub"), "utf8")}`)
      const ok = tryGit(root, ["-c", `gpg.ssh.allowedSignersFile=${allowed}`, "verify-tag", "alice/greetings/v1.0.0"])
      assert.strictEqual(ok.status, 0, ok.stderr.toString())
      assert.match(git(root, ["cat-file", "-p", "refs/upm/owners/alice"]).toString(), /upm-owners alice #1: add-key/)
      assert.strictEqual((yield* owners.history("alice")).length, 2)
    }).pipe(Effect.provide(env))
  })
})
