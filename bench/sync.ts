/**
 * bench/sync.ts — publish (push) and install (pull + export) against a real `upm serve`, compared in the same
 * run with `git push` / `git clone` of the same tree over `git daemon` on 127.0.0.1.
 *
 *   npx tsx bench/sync.ts            # every corpus
 *   npx tsx bench/sync.ts lodash 10k # some of them (lodash, typescript, 10k, random)
 *
 * Corpora: (a) real packages fetched now with `npm pack` (lodash@4.17.21, typescript@5.6.3), (b) 10,000 seeded
 * text files in nested folders, (c) 20 × 5 MiB random files; for each, (d) a republish with one file changed.
 * Everything runs on /dev/shm (creating files dominates on disk; see DESIGN.md): UPM_BENCH_DIR overrides it.
 * Installs and clones alternate, UPM_BENCH_RUNS (3) of each, medians reported: the machine may be shared.
 *
 * upm: the server is `node bin/upm.js serve` on a fresh fs store (its peak RSS is VmHWM from /proc), the client
 * is this process (SyncClient over TCP into an fs store, default protocol negotiation). Publish is the push of
 * an imported, signed release; install is connect + match + pull + export into an empty directory.
 * git: publish is `git push` of a committed work tree into a bare repository served by `git daemon
 * --enable=receive-pack`; install is `git clone` (checkout included). Import/commit times are reported apart.
 */
import { NodeContext } from "@effect/platform-node"
import { Effect, Layer, Option, Stream } from "effect"
import { type ChildProcess, execFile, spawn } from "node:child_process"
import { createCipheriv, createHash } from "node:crypto"
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { PackageName, Version } from "../src/domain/Package.js"
import { exportTree } from "../src/services/Exporter.js"
import { layerFs } from "../src/services/FsStore.js"
import { importDirectory } from "../src/services/Importer.js"
import { getDecoded, ObjectStore } from "../src/services/ObjectStore.js"
import { signRelease } from "../src/services/Signer.js"
import * as SyncClient from "../src/services/SyncClient.js"
import { memoryKey } from "../test/services/KeysFixtures.js"

const ROOT = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "..")
const BASE = Path.join(process.env["UPM_BENCH_DIR"] ?? "/dev/shm", `upm-bench-${process.pid}`)
// The server runs from a private build of src/ (dist/ is shared with other work in progress).
const BUILD = Path.join(ROOT, ".bench", `sync-${process.pid}`)
const BIN = Path.join(BUILD, "upm.js")
/** Extra node flags for the server (e.g. UPM_BENCH_SERVER_NODE="--cpu-prof --cpu-prof-dir=/tmp/prof"). */
const SERVER_NODE = (process.env["UPM_BENCH_SERVER_NODE"] ?? "").split(" ").filter((a) => a.length > 0)
const KEY = memoryKey("alice_ed25519")

// ---------------------------------------------------------------------------------------------
// Processes

const run = (cmd: string, args: ReadonlyArray<string>, options: { cwd?: string; env?: Record<string, string> } = {}) =>
  new Promise<{ stdout: string; stderr: string }>((resolve, reject) => {
    execFile(cmd, args, { cwd: options.cwd, env: { ...process.env, ...options.env }, maxBuffer: 256 * 1024 * 1024 }, (error, stdout, stderr) =>
      error === null ? resolve({ stdout, stderr }) : reject(new Error(`${cmd} ${args.join(" ")}: ${error.message}\n${stderr}`)))
  })

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = Net.createServer()
    s.listen(0, "127.0.0.1", () => {
      const address = s.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      s.close(() => resolve(port))
    })
  })

const waitForLine = (child: ChildProcess, pattern: RegExp) =>
  new Promise<string>((resolve, reject) => {
    let buffer = ""
    const onData = (d: Buffer) => {
      buffer += d.toString()
      const line = buffer.split("\n").find((l) => pattern.test(l))
      if (line !== undefined) {
        child.stderr?.off("data", onData)
        child.stderr?.resume()
        resolve(line)
      }
    }
    child.stderr?.on("data", onData)
    child.once("exit", (code) => reject(new Error(`exited with ${code} before ${pattern}: ${buffer}`)))
  })

const stop = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once("exit", () => resolve())
    child.kill("SIGTERM")
  })

const rssMiB = (pid: number, field: "VmHWM" | "VmRSS") => {
  const status = readFileSync(`/proc/${pid}/status`, "utf8")
  const kb = Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN)
  return kb / 1024
}
const peakRssMiB = (pid: number) => rssMiB(pid, "VmHWM")

