/**
 * Peers and upstream with real `upm serve` processes on 127.0.0.1 (issue 7, item 7; docs/peers.md):
 *
 *   A ↔ B ↔ C, and C has A as its upstream.
 *
 * 1. A release published on A travels A → B → C by announcements; `upm install` against C installs it.
 * 2. B stops. A new version is published on A: B's link is down, so C learns of it only through its upstream
 *    (`upm install` against C gets the new version); a second package is published too.
 * 3. B restarts on the same store and port: anti-entropy (one round at start, then every second) pulls what it
 *    missed from A, watched with the sync `versions` query (bounded wait).
 *
 * Each server's port is chosen before any starts (bind port 0, close, reuse the number), since every peer
 * config names the others' addresses. Processes are stopped by the scope's finalizers, also on failure.
 */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Schedule, Scope } from "effect"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { PackageName } from "../../src/domain/Package.js"
import { makeMemory, ObjectStore } from "../../src/services/ObjectStore.js"
import * as SyncClient from "../../src/services/SyncClient.js"
import { makeUser, upm } from "./cliRun.js"
import { signedRelease } from "./release.js"
import { type ServerProcess, spawnServer } from "./server.js"

const HOST = "127.0.0.1"
const step = (text: string) => Effect.sync(() => console.error(`[peers e2e] ${text}`))

