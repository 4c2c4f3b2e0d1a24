/**
 * Signing and verification throughput on one core, against OpenSSH and git doing the same in the same run,
 * and the share of a publish spent on signatures.
 *
 *   npx tsx bench/sign.ts
 *
 * - upm sign/s and verify/s (SSHSIG over a release tag payload) for ed25519 and RSA-3072, in-process.
 * - The same verification by `ssh-keygen -Y verify` and `git verify-tag` (one process each, as git runs it).
 * - Key loading: plain and passphrase-protected (bcrypt-pbkdf, 16 rounds, as ssh-keygen writes them).
 * - A publish's object work for lodash@4.17.21 (npm pack; hashing + deflating every file and tree) against
 *   one sign + one verify.
 */
import { NodeContext } from "@effect/platform-node"
import { ConfigProvider, Effect, Either, Layer } from "effect"
import { execFileSync, spawnSync } from "node:child_process"
import { createPrivateKey } from "node:crypto"
import { chmodSync, copyFileSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { loadavg, tmpdir } from "node:os"
import { join } from "node:path"
import { deflateSync } from "node:zlib"
import ssh2 from "ssh2"
import { encodeTagPayload, encodeTree, hashOf, type TreeEntry } from "../src/domain/GitObject.js"
import { PackageName, Version } from "../src/domain/Package.js"
import { parsePublicKeyBlob } from "../src/domain/SshKey.js"
import * as Sshsig from "../src/domain/Sshsig.js"
import * as Keys from "../src/services/Keys.js"
import * as Signer from "../src/services/Signer.js"

const FIXTURES = join(import.meta.dirname, "..", "test", "fixtures", "keys")

const memoryKey = (name: string) => {
  const parsed = ssh2.utils.parseKey(readFileSync(join(FIXTURES, name)))
  if (parsed instanceof Error) throw parsed
  const publicKey = Either.getOrThrow(parsePublicKeyBlob(parsed.getPublicSSH()))
  return Keys.signingKeyFromKeyObject(createPrivateKey(parsed.getPrivatePEM()), publicKey)
}

/** Runs `f` repeatedly for about `ms` milliseconds; returns operations per second. */
const rate = (f: () => void, ms = 1500): number => {
  for (let i = 0; i < 20; i++) f() // warm up
  let n = 0
  const start = performance.now()
  while (performance.now() - start < ms) {
    f()
    n++
  }
  return n / ((performance.now() - start) / 1000)
}

const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0
const timeMs = (f: () => void) => {
  const start = performance.now()
  f()
  return performance.now() - start
}

const fmt = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(2))