/** `--no-http` where the server has an HTTP side (it would otherwise take port 4823). */
const serveExtraArgs = async () => {
  const { stdout } = await run(process.execPath, [BIN, "serve", "--help"]).catch(() => ({ stdout: "" }))
  return stdout.includes("--no-http") ? ["--no-http"] : []
}

const startUpm = async (store: string) => {
  const extra = await serveExtraArgs()
  const child = spawn(process.execPath, [...SERVER_NODE, BIN, "serve", "--port", "0", "--store", `fs:${store}`, ...extra], { stdio: ["ignore", "ignore", "pipe"] })
  const line = await waitForLine(child, /message=listening/)
  const port = Number(/\bport=(\d+)/.exec(line)?.[1])
  return { child, port }
}

const startGitDaemon = async (base: string) => {
  const port = await freePort()
  const child = spawn("git", ["daemon", "--export-all", "--enable=receive-pack", `--base-path=${base}`, `--port=${port}`, "--listen=127.0.0.1", "--reuseaddr", "--informative-errors", base], { stdio: ["ignore", "ignore", "pipe"] })
  // git daemon says nothing when ready: wait until it accepts connections
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = Net.connect({ host: "127.0.0.1", port }, () => { s.destroy(); resolve(true) })
      s.on("error", () => resolve(false))
    })
    if (ok) break
    await new Promise((r) => setTimeout(r, 25))
  }
  return { child, port }
}

// ---------------------------------------------------------------------------------------------
// Corpora

/** Deterministic pseudo-random bytes (AES-256-CTR over zeros with a fixed key): fast and incompressible. */
const randomBytes = (seed: string, size: number) => {
  const key = createHash("sha256").update(seed).digest()
  const cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16))
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()])
}

const words = ["alpha", "beta", "gamma", "delta", "package", "server", "module", "export", "const", "return", "value", "index"]

const makeSmallFiles = (dir: string) => {
  // 10 × 10 folders × 100 files, ~4.6 kB of seeded text each (46 MB), like DESIGN.md's corpus
  const noise = randomBytes("10k", 10_000 * 64)
  let n = 0
  for (let a = 0; a < 10; a++) {
    for (let b = 0; b < 10; b++) {
      const folder = Path.join(dir, `dir-${a}`, `sub-${b}`)
      mkdirSync(folder, { recursive: true })
      for (let f = 0; f < 100; f++, n++) {
        const lines: Array<string> = []
        let size = 0
        let i = 0
        while (size < 4600) {
          const line = `${words[noise[(n * 64 + (i % 64)) % noise.length]! % words.length]} ${n} ${i} ${noise.readUInt32LE((n * 64) % (noise.length - 4)) ^ i}\n`
          lines.push(line)
          size += line.length
          i++
        }
        writeFileSync(Path.join(folder, `file-${f}.txt`), lines.join(""))
      }
    }
  }
  writeFileSync(Path.join(dir, "upm.json"), `{"name":"bench/small","version":"1.0.0"}\n`)
}

const makeRandomFiles = (dir: string) => {
  mkdirSync(dir, { recursive: true })
  for (let i = 0; i < 20; i++) writeFileSync(Path.join(dir, `blob-${i}.bin`), randomBytes(`random-${i}`, 5 * 1024 * 1024))
  writeFileSync(Path.join(dir, "upm.json"), `{"name":"bench/random","version":"1.0.0"}\n`)
}

const npmPackage = async (spec: string, dir: string) => {
  const tmp = `${dir}.pack`
  mkdirSync(tmp, { recursive: true })
  const { stdout } = await run("npm", ["pack", spec, "--silent", "--pack-destination", tmp])
  const file = Path.join(tmp, stdout.trim().split("\n").pop() ?? "")
  mkdirSync(dir, { recursive: true })
  await run("tar", ["-xzf", file, "-C", dir, "--strip-components=1"])
  rmSync(tmp, { recursive: true, force: true })
}

interface Corpus {
  readonly name: string
  readonly dir: string
  /** The file the republish changes (relative). */
  readonly change: string
}

// ---------------------------------------------------------------------------------------------
// upm side

interface Counted {
  readonly connect: SyncClient.Connect
  readonly reset: () => void
  readonly read: () => { sent: number; received: number }
}

/** connectTcp, counting the bytes on the wire both ways. */
const countingConnect = (): Counted => {
  let sent = 0
  let received = 0
  return {
    connect: (address) =>
      Effect.map(SyncClient.connectTcp(address), (t) => ({
        input: t.input.pipe(Stream.tap((bytes) => Effect.sync(() => { received += bytes.length }))),
        write: (bytes: Uint8Array) => Effect.zipRight(Effect.sync(() => { sent += bytes.length }), t.write(bytes))
      })),
    reset: () => { sent = 0; received = 0 },
    read: () => ({ sent, received })
  }
}

