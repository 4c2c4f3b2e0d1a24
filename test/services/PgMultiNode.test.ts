/**
 * Two real `upm serve` processes (dist/, built by globalSetup) sharing one PostgreSQL database: a release
 * published through one is installed through the other at once, and two publishes of the same release, one
 * through each node at the same time, seal exactly one of them.
 */
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { BIN, spawnServer } from "../e2e/server.js"
import { pgSkipMessage, pgTestsEnabled } from "../pg.js"
import { freshPgUrl } from "./SqlStoresLayers.js"

interface Result {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Runs the CLI as a process; never fails, the exit code is in the result. */
const upm = (cwd: string, env: Record<string, string>, ...args: ReadonlyArray<string>) =>
  Effect.async<Result>((resume) => {
    const child = execFile(process.execPath, [BIN, ...args], { cwd, env: { ...process.env, ...env }, timeout: 120_000 },
      (error, stdout, stderr) =>
        resume(Effect.succeed({ code: error === null ? 0 : typeof error.code === "number" ? error.code : 1, stdout, stderr })))
    return Effect.sync(() => child.kill("SIGKILL"))
  })

const writePackage = (dir: string, name: string, version: string, source: string) => {
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, "upm.json"), JSON.stringify({ name, version, description: "multi-node test" }))
  writeFileSync(join(dir, "index.js"), source)
}

describe.skipIf(!pgTestsEnabled)("two upm serve processes on one PostgreSQL", () => {
  it.scopedLive("publish through one node, install through the other; racing publishes seal once", () =>
    Effect.gen(function* () {
      const url = yield* freshPgUrl
      const dir = mkdtempSync(join(tmpdir(), "upm-multinode-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const [a, b] = yield* Effect.all([
        spawnServer({ store: url, cwd: dir }),
        spawnServer({ store: url, cwd: dir })
      ], { concurrency: 2 })
      const home = join(dir, "home")
      mkdirSync(home)
      const via = (server: { readonly address: string }) => ({ HOME: home, UPM_HOME: join(home, ".upm"), UPM_SERVER: server.address })
      const ok = (r: Result, what: string) => assert.strictEqual(r.code, 0, `${what}\n${r.stdout}\n${r.stderr}`)

      ok(yield* upm(dir, via(a), "keygen"), "keygen")

      // published through a, installed through b
      writePackage(join(dir, "hello"), "alice/hello", "1.0.0", `export const hello = () => "hello"\n`)
      ok(yield* upm(join(dir, "hello"), via(a), "publish"), "publish via a")
      mkdirSync(join(dir, "app"))
      ok(yield* upm(join(dir, "app"), via(b), "install", "alice/hello"), "install via b")
      assert.include(readFileSync(join(dir, "app", "upm_modules", "alice", "hello", "index.js"), "utf8"), `"hello"`)

      // the same release, different content, published through both nodes at once: exactly one is sealed
      writePackage(join(dir, "race-a"), "alice/race", "1.0.0", `export const who = "a"\n`)
      writePackage(join(dir, "race-b"), "alice/race", "1.0.0", `export const who = "b"\n`)
      const [ra, rb] = yield* Effect.all([
        upm(join(dir, "race-a"), via(a), "publish"),
        upm(join(dir, "race-b"), via(b), "publish")
      ], { concurrency: 2 })
      assert.strictEqual([ra, rb].filter((r) => r.code === 0).length, 1, `a: ${ra.stderr}\nb: ${rb.stderr}`)
      const winner = ra.code === 0 ? "a" : "b"
      // the loser is told the version exists (the compare-and-set on the release ref found the winner's tag)
      assert.include((ra.code === 0 ? rb : ra).stderr, "already published")
      // both nodes serve the winner
      for (const [name, server] of [["from-a", a], ["from-b", b]] as const) {
        mkdirSync(join(dir, name))
        ok(yield* upm(join(dir, name), via(server), "install", "alice/race"), `install alice/race ${name}`)
        assert.strictEqual(
          readFileSync(join(dir, name, "upm_modules", "alice", "race", "index.js"), "utf8"),
          `export const who = "${winner}"\n`
        )
      }
    }).pipe(Effect.provide(NodeContext.layer)), { timeout: 240_000 })
})

if (!pgTestsEnabled) {
  describe("two upm serve processes on one PostgreSQL", () => {
    it.skip(pgSkipMessage, () => {})
  })
}
