import { assert, describe, it } from "@effect/vitest"
import { NodeContext } from "@effect/platform-node"
import { ConfigProvider, Effect, Either, Layer, Option, Redacted } from "effect"
import { execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as Sshsig from "../../src/domain/Sshsig.js"
import * as Keys from "../../src/services/Keys.js"
import { fixturePath, privateCopy } from "./KeysFixtures.js"

const env = (vars: Record<string, string> = {}) =>
  Layer.mergeAll(Keys.layer.pipe(Layer.provide(NodeContext.layer)), NodeContext.layer, Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(vars)))))

const sshFingerprint = (pub: string) => execFileSync("ssh-keygen", ["-l", "-f", pub]).toString().split(" ")[1]

const failure = <A>(effect: Effect.Effect<A, Keys.KeyError, Keys.Keys>, vars: Record<string, string> = {}) =>
  effect.pipe(Effect.flip, Effect.provide(env(vars)))

const tmp = () => mkdtempSync(join(tmpdir(), "upm-keys-"))

describe("Keys", () => {
  it.effect("loads ed25519 and RSA keys with OpenSSH's fingerprints, and they sign", () =>
    Effect.gen(function* () {
      for (const name of ["alice_ed25519", "bob_rsa3072"]) {
        const key = yield* Keys.loadSigningKey(privateCopy(name))
        assert.strictEqual(key.fingerprint, sshFingerprint(fixturePath(`${name}.pub`)))
        assert.strictEqual(key.source._tag, "File")
        const sig = yield* key.sign("git", new Uint8Array([1, 2, 3]))
        assert.isTrue(Either.isRight(Sshsig.verify(sig, new Uint8Array([1, 2, 3]), "git")))
      }
      const pub = yield* Keys.loadPublicKey(fixturePath("bob_rsa3072.pub"))
      assert.strictEqual(pub.comment, "bob@test")
      assert.strictEqual(pub.key.bits, 3072)
    }).pipe(Effect.provide(env())))

  it.effect("reads the passphrase from UPM_KEY_PASSPHRASE, or asks and retries", () =>
    Effect.gen(function* () {
      const file = privateCopy("alice_ed25519_enc")
      const viaEnv = yield* Keys.loadSigningKey(file).pipe(Effect.provide(env({ UPM_KEY_PASSPHRASE: "correct horse" })))
      assert.strictEqual(viaEnv.comment, "alice-enc@test")
      const asked: Array<number> = []
      const prompt: Keys.PassphrasePrompt = (_file, attempt) => {
        asked.push(attempt)
        return Effect.succeed(Option.some(Redacted.make(attempt === 1 ? "wrong" : "correct horse")))
      }
      yield* Keys.loadSigningKey(file, { passphrase: prompt }).pipe(Effect.provide(env()))
      assert.deepStrictEqual(asked, [1, 2])
      const pem = yield* Keys.loadSigningKey(privateCopy("bob_rsa3072_pem_enc"), {
        passphrase: () => Effect.succeed(Option.some(Redacted.make("pem pass")))
      }).pipe(Effect.provide(env()))
      assert.strictEqual(pem.fingerprint, sshFingerprint(fixturePath("bob_rsa3072_pem_enc.pub")))
    }))

  it.effect("explains every key problem: file, what is wrong, what to run", () =>
    Effect.gen(function* () {
      const enc = privateCopy("alice_ed25519_enc")
      const dir = tmp()
      const putty = join(dir, "key.ppk")
      writeFileSync(putty, "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: x\n", { mode: 0o600 })
      const pkcs8 = join(dir, "pkcs8")
      writeFileSync(pkcs8, "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n", { mode: 0o600 })
      const cases: Array<[Effect.Effect<Keys.KeyError, unknown>, Keys.KeyError["reason"], RegExp]> = [
        [failure(Keys.loadSigningKey(join(dir, "nope"))), "NotFound", /upm keygen/],
        [failure(Keys.loadSigningKey(enc)), "PassphraseRequired", /UPM_KEY_PASSPHRASE/],
        [failure(Keys.loadSigningKey(enc), { UPM_KEY_PASSPHRASE: "nope" }), "WrongPassphrase", /ssh-keygen -y/],
        [failure(Keys.loadSigningKey(enc, { maxAttempts: 1, passphrase: () => Effect.succeed(Option.some(Redacted.make("x"))) })), "WrongPassphrase", /passphrase/],
        [failure(Keys.loadSigningKey(privateCopy("ecdsa_p256"))), "UnsupportedType", /ssh-ed25519/],
        [failure(Keys.loadSigningKey(privateCopy("dsa_1024"))), "UnsupportedType", /upm keygen/],
        [failure(Keys.loadSigningKey(privateCopy("weak_rsa1024"))), "WeakKey", /upm keygen/],
        [failure(Keys.loadSigningKey(putty)), "UnsupportedFormat", /puttygen/],
        [failure(Keys.loadSigningKey(pkcs8)), "UnsupportedFormat", /ssh-keygen -p/],
        [failure(Keys.loadSigningKey(fixturePath("alice_ed25519.pub"))), "UnsupportedFormat", /private key/],
        [failure(Keys.loadSigningKey(privateCopy("alice_ed25519", 0o644))), "Permissions", /chmod 600/],
        [failure(Keys.loadPublicKey(fixturePath("ecdsa_p256.pub"))), "UnsupportedType", /ssh-ed25519/],
        [failure(Keys.loadPublicKey(fixturePath("alice_ed25519"))), "Malformed", /ssh-keygen -y/]
      ]
      for (const [effect, reason, fix] of cases) {
        const e = yield* effect
        assert.strictEqual(e.reason, reason, `${reason}: ${e.message}`)
        assert.match(e.fix, fix, reason)
        assert.isTrue(e.file.length > 0 && e.message.includes(e.file), reason)
      }
    }))

  it.effect("keygen writes ed25519 keys ssh-keygen accepts, mode 600, and never overwrites", () =>
    Effect.gen(function* () {
      const file = join(tmp(), "ssh", "id_ed25519")
      const made = yield* Keys.keygen(file, { comment: "new@host" })
      assert.strictEqual((statSync(file).mode & 0o777).toString(8), "600")
      const derived = execFileSync("ssh-keygen", ["-y", "-f", file]).toString().trim()
      assert.strictEqual(derived, made.publicLine)
      assert.strictEqual(readFileSync(`${file}.pub`, "utf8"), `${made.publicLine}\n`)
      assert.strictEqual(made.fingerprint, sshFingerprint(`${file}.pub`))
      const again = yield* Effect.flip(Keys.keygen(file))
      assert.strictEqual(again.reason, "Exists")
      const key = yield* Keys.loadSigningKey(file)
      assert.strictEqual(key.fingerprint, made.fingerprint)

      const locked = join(tmp(), "id_locked")
      const withPass = yield* Keys.keygen(locked, { passphrase: Redacted.make("s3cret words") })
      assert.strictEqual(execFileSync("ssh-keygen", ["-y", "-P", "s3cret words", "-f", locked]).toString().trim(), withPass.publicLine)
      const rsa = join(tmp(), "id_rsa")
      const rsaMade = yield* Keys.keygen(rsa, { type: "rsa", bits: 2048 })
      assert.strictEqual(execFileSync("ssh-keygen", ["-y", "-f", rsa]).toString().trim(), rsaMade.publicLine)
    }).pipe(Effect.provide(env())))

  it.effect("finds ~/.ssh/id_ed25519 before id_rsa", () =>
    Effect.gen(function* () {
      const home = tmp()
      const keys = yield* Keys.Keys
      assert.isTrue(Option.isNone(yield* keys.defaultKeyPath.pipe(Effect.provide(env({ HOME: home })))))
      yield* Keys.keygen(join(home, ".ssh", "id_rsa"), { type: "rsa", bits: 2048 })
      yield* Keys.keygen(join(home, ".ssh", "id_ed25519"))
      const found = yield* keys.defaultKeyPath.pipe(Effect.provide(env({ HOME: home })))
      assert.deepStrictEqual(found, Option.some(join(home, ".ssh", "id_ed25519")))
    }).pipe(Effect.provide(env())))

  it.live("signs through a real ssh-agent when it holds the key, without the passphrase", () =>
    Effect.gen(function* () {
      const dir = tmp()
      const socket = join(dir, "agent.sock")
      // ssh-agent (not -D) forks once its socket is ready and prints its pid.
      const pid = yield* Effect.acquireRelease(
        Effect.sync(() => Number(/SSH_AGENT_PID=(\d+)/.exec(execFileSync("ssh-agent", ["-s", "-a", socket]).toString())?.[1])),
        (agentPid) => Effect.sync(() => process.kill(agentPid, "SIGTERM"))
      )
      assert.isTrue(pid > 0)
      const plain = privateCopy("alice_ed25519")
      execFileSync("ssh-add", ["-q", plain], { env: { ...process.env, SSH_AUTH_SOCK: socket }, stdio: "pipe" })
      // An encrypted copy of the same key: only the agent can sign without asking.
      const locked = join(dir, "id_locked")
      writeFileSync(locked, readFileSync(plain), { mode: 0o600 })
      execFileSync("ssh-keygen", ["-q", "-p", "-N", "agent only", "-f", locked], { stdio: "pipe" })
      const key = yield* Keys.loadSigningKey(locked).pipe(Effect.provide(env({ SSH_AUTH_SOCK: socket })))
      assert.strictEqual(key.source._tag, "Agent")
      for (const name of ["alice_ed25519"]) {
        const message = new TextEncoder().encode("via the agent")
        const sig = yield* key.sign("git", message)
        assert.isTrue(Either.isRight(Sshsig.verify(sig, message, "git")), name)
      }
      // RSA through the agent: it must answer with rsa-sha2-512.
      const rsa = privateCopy("bob_rsa3072")
      execFileSync("ssh-add", ["-q", rsa], { env: { ...process.env, SSH_AUTH_SOCK: socket }, stdio: "pipe" })
      const rsaKey = yield* Keys.loadSigningKey(rsa).pipe(Effect.provide(env({ SSH_AUTH_SOCK: socket })))
      assert.strictEqual(rsaKey.source._tag, "Agent")
      const rsaSig = yield* rsaKey.sign("git", new Uint8Array([7]))
      assert.strictEqual(Either.getOrThrow(Sshsig.decode(rsaSig)).signatureAlgorithm, "rsa-sha2-512")
      assert.isTrue(Either.isRight(Sshsig.verify(rsaSig, new Uint8Array([7]), "git")))
      // Not in the agent: falls back to the file (and asks for its passphrase).
      const other = yield* Effect.flip(Keys.loadSigningKey(privateCopy("alice_ed25519_enc")).pipe(Effect.provide(env({ SSH_AUTH_SOCK: socket }))))
      assert.strictEqual(other.reason, "PassphraseRequired")
      // A dead agent socket is not fatal either.
      const fallback = yield* Keys.loadSigningKey(plain).pipe(Effect.provide(env({ SSH_AUTH_SOCK: join(dir, "gone.sock") })))
      assert.strictEqual(fallback.source._tag, "File")
    }).pipe(Effect.scoped))
})