const withStore = <A, E>(dir: string, effect: Effect.Effect<A, E, ObjectStore | NodeContext.NodeContext>) =>
  Effect.runPromise(effect.pipe(Effect.provide(Layer.provideMerge(layerFs(dir), NodeContext.layer))) as Effect.Effect<A, never, never>)

const upmPublish = (clientStore: string, dir: string, name: string, version: string, port: number, counted: Counted) =>
  withStore(clientStore, Effect.gen(function* () {
    const t0 = performance.now()
    const imported = yield* importDirectory(dir)
    const signed = yield* signRelease(KEY, {
      tree: imported.tree,
      metadata: { name: PackageName.make(name), version: Version.make(version) },
      tagger: { name: "Bench", email: "bench@example.com" },
      time: { seconds: 1_700_000_000 }
    })
    const store = yield* ObjectStore
    yield* store.put("tag", signed.body)
    const prepare = performance.now() - t0
    counted.reset()
    const t1 = performance.now()
    const result = yield* Effect.scoped(Effect.gen(function* () {
      const client = yield* SyncClient.make(counted.connect)
      const session = yield* client.connect({ host: "127.0.0.1", port })
      return yield* session.push(signed.hash)
    }))
    return { prepare, seconds: (performance.now() - t1) / 1000, result, wire: counted.read(), files: imported.files, bytes: imported.bytes }
  }))

const upmInstall = (clientStore: string, target: string, name: string, port: number, counted: Counted, versions?: ReadonlyArray<number>) =>
  withStore(clientStore, Effect.gen(function* () {
    counted.reset()
    const t0 = performance.now()
    const pulled = yield* Effect.scoped(Effect.gen(function* () {
      const client = yield* SyncClient.make(counted.connect, versions === undefined ? {} : { versions })
      const session = yield* client.connect({ host: "127.0.0.1", port })
      const match = yield* session.match(PackageName.make(name))
      const release = Option.getOrThrow(match)
      return { pull: yield* session.pull(release.hash), version: session.version }
    }))
    const tPull = performance.now()
    const tag = yield* getDecoded(pulled.pull.root)
    if (tag.type !== "tag") return yield* Effect.dieMessage(`${pulled.pull.root} is not a tag`)
    const exported = yield* exportTree(tag.tag.object, target)
    return {
      seconds: (performance.now() - t0) / 1000,
      pullSeconds: (tPull - t0) / 1000,
      pull: pulled.pull,
      version: pulled.version,
      wire: counted.read(),
      exported
    }
  }))

// ---------------------------------------------------------------------------------------------
// git side

const GIT_ID = ["-c", "user.name=Bench", "-c", "user.email=bench@example.com", "-c", "commit.gpgsign=false"]

const gitBytes = (stderr: string, what: "Writing objects" | "Receiving objects") => {
  const line = stderr.split(/[\r\n]/).filter((l) => l.includes(what) && l.includes("100%")).pop() ?? ""
  const m = /, (\d+(?:\.\d+)?) (bytes|KiB|MiB|GiB)/.exec(line)
  if (m === null) return NaN
  const unit = { bytes: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[m[2] as "bytes"]
  return Number(m[1]) * unit
}

const gitRequests = (trace: string) => {
  if (!existsSync(trace)) return NaN
  const text = readFileSync(trace, "utf8")
  // client-side flush packets: one per request the client sends (ref advertisement excluded)
  return text.split("\n").filter((l) => /packet:\s+\S+> 0000$/.test(l)).length
}

const gitPublish = async (work: string, url: string, message: string, trace: string) => {
  await run("git", ["-C", work, "add", "-A"])
  await run("git", [...GIT_ID, "-C", work, "commit", "-q", "-m", message])
  rmSync(trace, { force: true })
  const t0 = performance.now()
  const { stderr } = await run("git", ["-C", work, "push", "--progress", url, "HEAD:refs/heads/main"], { env: { GIT_TRACE_PACKET: trace } })
  return { seconds: (performance.now() - t0) / 1000, bytes: gitBytes(stderr, "Writing objects"), requests: gitRequests(trace) }
}

const gitClone = async (url: string, target: string, trace: string) => {
  rmSync(trace, { force: true })
  const t0 = performance.now()
  const { stderr } = await run("git", ["clone", "--progress", url, target], { env: { GIT_TRACE_PACKET: trace } })
  return { seconds: (performance.now() - t0) / 1000, bytes: gitBytes(stderr, "Receiving objects"), requests: gitRequests(trace) }
}

// ---------------------------------------------------------------------------------------------
// One corpus

/** Installs and clones per corpus (alternating); the medians are reported. */
const RUNS = Number(process.env["UPM_BENCH_RUNS"] ?? 3)
const medianBy = <A>(xs: ReadonlyArray<A>, key: (a: A) => number): A => [...xs].sort((a, b) => key(a) - key(b))[Math.floor(xs.length / 2)]!
const mib = (bytes: number) => bytes / (1024 * 1024)
const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : "n/a")
const ratio = (a: number, b: number) => `${fmt(a / b)}×`

