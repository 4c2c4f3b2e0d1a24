/** A push into the fs store (a bare git repository) leaves a repository `git fsck --strict` finds clean. */
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { makeFs } from "../../src/services/FsStore.js"
import { deepFiles, makeClient, makeRelease, makeServer } from "./SyncFixtures.js"

describe("sync into the fs store", () => {
  it.scoped("v0, v2 and v3 (deflated) pushes leave a repository git fsck --strict accepts, with the release tags readable", () =>
    Effect.gen(function* () {
      const dir = mkdtempSync(join(tmpdir(), "upm-sync-fsck-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const store = yield* makeFs(dir)
      const server = yield* makeServer({ store })
      for (const versions of [[0], [0, 2], [0, 2, 3]]) {
        const client = yield* makeClient(server, { versions }, true)
        const version = `1.0.${versions.length}`
        const { tag } = yield* makeRelease(client.store, "alice/pkg", version, { ...deepFiles(4, 3, version), "upm.json": "{}" })
        const session = yield* client.connect
        assert.strictEqual(session.version, Math.max(...versions))
        assert.strictEqual((yield* session.push(tag)).status, "Sealed")
        const git = (...args: Array<string>) =>
          execFileSync("git", ["--git-dir", dir, ...args], { stdio: ["ignore", "pipe", "pipe"] }).toString()
        assert.strictEqual(git("fsck", "--strict", "--no-dangling", "--no-progress"), "")
        assert.strictEqual(git("rev-parse", `refs/tags/alice/pkg/v${version}`).trim(), tag)
        assert.match(git("cat-file", "-p", tag), new RegExp(`^object [0-9a-f]{40}\\ntype tree\\ntag alice/pkg/v${version}\\n`))
      }
    }).pipe(Effect.provide(NodeContext.layer)))
})
