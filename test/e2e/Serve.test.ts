/**
 * `upm serve` as a real process: it logs its address, speaks both protocols on one port, and shuts down
 * gracefully on SIGTERM/SIGINT.
 */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
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