const benchCorpus = async (corpus: Corpus) => {
  const work = Path.join(BASE, `${corpus.name}-work`)
  rmSync(work, { recursive: true, force: true })
  mkdirSync(work, { recursive: true })
  const serverStore = Path.join(work, "server")
  const clientStore = Path.join(work, "client")
  const installStore = Path.join(work, "install-store")
  const name = `bench/${corpus.name}`
  const counted = countingConnect()
  const lines: Array<string> = []
  const say = (s: string) => { lines.push(s); console.log(s) }

  // Both servers run side by side; publishes first, then installs alternate upm / git (RUNS each, medians), so
  // both meet the same load (this machine is shared), then the one-file republishes.
  const upm = await startUpm(serverStore)
  await new Promise((r) => setTimeout(r, 1000)) // let start-up settle
  const idleRss = rssMiB(upm.child.pid ?? 0, "VmRSS")
  const base = Path.join(work, "git-base")
  mkdirSync(base, { recursive: true })
  await run("git", ["init", "-q", "--bare", "-b", "main", Path.join(base, "repo.git")])
  const daemon = await startGitDaemon(base)
  const url = `git://127.0.0.1:${daemon.port}/repo.git`
  const gitWork = Path.join(work, "git-work")
  cpSync(corpus.dir, gitWork, { recursive: true })
  await run("git", ["-C", gitWork, "init", "-q", "-b", "main"])
  const trace = Path.join(work, "git-trace")

  const publish = await upmPublish(clientStore, corpus.dir, name, "1.0.0", upm.port, counted)
  const tCommit = performance.now()
  const gitPush = await gitPublish(gitWork, url, "v1", trace)
  const commitSeconds = (performance.now() - tCommit) / 1000 - gitPush.seconds

  const installs: Array<Awaited<ReturnType<typeof upmInstall>>> = []
  const clones: Array<Awaited<ReturnType<typeof gitClone>>> = []
  for (let r = 0; r < RUNS; r++) {
    installs.push(await upmInstall(`${installStore}-${r}`, Path.join(work, `upm-install-${r}`), name, upm.port, counted))
    clones.push(await gitClone(url, Path.join(work, `git-clone-${r}`), trace))
    rmSync(`${installStore}-${r}`, { recursive: true, force: true })
    rmSync(Path.join(work, `upm-install-${r}`), { recursive: true, force: true })
    rmSync(Path.join(work, `git-clone-${r}`), { recursive: true, force: true })
  }
  const install = medianBy(installs, (i) => i.seconds)
  const gitInstall = medianBy(clones, (c) => c.seconds)
  const installV0 = corpus.name === "random" ? undefined
    : await upmInstall(Path.join(work, "install-store-v0"), Path.join(work, "upm-install-v0"), name, upm.port, counted, [0])

  // republish: one file changed
  const changed = Path.join(work, "changed")
  cpSync(corpus.dir, changed, { recursive: true })
  writeFileSync(Path.join(changed, corpus.change), Buffer.concat([readFileSync(Path.join(changed, corpus.change)), Buffer.from("\n// changed\n")]))
  const republish = await upmPublish(clientStore, changed, name, "1.0.1", upm.port, counted)
  writeFileSync(Path.join(gitWork, corpus.change), Buffer.concat([readFileSync(Path.join(gitWork, corpus.change)), Buffer.from("\n// changed\n")]))
  const gitRepublish = await gitPublish(gitWork, url, "v2", trace)
  const rss = peakRssMiB(upm.child.pid ?? 0)
  await stop(upm.child)
  await stop(daemon.child)

  const objects = publish.result.objects
  say(`\n## ${corpus.name}: ${publish.files} files, ${fmt(mib(publish.bytes))} MiB, ${objects} objects`)
  say(`prepare: upm import+sign ${fmt(publish.prepare / 1000)} s | git add+commit ${fmt(commitSeconds)} s`)
  say(`publish: upm ${fmt(publish.seconds)} s vs git push ${fmt(gitPush.seconds)} s = ${ratio(publish.seconds, gitPush.seconds)}` +
    ` | upm ${fmt(objects / publish.seconds, 0)} obj/s, ${fmt(mib(publish.wire.sent) / publish.seconds)} MiB/s` +
    ` | wire upm ${fmt(mib(publish.wire.sent + publish.wire.received))} MiB vs git pack ${fmt(mib(gitPush.bytes))} MiB` +
    ` | round trips: upm v${install.version} ${publish.result.wants} WANT frames from the server, git ${gitPush.requests} requests`)
  say(`install (median of ${RUNS}, alternating): upm ${fmt(install.seconds)} s (pull ${fmt(install.pullSeconds)} s + export) vs git clone ${fmt(gitInstall.seconds)} s = ${ratio(install.seconds, gitInstall.seconds)}` +
    ` | upm ${fmt(install.pull.objects / install.seconds, 0)} obj/s, ${fmt(mib(install.pull.bytes) / install.seconds)} MiB/s` +
    ` | wire upm ${fmt(mib(install.wire.sent + install.wire.received))} MiB vs git pack ${fmt(mib(gitInstall.bytes))} MiB` +
    ` | round trips: upm v${install.version} ${install.pull.rounds} rounds, ${install.pull.wants} WANTs; git ${gitInstall.requests} requests`)
  if (installV0 !== undefined) {
    say(`install v0: upm ${fmt(installV0.seconds)} s = ${ratio(installV0.seconds, gitInstall.seconds)} of git clone | ${installV0.pull.rounds} rounds, ${installV0.pull.wants} WANTs`)
  }
  say(`republish (one file changed): upm ${fmt(republish.seconds)} s, ${republish.result.objects} objects, ${fmt((republish.wire.sent + republish.wire.received) / 1024, 1)} kB on the wire` +
    ` vs git push ${fmt(gitRepublish.seconds)} s, ${fmt(gitRepublish.bytes / 1024, 1)} kB pack = ${ratio(republish.seconds, gitRepublish.seconds)}`)
  say(`server RSS: idle ${fmt(idleRss, 0)} MiB, peak (VmHWM) ${fmt(rss, 0)} MiB`)
  rmSync(work, { recursive: true, force: true })
  return lines
}

