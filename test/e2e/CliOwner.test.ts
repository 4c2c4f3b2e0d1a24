/**
 * `upm owner` end to end with real processes: a namespace gets a second key, which can then publish (and an
 * installer who pinned the first key follows the signed records to the second); removing it stops that; a key that does not own the namespace cannot change it; the last key cannot be removed; a
 * member namespace's key may publish.
 */
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { makeUser, upm, writeFiles } from "./cliRun.js"
import { spawnServer } from "./server.js"

const ok = (r: { code: number; stdout: string; stderr: string }, what: string) =>
  assert.strictEqual(r.code, 0, `${what} failed (${r.code}):\n${r.stdout}\n${r.stderr}`)

describe("upm owner end to end", () => {
  it.scoped("add a key, publish with it, remove it; non-owners and the last key are refused; members publish", () =>
    Effect.gen(function* () {
      const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "upm-owner-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(root, { recursive: true, force: true })))
      const server = yield* spawnServer({ store: `fs:${Path.join(root, "data")}` })
      const alice = makeUser(root, "alice", server.address)
      const bob = makeUser(root, "bob", server.address)
      const pkg = (name: string, version: string) => {
        const dir = Path.join(root, "src", `${name.replace("/", "-")}-${version}`)
        writeFiles(dir, { "upm.json": JSON.stringify({ name, version }), "index.js": `export const v = "${version}"\n` })
        return dir
      }

      const first = (yield* upm(alice, root, "keygen")).stdout.split("\n")[0]!
      ok(yield* upm(alice, root, "publish", pkg("alice/one", "1.0.0")), "first publish (claims alice)")
      // bob installs it: alice's first key is pinned for him (trust on first use).
      const app = Path.join(root, "app")
      Fs.mkdirSync(app)
      ok(yield* upm(bob, app, "install", "alice/one"), "bob installs 1.0.0")
      const laptop = Path.join(alice.home, "laptop")
      const made = yield* upm(alice, root, "keygen", "--out", laptop)
      ok(made, "keygen laptop")
      const second = made.stdout.split("\n")[0]!
      const secondLine = made.stdout.split("\n")[1]!

      const listed = yield* upm(alice, root, "owner", "list", "alice", "--json")
      ok(listed, "owner list")
      const before = JSON.parse(listed.stdout)
      assert.deepStrictEqual(before.keys.map((k: { fingerprint: string }) => k.fingerprint), [first])
      assert.deepStrictEqual(before.members, [])

      // The laptop key is not an owner yet: its release is refused.
      const early = yield* upm(alice, root, "publish", "--key", laptop, pkg("alice/one", "1.1.0"))
      assert.strictEqual(early.code, 5, early.stderr)

      // alice adds it (signed with her first key, from the .pub file)...
      const added = yield* upm(alice, root, "owner", "add", "alice", "--key", `${laptop}.pub`)
      ok(added, "owner add --key")
      assert.include(added.stderr, `added key ${second}`)
      assert.include(added.stdout, second)
      // ...and now it can publish.
      const published = yield* upm(alice, root, "publish", "--json", "--key", laptop, pkg("alice/one", "1.1.0"))
      ok(published, "publish with the added key")
      assert.strictEqual(JSON.parse(published.stdout).signer, second)
      // bob's pin follows: the new key was added by a record signed with the key he trusts.
      const followed = yield* upm(bob, app, "install", "alice/one@^1.1.0")
      ok(followed, "bob installs the release signed by the added key")
      assert.include(followed.stderr, "alice's keys changed through records signed by a key you trusted")
      assert.strictEqual(Fs.readFileSync(Path.join(app, "upm_modules/alice/one/index.js"), "utf8"), `export const v = "1.1.0"\n`)

      // A key that does not own the namespace cannot change it (bob signs with his own key).
      ok(yield* upm(bob, root, "keygen"), "bob keygen")
      const intruder = yield* upm(bob, root, "owner", "add", "alice", "--key", Path.join(bob.home, ".upm", "id_ed25519.pub"))
      assert.strictEqual(intruder.code, 5, intruder.stderr)
      assert.include(intruder.stderr, "is not an owner key of alice")
      assert.notInclude(intruder.stderr, "    at ") // no stack trace

      // Removing the laptop key (given as its line, signed by the laptop key itself) stops its releases.
      ok(yield* upm(alice, root, "owner", "remove", "alice", "--key", secondLine, "--signing-key", laptop), "owner remove --key")
      const late = yield* upm(alice, root, "publish", "--key", laptop, pkg("alice/one", "1.2.0"))
      assert.strictEqual(late.code, 5, late.stderr)
      assert.include(late.stderr, "owner")

      // The last key stays: refused before anything is sent, saying why.
      const last = yield* upm(alice, root, "owner", "remove", "alice", "--key", Path.join(alice.home, ".upm", "id_ed25519.pub"))
      assert.strictEqual(last.code, 2, last.stderr)
      assert.include(last.stderr, "the last key cannot be removed")

      // Members: bob's namespace may publish in alice's once alice adds it.
      ok(yield* upm(bob, root, "publish", pkg("bob/tools", "1.0.0")), "bob claims bob")
      const refused = yield* upm(bob, root, "publish", pkg("alice/shared", "1.0.0"))
      assert.strictEqual(refused.code, 5, refused.stderr)
      ok(yield* upm(alice, root, "owner", "add", "alice", "--member", "bob"), "owner add --member")
      ok(yield* upm(bob, root, "publish", pkg("alice/shared", "1.0.0")), "member publishes")
      const after = JSON.parse((yield* upm(bob, root, "owner", "list", "alice", "--json")).stdout)
      assert.deepStrictEqual(after.members, ["bob"])
      assert.deepStrictEqual(after.keys.map((k: { fingerprint: string }) => k.fingerprint), [first])
      assert.strictEqual(after.seq, 3) // claim, add-key, remove-key, add-member
      ok(yield* upm(alice, root, "owner", "remove", "alice", "--member", "bob"), "owner remove --member")

      // Usage errors a person can act on.
      const nobody = yield* upm(alice, root, "owner", "list", "nobody")
      assert.strictEqual(nobody.code, 4, nobody.stderr)
      assert.include(nobody.stderr, "upm owner claim nobody")
      const privateKey = yield* upm(alice, root, "owner", "add", "alice", "--key", laptop)
      assert.strictEqual(privateKey.code, 2, privateKey.stderr)
      assert.include(privateKey.stderr, `ssh-keygen -y -f ${laptop}`)
      const neither = yield* upm(alice, root, "owner", "add", "alice")
      assert.strictEqual(neither.code, 2, neither.stderr)
      assert.include(neither.stderr, "--key or --member")
    }).pipe(Effect.provide(NodeContext.layer)), { timeout: 300_000 })
})
