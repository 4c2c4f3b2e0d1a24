/**
 * The CLI as two users would use it, with real processes: a server on a free port with an fs store, and two
 * separate UPM_HOMEs. keygen → publish → install elsewhere → lockfile → second install without network →
 * offline reinstall (server stopped) → publish a new version → update; and the errors a user can act on.
 */
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { makeUser, upm, writeFiles } from "./cliRun.js"
import { spawnServer } from "./server.js"

const read = (file: string) => Fs.readFileSync(file, "utf8")
const ok = (r: { code: number; stdout: string; stderr: string }, what: string) =>
  assert.strictEqual(r.code, 0, `${what} failed (${r.code}):\n${r.stdout}\n${r.stderr}`)

describe("upm CLI end to end", () => {
  it.scoped("keygen → publish → install → lockfile → offline → update", () =>
    Effect.gen(function* () {
      const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "upm-cli-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(root, { recursive: true, force: true })))
      const data = Path.join(root, "data")
      const server = yield* spawnServer({ store: `fs:${data}` })
      const alice = makeUser(root, "alice", server.address)
      const bob = makeUser(root, "bob", server.address)

      // alice: a key, two packages (hello depends on colors)
      const keygen = yield* upm(alice, root, "keygen")
      ok(keygen, "keygen")
      const fingerprint = keygen.stdout.split("\n")[0]!
      assert.match(fingerprint, /^SHA256:/)
      const whoami = yield* upm(alice, root, "whoami", "--json")
      ok(whoami, "whoami")
      assert.strictEqual(JSON.parse(whoami.stdout).fingerprint, fingerprint)

      const colors = Path.join(root, "colors")
      writeFiles(colors, {
        "upm.json": JSON.stringify({ name: "alice/colors", version: "1.0.0" }),
        "colors.js": "export const red = 1\n",
        "debug.log": "not published\n",
        ".upmignore": "*.log\n"
      })
      const hello = Path.join(root, "hello")
      writeFiles(hello, {
        "upm.json": JSON.stringify({ name: "alice/hello", version: "1.0.0", dependencies: { "alice/colors": "^1.0.0" } }),
        "index.js": "export const hello = 'hello'\n",
        "lib/deep/file.txt": "deep\n"
      })
      ok(yield* upm(alice, colors, "publish"), "publish colors")
      const published = yield* upm(alice, hello, "publish", "--json")
      ok(published, "publish hello")
      const release = JSON.parse(published.stdout)
      assert.strictEqual(release.status, "Sealed")
      assert.strictEqual(release.signer, fingerprint)

      // Republishing the same content is a no-op; other content under the same version a conflict (6).
      const again = yield* upm(alice, hello, "publish")
      ok(again, "republish")
      assert.include(again.stdout, "already published")
      writeFiles(hello, { "index.js": "export const hello = 'changed'\n" })
      const conflict = yield* upm(alice, hello, "publish")
      assert.strictEqual(conflict.code, 6, conflict.stderr)
      assert.include(conflict.stderr, "already published with other content")
      writeFiles(hello, { "index.js": "export const hello = 'hello'\n" })

      // bob installs it in his project
      const app = Path.join(root, "app")
      Fs.mkdirSync(app)
      const installed = yield* upm(bob, app, "install", "alice/hello")
      ok(installed, "install")
      assert.strictEqual(read(Path.join(app, "upm_modules/alice/hello/index.js")), "export const hello = 'hello'\n")
      assert.strictEqual(read(Path.join(app, "upm_modules/alice/hello/lib/deep/file.txt")), "deep\n")
      assert.strictEqual(read(Path.join(app, "upm_modules/alice/colors/colors.js")), "export const red = 1\n")
      assert.isFalse(Fs.existsSync(Path.join(app, "upm_modules/alice/colors/debug.log")))
      const lock = JSON.parse(read(Path.join(app, "upm.lock")))
      assert.deepStrictEqual(lock.dependencies, { "alice/hello": { range: "^1.0.0", version: "1.0.0" } })
      assert.deepStrictEqual(lock.packages.map((p: { name: string; version: string; signer: string }) => `${p.name}@${p.version} ${p.signer}`), [
        `alice/colors@1.0.0 ${fingerprint}`,
        `alice/hello@1.0.0 ${fingerprint}`
      ])
      assert.strictEqual(lock.packages[1].tag, release.tag)

      // Nothing changed: no network at all, and the lockfile is untouched.
      const lockText = read(Path.join(app, "upm.lock"))
      const second = yield* upm(bob, app, "install", "--json")
      ok(second, "second install")
      const secondResult = JSON.parse(second.stdout)
      assert.isFalse(secondResult.connected)
      assert.isFalse(secondResult.resolved)
      assert.strictEqual(read(Path.join(app, "upm.lock")), lockText)

      // The server goes away: everything installed once installs again, from the lockfile or not.
      yield* server.kill("SIGKILL")
      yield* server.exitCode
      Fs.rmSync(Path.join(app, "upm_modules"), { recursive: true })
      ok(yield* upm(bob, app, "install", "--frozen"), "offline frozen install")
      assert.strictEqual(read(Path.join(app, "upm_modules/alice/colors/colors.js")), "export const red = 1\n")
      const app2 = Path.join(root, "app2")
      Fs.mkdirSync(app2)
      const offline = yield* upm(bob, app2, "install", "alice/hello")
      ok(offline, "offline install without a lockfile")
      assert.include(offline.stderr, "local cache")
      assert.isTrue(Fs.existsSync(Path.join(app2, "upm_modules/alice/colors/colors.js")))
      // …but what was never fetched cannot be: the server's address and a hint.
      const unreachable = yield* upm(bob, app2, "versions", "alice/hello")
      assert.strictEqual(unreachable.code, 3, unreachable.stderr)
      assert.include(unreachable.stderr, server.address)
      assert.include(unreachable.stderr, "hint:")

      // The server comes back on the same store; alice publishes colors 1.1.0; bob updates.
      const server2 = yield* spawnServer({ store: `fs:${data}` })
      const alice2 = { ...alice, env: { ...alice.env, UPM_SERVER: server2.address } }
      const bob2 = { ...bob, env: { ...bob.env, UPM_SERVER: server2.address } }
      writeFiles(colors, { "upm.json": JSON.stringify({ name: "alice/colors", version: "1.1.0" }), "colors.js": "export const red = 2\n" })
      ok(yield* upm(alice2, colors, "publish"), "publish colors 1.1.0")
      // The lockfile still pins 1.0.0: a plain install keeps it.
      ok(yield* upm(bob2, app, "install"), "install with lockfile")
      assert.strictEqual(read(Path.join(app, "upm_modules/alice/colors/colors.js")), "export const red = 1\n")
      // Naming the package updates it, and the lockfile.
      ok(yield* upm(bob2, app, "install", "alice/colors"), "update")
      assert.strictEqual(read(Path.join(app, "upm_modules/alice/colors/colors.js")), "export const red = 2\n")
      const updated = JSON.parse(read(Path.join(app, "upm.lock")))
      assert.deepStrictEqual(updated.dependencies["alice/colors"], { range: "^1.1.0", version: "1.1.0" })

      // Errors a user can act on, with their exit codes.
      const missing = yield* upm(bob2, app, "install", "alice/helo")
      assert.strictEqual(missing.code, 4, missing.stderr)
      assert.include(missing.stderr, "alice/hello")
      const noMatch = yield* upm(bob2, app, "install", "alice/hello@^9.0.0")
      assert.strictEqual(noMatch.code, 4, noMatch.stderr)
      assert.include(noMatch.stderr, "versions that exist: 1.0.0")
      const usage = yield* upm(bob2, app, "install", "Not A Name")
      assert.strictEqual(usage.code, 2, usage.stderr)
      // A upm.json that asks for less than upm.lock records: --frozen refuses to change the lockfile.
      writeFiles(app, { "upm.json": JSON.stringify({ name: "bob/app", version: "0.0.0", dependencies: { "alice/hello": "^1.0.0" } }) })
      const frozen = yield* upm(bob2, app, "install", "--frozen")
      assert.strictEqual(frozen.code, 6, frozen.stderr)
      assert.include(frozen.stderr, "alice/colors is in the lockfile but no longer required")
      const bad = Path.join(app, "upm.lock")
      Fs.writeFileSync(bad, read(bad).replace(/"version": "1\.0\.0"/, `"version": "7.0.0"`))
      const corrupt = yield* upm(bob2, app, "install")
      assert.strictEqual(corrupt.code, 2, corrupt.stderr)
      assert.include(corrupt.stderr, "upm.lock")
      const badManifest = Path.join(root, "bad")
      writeFiles(badManifest, { "upm.json": JSON.stringify({ name: "Alice/Bad", version: "one" }) })
      const invalid = yield* upm(alice2, badManifest, "publish")
      assert.strictEqual(invalid.code, 2, invalid.stderr)
      assert.include(invalid.stderr, "name")
      assert.include(invalid.stderr, "fix:")
      assert.notInclude(invalid.stderr, "    at ") // no stack trace without --verbose
    }).pipe(Effect.provide(NodeContext.layer)), { timeout: 300_000 })
})