// ---------------------------------------------------------------------------------------------

const main = async () => {
  const only = process.argv.slice(2)
  const want = (name: string) => only.length === 0 || only.includes(name)
  mkdirSync(BASE, { recursive: true })
  // Type errors elsewhere in the shared tree (work in progress) do not stop tsc from emitting.
  await run("npx", ["tsc", "-p", "tsconfig.build.json", "--outDir", Path.join(BUILD, "dist")], { cwd: ROOT }).catch((e: Error) => {
    if (!existsSync(Path.join(BUILD, "dist", "main.js"))) throw e
  })
  // Bundled as `npm run build` does (bin/upm.js runs the bundle): what users run, and what its RSS is.
  await run(process.execPath, [Path.join(ROOT, "scripts", "bundle.mjs"), Path.join(BUILD, "dist"), Path.join(BUILD, "dist", "bundle")], { cwd: ROOT })
  writeFileSync(BIN, `import "./dist/bundle/main.js"\n`)
  console.log(`upm sync bench in ${BASE} (node ${process.version}, ${(await run("git", ["--version"])).stdout.trim()})`)
  const corpora = Path.join(BASE, "corpora")
  const all: Array<string> = []
  try {
    if (want("lodash")) {
      await npmPackage("lodash@4.17.21", Path.join(corpora, "lodash"))
      all.push(...await benchCorpus({ name: "lodash", dir: Path.join(corpora, "lodash"), change: "lodash.js" }))
    }
    if (want("typescript")) {
      await npmPackage("typescript@5.6.3", Path.join(corpora, "typescript"))
      all.push(...await benchCorpus({ name: "typescript", dir: Path.join(corpora, "typescript"), change: "lib/tsc.js" }))
    }
    if (want("10k")) {
      makeSmallFiles(Path.join(corpora, "10k"))
      all.push(...await benchCorpus({ name: "10k", dir: Path.join(corpora, "10k"), change: "dir-3/sub-4/file-5.txt" }))
    }
    if (want("random")) {
      makeRandomFiles(Path.join(corpora, "random"))
      all.push(...await benchCorpus({ name: "random", dir: Path.join(corpora, "random"), change: "blob-7.bin" }))
    }
  } finally {
    rmSync(BASE, { recursive: true, force: true })
    rmSync(BUILD, { recursive: true, force: true })
  }
  console.log(`\n# summary\n${all.join("\n")}`)
}

main().catch((e) => {
  console.error(e)
  process.exitCode = 1
})
