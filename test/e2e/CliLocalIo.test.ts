/**
 * Local filesystem failures on the install target, with real processes: a disk that fills up (a 64 KiB tmpfs,
 * mounted in a private mount namespace of the CLI's process only, so nothing leaks into the machine's mounts) and
 * a target the user may not write (a directory owned by someone else; as root, which ignores modes, the CLI runs
 * as `nobody` through setpriv). Both exit 7 with a message naming the problem and a hint, no stack trace, and
 * leave nothing half-written.
 */
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { type CliResult, makeUser, runAs as run, shellQuote as quote, upm, writeFiles } from "./cliRun.js"
import { BIN, spawnServer } from "./server.js"

/** Whether this machine lets us make a private mount namespace with a tmpfs in it (root, or user namespaces). */
const canMountPrivately = (() => {
  try {
    execFileSync("unshare", ["-m", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs \"$d\" && umount \"$d\" && rmdir \"$d\""], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
})()
const isRoot = process.getuid?.() === 0
const canDropToNobody = (() => {
  if (!isRoot) return true
  try {
    execFileSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "true"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
})()

const ok = (r: CliResult, what: string) => assert.strictEqual(r.code, 0, `${what} failed (${r.code}):\n${r.stdout}\n${r.stderr}`)

describe("install target failures", () => {
  it.scopedLive.skipIf(!canMountPrivately && !canDropToNobody)("disk full and permission denied: exit 7, a clear message, nothing half-written", () =>
    Effect.gen(function* () {
      const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "upm-localio-"))
      Fs.chmodSync(root, 0o755)
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(root, { recursive: true, force: true })))
      const server = yield* spawnServer({ store: `fs:${Path.join(root, "data")}` })
      const alice = makeUser(root, "alice", server.address)
      ok(yield* upm(alice, root, "keygen"), "keygen")
      const pkg = Path.join(root, "big")
      // ~300 kB of files: more than the 64 KiB disk below holds.
      const files: Record<string, string> = { "upm.json": JSON.stringify({ name: "alice/big", version: "1.0.0" }) }
      for (let i = 0; i < 6; i++) files[`data/part${i}.txt`] = `${i}`.repeat(50_000)
      writeFiles(pkg, files)
      ok(yield* upm(alice, pkg, "publish"), "publish")

      if (canDropToNobody) {
        // A target directory owned by root, mode 755: another user may not create anything in it.
        const carol = makeUser(root, "carol", server.address)
        const project = Path.join(carol.home, "project")
        const target = Path.join(root, "shared-target")
        Fs.mkdirSync(project, { recursive: true })
        Fs.mkdirSync(target, { mode: 0o755 })
        const asNobody = isRoot ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] : []
        if (isRoot) execFileSync("chown", ["-R", "65534:65534", carol.home])
        if (!isRoot) Fs.chmodSync(target, 0o555)
        const [file = "", ...args] = [...asNobody, process.execPath, BIN, "install", "alice/big", "--into", Path.join(target, "modules")]
        const denied = yield* run(carol, project, file, args)
        assert.strictEqual(denied.code, 7, `${denied.stdout}\n${denied.stderr}`)
        assert.include(denied.stderr, `upm: permission denied: ${Path.join(target, "modules")}`)
        assert.include(denied.stderr, "hint: check the owner and mode of the path")
        assert.deepStrictEqual(Fs.readdirSync(target), [])
      }

      if (canMountPrivately) {
        const bob = makeUser(root, "bob", server.address)
        const project = Path.join(bob.home, "project")
        const disk = Path.join(bob.home, "disk")
        Fs.mkdirSync(project, { recursive: true })
        Fs.mkdirSync(disk)
        // In the CLI's own mount namespace: a 64 KiB disk at `disk`; afterwards, what is left on it.
        const script = [
          `mount -t tmpfs -o size=64k tmpfs ${quote(disk)} || exit 99`,
          `${quote(process.execPath)} ${quote(BIN)} install alice/big --into ${quote(Path.join(disk, "modules"))}`,
          "code=$?",
          `echo "LEFT: $(cd ${quote(disk)} && find . -mindepth 1 | sort | tr '\\n' ' ')"`,
          "exit $code"
        ].join("; ")
        const full = yield* run(bob, project, "unshare", ["-m", "sh", "-c", script])
        assert.notStrictEqual(full.code, 99, `could not mount: ${full.stderr}`)
        assert.strictEqual(full.code, 7, `${full.stdout}\n${full.stderr}`)
        assert.include(full.stderr, "upm: the disk is full")
        assert.include(full.stderr, "hint: free some space")
        assert.notInclude(full.stderr, "    at ")
        const left = /LEFT: (.*)/.exec(full.stdout)?.[1]?.trim().split(" ").filter((e) => e !== "") ?? []
        // The package's directory never appears half-written, and the temp directory is gone.
        assert.deepStrictEqual(left.filter((e) => e.includes("big") || e.includes(".upm-")), [], left.join(" "))
        assert.isFalse(Fs.existsSync(Path.join(project, "upm.lock")))
        // The release is in bob's local store: with room, the same install works (offline too).
        yield* server.kill("SIGTERM")
        yield* server.exitCode
        ok(yield* upm(bob, project, "install", "alice/big", "--into", Path.join(project, "modules")), "install with room, offline")
        assert.strictEqual(Fs.readFileSync(Path.join(project, "modules/alice/big/data/part5.txt"), "utf8").length, 50_000)
      }

    }).pipe(Effect.provide(NodeContext.layer)), { timeout: 240_000 })
})
