/**
 * `upm publish` and `upm propose` are one flow (DESIGN.md, "A publish is one flow whatever the policy"): both
 * open a message session beside the sync connection, so a maintainer's propose handler can talk with the
 * publisher through `upm send` — with real processes: `upm serve` with an example handler, the CLI publishing.
 */
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { makeUser, upm, writeFiles } from "./cliRun.js"
import { BIN, ROOT, spawnServer } from "./server.js"

const ok = (r: { code: number; stdout: string; stderr: string }, what: string) =>
  assert.strictEqual(r.code, 0, `${what} failed (${r.code}):\n${r.stdout}\n${r.stderr}`)

const env = { UPM_BIN: `${process.execPath} ${BIN}` }

/** A server whose propose policy is `handler`, and a user with a key; returns both and a package factory. */
const setup = (handler: Record<string, unknown>) =>
  Effect.gen(function* () {
    const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "upm-conv-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(root, { recursive: true, force: true })))
    Fs.writeFileSync(Path.join(root, "upm.server.json"), JSON.stringify({ handlers: { propose: { ...handler, env, timeout: "60s" } } }))
    const server = yield* spawnServer({ store: `fs:${Path.join(root, "data")}`, cwd: root })
    const alice = makeUser(root, "alice", server.address)
    ok(yield* upm(alice, root, "keygen"), "keygen")
    const pkg = (name: string, version: string) => {
      const dir = Path.join(root, `${name.replace("/", "-")}-${version}`)
      writeFiles(dir, { "upm.json": JSON.stringify({ name, version }), "index.js": `export const v = "${version}"\n` })
      return dir
    }
    return { alice, pkg, root }
  })

describe("publish talks with the server's policy", () => {
  it.scoped("upm publish relays what a persistent handler sends (trust-all), and the release is sealed", () =>
    Effect.gen(function* () {
      const { alice, pkg } = yield* setup({ command: process.execPath, args: [Path.join(ROOT, "examples", "trust-all.mjs")], mode: "persistent" })
      const published = yield* upm(alice, pkg("alice/trusted", "1.0.0"), "publish", "--json")
      ok(published, "publish")
      assert.include(published.stderr, "server: OH YES I TRUST THIS PACKAGE IT IS GOOD")
      assert.strictEqual(JSON.parse(published.stdout).status, "Sealed")
      // propose is the same flow
      const proposed = yield* upm(alice, pkg("alice/trusted", "1.1.0"), "propose", "--json")
      ok(proposed, "propose")
      assert.include(proposed.stderr, "server: OH YES I TRUST THIS PACKAGE IT IS GOOD")
      assert.strictEqual(JSON.parse(proposed.stdout).status, "Sealed")
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("upm publish relays a per-request handler's message (moderation queue): queued, not sealed", () =>
    Effect.gen(function* () {
      const { alice, pkg } = yield* setup({ command: "python3", args: [Path.join(ROOT, "examples", "moderation-queue.py")] })
      const published = yield* upm(alice, pkg("alice/moderated", "1.0.0"), "publish", "--json")
      ok(published, "publish")
      assert.include(published.stderr, "server: Ah okay, I will put it in the list for proposed packages")
      assert.strictEqual(JSON.parse(published.stdout).status, "Queued")
      const versions = yield* upm(alice, pkg("alice/moderated", "1.0.0"), "versions", "alice/moderated")
      assert.notInclude(versions.stdout, "1.0.0")
    }).pipe(Effect.provide(NodeContext.layer)))
})
