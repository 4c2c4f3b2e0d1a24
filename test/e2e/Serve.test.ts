/**
 * `upm serve` as a real process: it logs its address, speaks both protocols on one port, and shuts down
 * gracefully on SIGTERM/SIGINT.
 */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { PackageName } from "../../src/domain/Package.js"
import { makeMemory, missingReachable, ObjectStore } from "../../src/services/ObjectStore.js"
import * as SyncClient from "../../src/services/SyncClient.js"
import { git, gitFsck, graphOf, signedRelease } from "./release.js"
import { connect } from "./tcp.js"
import { spawnServer } from "./server.js"

const tempDir = Effect.flatMap(FileSystem.FileSystem, (fs) => fs.makeTempDirectoryScoped({ prefix: "upm-serve-" }))

describe("upm serve", () => {
  it.scoped("listens on the logged port, answers the sync handshake and queries, and serves the message protocol on the same port", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const server = yield* spawnServer({ store: `fs:${dir}/store` })
      assert.strictEqual(server.host, "127.0.0.1")
      const sync = yield* connect(server.port)
      yield* sync.write("lit?0\n")
      assert.strictEqual((yield* sync.waitFor(6)).toString(), "lit!0\n")
      yield* sync.write("?match alice/nothing ^1.0.0\n\n")
      assert.strictEqual((yield* sync.waitFor(9)).toString(), "lit!0\n!\n\n")
      // anything else is the message protocol: a frame that is not a valid message gets an error frame
      const message = yield* connect(server.port)
      yield* message.write(Buffer.from([2, 0, 0, 0, 0x7b, 0x7d]))
      const length = (yield* message.waitFor(4)).readUInt32LE(0)
      const frame = (yield* message.waitFor(4 + length)).subarray(4, 4 + length)
      assert.strictEqual(JSON.parse(frame.toString()).header.status, "bad-request")
      // the fs store is a bare git repository
      const fs = yield* FileSystem.FileSystem
      assert.isTrue(yield* fs.exists(`${dir}/store/objects`))
      const startLine = yield* server.waitForLog("message=starting")
      assert.include(startLine, `store=fs:${dir}/store`)
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("a push over TCP is sealed, matched, pulled back whole, and the fs store passes git fsck --strict", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const server = yield* spawnServer({ store: `fs:${dir}/store` })
      const publisher = yield* makeMemory
      const files = {
        "upm.json": "{\"name\":\"alice/hello\",\"version\":\"1.0.0\"}\n",
        "README.md": "# hello\n",
        src: { "index.js": "export const hello = 1\n", lib: { "a.js": "a\n", "b.js": "b\n", deep: { "c.js": "c\n" } } }
      }
      const { tag } = yield* signedRelease(publisher, "alice/hello", "1.0.0", files)
      const graph = yield* graphOf(publisher, tag)
      const address = { host: server.host, port: server.port }

      const pushed = yield* Effect.scoped(Effect.gen(function* () {
        const client = yield* SyncClient.make(SyncClient.connectTcp).pipe(Effect.provideService(ObjectStore, publisher))
        const session = yield* client.connect(address)
        return yield* session.push(tag)
      }))
      assert.strictEqual(pushed.status, "Sealed")
      assert.strictEqual(pushed.objects, graph.length) // every object once, nothing else

      const installer = yield* makeMemory
      const pulled = yield* Effect.scoped(Effect.gen(function* () {
        const client = yield* SyncClient.make(SyncClient.connectTcp).pipe(Effect.provideService(ObjectStore, installer))
        const session = yield* client.connect(address)
        const match = yield* session.match(PackageName.make("alice/hello"))
        assert.isTrue(Option.isSome(match))
        return yield* session.pull(Option.getOrThrow(match).hash)
      }))
      assert.strictEqual(pulled.root, tag)
      assert.deepStrictEqual(yield* missingReachable(tag).pipe(Effect.provideService(ObjectStore, installer)), [])

      const fsck = yield* gitFsck(`${dir}/store`)
      assert.isTrue(fsck.ok, fsck.output)
      assert.strictEqual((yield* git(`${dir}/store`, "rev-parse", "refs/tags/alice/hello/v1.0.0")).trim(), tag)
      assert.strictEqual((yield* git(`${dir}/store`, "cat-file", "-t", tag)).trim(), "tag")
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("SIGTERM: stops accepting, lets the open session finish, then exits 0", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const server = yield* spawnServer({ store: `fs:${dir}/store`, args: ["--shutdown-grace", "30s"] })
      const c = yield* connect(server.port)
      yield* c.write("lit?0\n")
      yield* c.waitFor(6)
      yield* server.kill("SIGTERM")
      yield* server.waitForLog("message=\"shutting down\" active=1")
      const refused = yield* Effect.scoped(connect(server.port)).pipe(Effect.flip)
      assert.strictEqual(refused.code, "ECONNREFUSED")
      // the session still works during the drain
      yield* c.write("?versions alice/nothing\n\n")
      const got = yield* c.waitFor(9).pipe(Effect.tapError(() => Effect.flatMap(server.log, (l) => Effect.sync(() => console.error(l)))))
      assert.strictEqual(got.toString(), "lit!0\n!\n\n")
      yield* c.end
      yield* c.closed
      assert.strictEqual(yield* server.exitCode, 0)
      assert.include(yield* server.log, "message=stopped")
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("SIGINT: a session still open when the grace period ends is closed, and the server exits 0", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const server = yield* spawnServer({ store: `fs:${dir}/store`, args: ["--shutdown-grace", "200ms"] })
      const c = yield* connect(server.port)
      yield* c.write("lit?0\n")
      yield* c.waitFor(6)
      yield* server.kill("SIGINT")
      yield* c.closed
      assert.strictEqual(yield* server.exitCode, 0)
      assert.include(yield* server.log, "shutdown grace expired")
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("a bad setting is reported with its source and field, and nothing starts", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const fs = yield* FileSystem.FileSystem
      yield* fs.writeFileString(`${dir}/upm.server.json`, JSON.stringify({ limits: { maxConnections: 0 } }))
      const failed = yield* spawnServer({ args: ["--config", `${dir}/upm.server.json`], startTimeout: "30 seconds" }).pipe(Effect.flip)
      assert.include(failed.log, `config file ${dir}/upm.server.json`)
      assert.include(failed.log, "limits.maxConnections: expected a positive integer")
    }).pipe(Effect.provide(NodeContext.layer)))
})
