/**
 * Sync protocol v0 against v2 (upm's extension) on 10,000 small files in nested folders (4 levels), over TCP on
 * 127.0.0.1 through the real Listener: push and pull wall time, WANT frames and request waves, with fs stores
 * on tmpfs (or memory stores with UPM_BENCH_STORE=memory). git's own push and clone of the same tree over
 * file:// are timed in the same run for scale (git writes one pack; upm's fs store one file per object).
 *
 *   npx tsx bench/syncProtocol.ts
 *
 * The full comparison with `git daemon` on real npm packages is bench/sync.ts.
 */
import { NodeContext } from "@effect/platform-node"
import { Context, Duration, Effect, Layer } from "effect"
import { execFileSync } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { SyncProtocol } from "../src/services/Connection.js"
import { makeFs } from "../src/services/FsStore.js"
import * as Listener from "../src/services/Listener.js"
import { makeMemory, ObjectStore } from "../src/services/ObjectStore.js"
import * as SyncClient from "../src/services/SyncClient.js"
import { type Files, makeRelease, makeServer } from "../test/services/SyncFixtures.js"

const base = existsSync("/dev/shm") ? "/dev/shm" : tmpdir()
const work = mkdtempSync(join(base, "upm-bench-sync-protocol-"))
const memory = process.env["UPM_BENCH_STORE"] === "memory"

// 10 × 10 folders, each with inner/deeper/ holding 100 files of 200–500 bytes.
const files: Record<string, Files> = {}
const onDisk = join(work, "tree")
let n = 0
for (let a = 0; a < 10; a++) {
  const top: Record<string, Files> = {}
  for (let b = 0; b < 10; b++) {
    const leaf: Record<string, string> = {}
    const dir = join(onDisk, `top${a}`, `d${b}`, "inner", "deeper")
    mkdirSync(dir, { recursive: true })
    for (let c = 0; c < 100; c++) {
      n++
      const text = `file ${n} ${"x".repeat(200 + (n % 300))}\n`
      leaf[`f${c}.txt`] = text
      writeFileSync(join(dir, `f${c}.txt`), text)
    }
    top[`d${b}`] = { inner: { deeper: leaf } }
  }
  files[`top${a}`] = top
}

const time = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.map(Effect.timed(effect), ([d, a]) => [Duration.toMillis(d), a] as const)

let storeCount = 0
const newStore = memory ? makeMemory : Effect.suspend(() => makeFs(join(work, `store-${storeCount++}`)))

const program = Effect.scoped(Effect.gen(function* () {
  const server = yield* makeServer({ store: yield* newStore })
  const ctx = yield* Layer.build(Listener.layer({ ...Listener.defaultOptions, port: 0 }).pipe(
    Layer.provide(Layer.mergeAll(Layer.succeed(SyncProtocol, server.sync), Listener.layerRefuse))))
  const address = Context.get(ctx, Listener.Listener).address
  console.log(`10,000 files, ${memory ? "memory" : `fs stores on ${base}`}, TCP 127.0.0.1`)
  for (const versions of [[0], [0, 2]]) {
    const local = yield* newStore
    const { tag } = yield* makeRelease(local, "bench/tenk", `1.0.${versions.length}`, { ...files, v: String(versions) })
    const client = yield* SyncClient.make(SyncClient.connectTcp, { versions }).pipe(Effect.provideService(ObjectStore, local))
    const [pushMs, pushed] = yield* time(Effect.flatMap(client.connect(address), (s) => s.push(tag)))
    const other = yield* newStore
    const puller = yield* SyncClient.make(SyncClient.connectTcp, { versions }).pipe(Effect.provideService(ObjectStore, other))
    const [pullMs, pulled] = yield* time(Effect.flatMap(puller.connect(address), (s) => s.pull(tag)))
    const v = Math.max(...versions)
    console.log(`v${v} push: ${pushMs.toFixed(0)} ms, ${pushed.objects} objects, ${(pushed.bytes / 1e6).toFixed(2)} MB, WANT frames ${pushed.wants}`)
    console.log(`v${v} pull: ${pullMs.toFixed(0)} ms, ${pulled.objects} objects, WANT frames ${pulled.wants}, request waves ${pulled.rounds}`)
  }
}))

const git = (cwd: string, ...args: Array<string>) => execFileSync("git", args, { cwd, stdio: ["ignore", "pipe", "pipe"] })
const gitTimes = () => {
  git(onDisk, "init", "-q")
  git(onDisk, "add", "-A")
  git(onDisk, "-c", "user.email=b@e", "-c", "user.name=bench", "commit", "-qm", "x")
  git(work, "init", "-q", "--bare", "push.git")
  let t = performance.now()
  git(onDisk, "push", "-q", `file://${join(work, "push.git")}`, "HEAD:refs/heads/main")
  const push = performance.now() - t
  t = performance.now()
  git(work, "clone", "-q", "--bare", `file://${onDisk}`, "clone.git")
  const clone = performance.now() - t
  console.log(`git push (file://): ${push.toFixed(0)} ms; git clone --bare (file://): ${clone.toFixed(0)} ms`)
}

Effect.runPromise(program.pipe(Effect.provide(NodeContext.layer)))
  .then(gitTimes)
  .finally(() => rmSync(work, { recursive: true, force: true }))