/** A port free right now on 127.0.0.1 (bound to port 0 and closed). */
const freePort = Effect.async<number, Error>((resume) => {
  const server = Net.createServer()
  server.once("error", (e) => resume(Effect.fail(e)))
  server.listen(0, HOST, () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

const SECRET_AB = "secret shared by a and b, e2e only"
const SECRET_BC = "secret shared by b and c, e2e only"

/** The sync session on `port` (one connection), in its own scope. */
const withSession = <A>(port: number, f: (session: SyncClient.SyncSession) => Effect.Effect<A, SyncClient.SyncClientError>) =>
  Effect.scoped(Effect.gen(function* () {
    const store = yield* makeMemory
    const client = yield* SyncClient.make(SyncClient.connectTcp).pipe(Effect.provideService(ObjectStore, store))
    return yield* f(yield* client.connect({ host: HOST, port }))
  }))

/** The versions of `name` that the server on `port` holds (the `versions` query answers from what is held). */
const versionsOn = (port: number, name: string) =>
  withSession(port, (s) => s.versions(PackageName.make(name))).pipe(
    Effect.map((vs) => vs.map((v) => `${v.version} ${v.hash}`).sort())
  )

/**
 * Polls `versions` on `server` every 200 ms until it holds exactly `expected` (`version hash` lines), for at most
 * `within`; on time-out fails with what it last saw and the server's log.
 */
const waitForVersions = (server: ServerProcess, label: string, name: string, expected: ReadonlyArray<string>, within: Duration.DurationInput) =>
  Effect.gen(function* () {
    const want = [...expected].sort()
    const start = Date.now()
    let last: string = "(no answer yet)"
    // each query bounded on its own (disconnected: a hung connection must not hold the wait up)
    const attempt = versionsOn(server.port, name).pipe(
      Effect.disconnect,
      Effect.timeoutFail({ duration: "3 seconds", onTimeout: () => new SyncClient.SyncClientError({ reason: "Timeout", detail: "no answer to versions within 3 s" }) }),
      Effect.tap((vs) => Effect.sync(() => { last = vs.join(", ") })),
      Effect.flatMap((vs) => vs.join("\n") === want.join("\n") ? Effect.void : Effect.fail("not yet" as const)),
      Effect.catchAll((e) => {
        if (typeof e !== "string") last = `error: ${e.message}`
        return Effect.fail("not yet" as const)
      })
    )
    yield* attempt.pipe(
      Effect.retry(Schedule.spaced("200 millis")),
      Effect.timeout(within),
      Effect.catchAll(() =>
        Effect.flatMap(server.log, (log) =>
          Effect.dieMessage(`${label} did not hold ${name} [${want.join(", ")}] within ${Duration.format(Duration.decode(within))}; ` +
            `last saw [${last}]\n--- ${label} log ---\n${log}`)))
    )
    return Date.now() - start
  })

const hello = (version: string) => ({
  "upm.json": JSON.stringify({ name: "alice/hello", version }) + "\n",
  "index.js": `export const version = "${version}"\n`,
  lib: { "util.js": "export const util = 1\n" }
})

// Real processes and real time: scopedLive (it.scoped runs on the TestClock, where the polling schedule and
// every timeout below would wait for a clock nobody advances).
describe("peers: three upm serve processes", () => {
  it.scopedLive("A ↔ B ↔ C with C's upstream A: announce chain, install from C, upstream while B is down, B catches up after a restart", () => {
    // every server started, for the logs when the whole test runs out of time
    const started: Array<readonly [string, ServerProcess]> = []
    return Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped({ prefix: "upm-peers-" })
      const [portA, portB, portC] = [yield* freePort, yield* freePort, yield* freePort]
      const addr = (port: number) => `${HOST}:${port}`
      const peers = {
        a: { name: "a", servers: [{ name: "b", address: addr(portB), secret: SECRET_AB }], interval: "1s", timeout: "2s" },
        b: {
          name: "b",
          servers: [{ name: "a", address: addr(portA), secret: SECRET_AB }, { name: "c", address: addr(portC), secret: SECRET_BC }],
          interval: "1s",
          timeout: "2s"
        },
        c: { name: "c", servers: [{ name: "b", address: addr(portB), secret: SECRET_BC }], interval: "1s", timeout: "2s" }
      }
      const configs = {
        a: { host: HOST, peers: peers.a },
        b: { host: HOST, peers: peers.b },
        c: { host: HOST, peers: peers.c, upstream: { address: addr(portA), maxAge: "500ms", timeout: "2s" } }
      }
      for (const [name, config] of Object.entries(configs)) {
        yield* fs.writeFileString(Path.join(dir, `${name}.json`), JSON.stringify(config, null, 2))
      }
      const start = (name: "a" | "b" | "c", port: number) =>
        spawnServer({ port, store: `fs:${Path.join(dir, name)}`, args: ["--config", Path.join(dir, `${name}.json`), "--no-http"] }).pipe(
          Effect.tap((server) => Effect.sync(() => started.push([name, server])))
        )

      const a = yield* start("a", portA)
      const c = yield* start("c", portC)
      // B runs in its own scope so the test can stop it and start it again on the same store and port.
      // (Closed by the test's scope too, so a failure before the stop still stops it.)
      const bScope1 = yield* Effect.acquireRelease(Scope.make(), (scope, exit) => Scope.close(scope, exit))
      const b1 = yield* Scope.extend(start("b", portB), bScope1)
      assert.strictEqual(a.port, portA)
      assert.strictEqual(b1.port, portB)
      assert.strictEqual(c.port, portC)

      // 1. publish hello 1.0.0 on A (a signed push, verified by A as any publish)
      const publisher = yield* makeMemory
      const push = (name: string, version: string, files: Parameters<typeof signedRelease>[3]) =>
        Effect.gen(function* () {
          const { tag } = yield* signedRelease(publisher, name, version, files)
          const pushed = yield* Effect.scoped(Effect.gen(function* () {
            const client = yield* SyncClient.make(SyncClient.connectTcp).pipe(Effect.provideService(ObjectStore, publisher))
            const session = yield* client.connect({ host: HOST, port: portA })
            return yield* session.push(tag)
          }))
          assert.strictEqual(pushed.status, "Sealed")
          return tag
        })
      yield* step("publish 1.0.0 on A")
      const v1 = yield* push("alice/hello", "1.0.0", hello("1.0.0"))
      yield* step("pushed 1.0.0")
      // announced A → B, sealed on B, announced B → C
      yield* waitForVersions(b1, "B", "alice/hello", [`1.0.0 ${v1}`], "15 seconds")
      yield* waitForVersions(c, "C", "alice/hello", [`1.0.0 ${v1}`], "15 seconds")
      yield* step("install from C")
      // install from C with the CLI
      const bob = makeUser(dir, "bob", addr(portC))
      const app1 = Path.join(dir, "app1")
      Fs.mkdirSync(app1)
      const installed = yield* upm(bob, app1, "install", "alice/hello")
      assert.strictEqual(installed.code, 0, `install from C: ${installed.stdout}\n${installed.stderr}`)
      assert.strictEqual(Fs.readFileSync(Path.join(app1, "upm_modules/alice/hello/index.js"), "utf8"), "export const version = \"1.0.0\"\n")
      assert.strictEqual(JSON.parse(Fs.readFileSync(Path.join(app1, "upm.lock"), "utf8")).packages[0].tag, v1)

      yield* step("stop B")
      // 2. stop B; publish more on A
      yield* b1.kill("SIGTERM")
      assert.strictEqual(yield* b1.exitCode, 0)
      yield* Scope.close(bScope1, Exit.void)
      const v2 = yield* push("alice/hello", "1.1.0", hello("1.1.0"))
      const other = yield* push("alice/other", "0.1.0", { "upm.json": "{\"name\":\"alice/other\",\"version\":\"0.1.0\"}\n", "a.js": "a\n" })
      yield* step("install via upstream")
      // C has no peer link that could bring 1.1.0 (B is down): a fresh install from C gets it through the upstream
      const app2 = Path.join(dir, "app2")
      Fs.mkdirSync(app2)
      const viaUpstream = yield* upm(bob, app2, "install", "alice/hello@^1.1.0")
      assert.strictEqual(viaUpstream.code, 0, `install from C through its upstream: ${viaUpstream.stdout}\n${viaUpstream.stderr}`)
      assert.strictEqual(Fs.readFileSync(Path.join(app2, "upm_modules/alice/hello/index.js"), "utf8"), "export const version = \"1.1.0\"\n")
      assert.include(yield* c.log, "alice/hello")

      yield* step("restart B")
      // 3. restart B on the same store and port; it catches up (anti-entropy with A), within 30 s
      const b2 = yield* start("b", portB)
      const caughtUp = yield* waitForVersions(b2, "B (restarted)", "alice/hello", [`1.0.0 ${v1}`, `1.1.0 ${v2}`], "30 seconds")
      yield* waitForVersions(b2, "B (restarted)", "alice/other", [`0.1.0 ${other}`], "30 seconds")
      // and C, which held only what it fetched, gets alice/other from B
      yield* waitForVersions(c, "C", "alice/other", [`0.1.0 ${other}`], "30 seconds")
      console.log(`B caught up ${caughtUp} ms after its restart`)
      // no conflicts anywhere
      for (const [label, server] of [["A", a], ["B", b2], ["C", c]] as const) {
        assert.notInclude(yield* server.log, "release conflict", `${label} logged a conflict`)
      }
    }).pipe(
      Effect.timeoutFail({ duration: "75 seconds", onTimeout: () => "the peers test ran out of its 75 s" }),
      Effect.catchAll((e) =>
        Effect.forEach(started, ([name, server]) => Effect.map(server.log, (log) => `--- ${name} ---\n${log}`)).pipe(
          Effect.flatMap((logs) => Effect.dieMessage(`${String(e)}\n${logs.join("\n")}`))
        )),
      Effect.provide(NodeContext.layer)
    )
  }, 90_000)
})
