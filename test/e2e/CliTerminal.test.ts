/**
 * Progress bars, as a person at a terminal and a script see them. The CLI runs under `script` (util-linux), which
 * gives it a pseudo-terminal: publish and install draw their bars there; the same commands with stderr on a pipe
 * print no bar and no terminal control codes.
 */
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { makeUser, upm, upmOnTerminal, writeFiles } from "./cliRun.js"
import { spawnServer } from "./server.js"

const hasScript = (() => {
  try {
    return Fs.statSync("/usr/bin/script").isFile()
  } catch {
    return false
  }
})()

const BAR = /[█░]/
// eslint-disable-next-line no-control-regex
const CONTROL = /\x1b\[|\r/

describe("progress on a terminal", () => {
  it.scopedLive.skipIf(!hasScript)("bars on a TTY, nothing but the answer on a pipe", () =>
    Effect.gen(function* () {
      const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "upm-tty-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(root, { recursive: true, force: true })))
      const server = yield* spawnServer({ store: `fs:${Path.join(root, "data")}` })
      const alice = makeUser(root, "alice", server.address)
      const bob = makeUser(root, "bob", server.address)
      const files: Record<string, string> = { "upm.json": JSON.stringify({ name: "alice/tty", version: "1.0.0" }) }
      for (let i = 0; i < 40; i++) files[`lib/file${i}.js`] = `export const v${i} = ${i}\n`
      const pkg = Path.join(root, "tty")
      writeFiles(pkg, files)
      assert.strictEqual((yield* upm(alice, root, "keygen")).code, 0)

      // On a terminal: the bar, with its counts and transfer figures.
      const published = yield* upmOnTerminal(alice, pkg, "publish")
      assert.strictEqual(published.code, 0, published.stdout)
      assert.match(published.stdout, /publishing [█░]+ \d+\/\d+ objects \| [\d.]+ (B|kB|MB) \| /)
      assert.match(published.stdout, BAR)
      assert.notInclude(published.stdout, "{bytes}") // the first frame is filled in too
      assert.include(published.stdout, "published alice/tty@1.0.0")

      const app = Path.join(root, "app")
      Fs.mkdirSync(app)
      const installed = yield* upmOnTerminal(bob, app, "install", "alice/tty")
      assert.strictEqual(installed.code, 0, installed.stdout)
      assert.match(installed.stdout, /installing [█░]+ 1\/1 packages \| /)
      assert.include(installed.stdout, "alice/tty@1.0.0 → upm_modules/alice/tty")

      // On a pipe: the answer on stdout, a summary on stderr, no bar and no control codes anywhere.
      writeFiles(pkg, { "upm.json": JSON.stringify({ name: "alice/tty", version: "1.0.1" }) })
      const piped = yield* upm(alice, pkg, "publish")
      assert.strictEqual(piped.code, 0, piped.stderr)
      assert.match(piped.stdout, /^published alice\/tty@1\.0\.1 [0-9a-f]{40}\n$/)
      const carol = makeUser(root, "carol", server.address)
      const app2 = Path.join(root, "app2")
      Fs.mkdirSync(app2)
      const quiet = yield* upm(carol, app2, "install", "alice/tty")
      assert.strictEqual(quiet.code, 0, quiet.stderr)
      for (const r of [piped, quiet]) {
        assert.notMatch(r.stdout + r.stderr, BAR)
        assert.notMatch(r.stdout + r.stderr, CONTROL)
      }
      assert.strictEqual(quiet.stdout, "alice/tty@1.0.1 → upm_modules/alice/tty\n")
    }).pipe(Effect.provide(NodeContext.layer)), { timeout: 180_000 })
})