const main = Effect.gen(function* () {
  const dir = mkdtempSync(join(tmpdir(), "upm-bench-sign-"))
  console.log(`node ${process.version}, one core (Node's crypto runs on the main thread); load average ${loadavg().map((l) => l.toFixed(1)).join(" ")}\n`)

  // A repo with a tree so git verify-tag has something real to check.
  const repo = join(dir, "repo")
  execFileSync("git", ["init", "-q", repo])
  writeFileSync(join(repo, "upm.json"), `{"name":"alice/bench","version":"1.0.0"}\n`)
  execFileSync("git", ["-C", repo, "add", "upm.json"])
  const tree = execFileSync("git", ["-C", repo, "write-tree"]).toString().trim()

  const rows: Array<string> = []
  let edSignMs = 0
  let edVerifyMs = 0
  for (const [name, label] of [["alice_ed25519", "ed25519"], ["bob_rsa3072", "RSA-3072"]] as const) {
    const key = memoryKey(name)
    const signed = yield* Signer.signRelease(key, {
      tree: hashOf("tree", encodeTree([])),
      metadata: { name: PackageName.make("alice/bench"), version: Version.make("1.0.0"), description: "bench" },
      tagger: { name: "Bench", email: "bench@test" },
      time: { seconds: 1_700_000_000 }
    })
    const payload = encodeTagPayload(signed.tag)
    const signature = signed.tag.signature ?? ""
    const signRate = rate(() => Effect.runSync(key.sign("git", payload)))
    const verifyRate = rate(() => {
      if (Either.isLeft(Sshsig.verify(signature, payload, "git"))) throw new Error("verify failed")
    })
    if (label === "ed25519") {
      edSignMs = 1000 / signRate
      edVerifyMs = 1000 / verifyRate
    }

    // OpenSSH and git on the same signature.
    const allowed = join(dir, "allowed")
    writeFileSync(allowed, `bench@test ${readFileSync(join(FIXTURES, `${name}.pub`), "utf8")}`)
    writeFileSync(join(dir, "payload"), payload)
    writeFileSync(join(dir, "payload.sig"), signature)
    const sshTimes: Array<number> = []
    for (let i = 0; i < 15; i++) {
      sshTimes.push(timeMs(() => {
        const r = spawnSync("ssh-keygen", ["-Y", "verify", "-f", allowed, "-I", "bench@test", "-n", "git", "-s", join(dir, "payload.sig")],
          { input: payload, stdio: "pipe" })
        if (r.status !== 0) throw new Error(r.stderr.toString())
      }))
    }
    const gitSigned = yield* Signer.signRelease(key, {
      tree: tree as typeof signed.tag.object,
      metadata: { name: PackageName.make("alice/bench"), version: Version.make("1.0.0") },
      tagger: { name: "Bench", email: "bench@test" }, time: { seconds: 1_700_000_000 }
    })
    const hash = execFileSync("git", ["-C", repo, "hash-object", "-t", "tag", "-w", "--stdin"], { input: gitSigned.body }).toString().trim()
    execFileSync("git", ["-C", repo, "update-ref", `refs/tags/${label}`, hash])
    const gitTimes: Array<number> = []
    for (let i = 0; i < 15; i++) {
      gitTimes.push(timeMs(() => {
        const r = spawnSync("git", ["-C", repo, "-c", `gpg.ssh.allowedSignersFile=${allowed}`, "verify-tag", label], { stdio: "pipe" })
        if (r.status !== 0) throw new Error(r.stderr.toString())
      }))
    }
    const sshRate = 1000 / median(sshTimes)
    const gitRate = 1000 / median(gitTimes)
    rows.push(
      `| ${label} | ${fmt(signRate)} | ${fmt(verifyRate)} | ${fmt(sshRate)} | ${fmt(gitRate)} | ${fmt(verifyRate / gitRate)}× |`
    )
  }
  console.log("| key | upm sign/s | upm verify/s | ssh-keygen -Y verify/s | git verify-tag/s | upm/git verify |")
  console.log("| --- | ---: | ---: | ---: | ---: | ---: |")
  for (const r of rows) console.log(r)

  // Key loading (what `upm publish` pays once per run).
  const plain = join(dir, "plain")
  copyFileSync(join(FIXTURES, "alice_ed25519"), plain)
  chmodSync(plain, 0o600)
  const locked = join(dir, "locked")
  copyFileSync(join(FIXTURES, "alice_ed25519"), locked)
  chmodSync(locked, 0o600)
  // ssh-keygen's default of 16 bcrypt rounds (the test fixture uses fewer to keep tests fast).
  execFileSync("ssh-keygen", ["-q", "-p", "-a", "16", "-N", "correct horse", "-f", locked])
  const env = Layer.mergeAll(
    Keys.layer.pipe(Layer.provide(NodeContext.layer)),
    Layer.setConfigProvider(ConfigProvider.fromMap(new Map([["UPM_KEY_PASSPHRASE", "correct horse"]])))
  )
  const loadTimes = (file: string) =>
    Effect.gen(function* () {
      const times: Array<number> = []
      for (let i = 0; i < 3; i++) {
        const start = performance.now()
        yield* Keys.loadSigningKey(file, { agent: false })
        times.push(performance.now() - start)
      }
      return median(times)
    }).pipe(Effect.provide(env))
  const plainMs = yield* loadTimes(plain)
  const lockedMs = yield* loadTimes(locked)
  console.log(`\nkey loading: plain ed25519 ${plainMs.toFixed(1)} ms; passphrase-protected (bcrypt, 16 rounds) ${lockedMs.toFixed(0)} ms`)

  // The object work of publishing lodash, against one sign + one verify.
  const packed = spawnSync("npm", ["pack", "lodash@4.17.21", "--pack-destination", dir, "--silent"], { stdio: "pipe" })
  if (packed.status === 0) {
    execFileSync("tar", ["-xzf", join(dir, "lodash-4.17.21.tgz"), "-C", dir])
    const root = join(dir, "package")
    const importMs = timeMs(() => {
      const walk = (path: string): string => {
        const entries: Array<TreeEntry> = []
        for (const name of readdirSync(path)) {
          const full = join(path, name)
          if (statSync(full).isDirectory()) {
            entries.push({ mode: "40000", name, hash: walk(full) as TreeEntry["hash"] })
          } else {
            const body = readFileSync(full)
            deflateSync(body)
            entries.push({ mode: "100644", name, hash: hashOf("blob", body) })
          }
        }
        const treeBody = encodeTree(entries)
        deflateSync(treeBody)
        return hashOf("tree", treeBody)
      }
      walk(root)
    })
    const signatureMs = edSignMs + edVerifyMs
    console.log(
      `publish of lodash@4.17.21 (1,054 files): hashing + deflating objects ${importMs.toFixed(0)} ms; ` +
        `one ed25519 sign + one verify ${signatureMs.toFixed(3)} ms = ${((100 * signatureMs) / (importMs + signatureMs)).toFixed(3)} % ` +
        `(${((100 * (signatureMs + plainMs)) / (importMs + signatureMs + plainMs)).toFixed(2)} % with loading a plain key, ` +
        `${((100 * (signatureMs + lockedMs)) / (importMs + signatureMs + lockedMs)).toFixed(1)} % with a passphrase-protected one)`
    )
  } else {
    console.log("\n(npm pack lodash failed — no registry access; publish share not measured)")
  }
})

Effect.runPromise(main).catch((e) => {
  console.error(e)
  process.exitCode = 1
})
