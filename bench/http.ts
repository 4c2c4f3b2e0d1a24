/**
 * HTTP benchmark: upm's HTTP server against Verdaccio, in the same run, with wrk (Debian's `wrk`: `apt-get
 * install wrk`) at 100
 * concurrent connections.
 *
 *   npx tsx bench/http.ts [--duration 10] [--connections 100] [--base /tmp]
 *
 * - upm (`upm serve`, the real server, from a private build of the working tree under .bench/: dist/ is shared
 *   with whoever runs the tests): the package-versions endpoint (`GET /api/v1/packages/bench/greetings`, 10
 *   versions with their release metadata), a 10 MB download as `.tar.gz` (built once into the download cache,
 *   then streamed from disk) and as the raw file, over the fs store. The first (cold) download, which builds
 *   the archive, is timed on its own.
 * - Verdaccio 6 (installed into a temp dir with `npm install --prefix`, never a project dependency): the
 *   package-metadata endpoint (`GET /greetings-bench`, the same 10 versions published with `npm publish`) and
 *   the 10 MB package's tarball.
 * - git: `git archive --format=tar.gz` of the same 10 MB release straight from upm's store (a bare git
 *   repository), against one sequential HTTP download of the same archive: the single-client latency ratio.
 *
 * Each server runs in its own process; wrk (2 threads) runs beside them on the same 2 cores, so the figures are
 * for this machine as it is (other work on it adds noise). Prints requests/s, p50/p99 latency, throughput, and
 * the servers' peak RSS.
 */
import { NodeContext } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { dirname, join, resolve } from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { layerFs } from "../src/services/FsStore.js"
import * as Registry from "../src/services/Registry.js"
import { publish } from "../test/services/HttpFixture.js"

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback
}

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..")
const BUILD = join(ROOT, ".bench", `http-${process.pid}`)

const VERSIONS = 10
const BIG = 10 * 1024 * 1024

// ------------------------------------------------------------------------------------------------- helpers

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const s = createServer()
    s.listen(0, "127.0.0.1", () => {
      const address = s.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      s.close(() => resolve(port))
    })
    s.on("error", reject)
  })

const waitFor = async (url: string, timeoutMs: number) => {
  const end = Date.now() + timeoutMs
  for (;;) {
    try {
      const res = await fetch(url)
      if (res.ok) return
    } catch {
      // not up yet
    }
    if (Date.now() > end) throw new Error(`${url} did not come up within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

/** Peak resident memory of a process (VmHWM), in MiB. */
const peakRss = (pid: number | undefined) => {
  if (pid === undefined) return NaN
  const status = readFileSync(`/proc/${pid}/status`, "utf8")
  const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? "NaN")
  return kb / 1024
}

interface WrkResult {
  readonly label: string
  readonly rps: number
  readonly p50: number
  readonly p99: number
  readonly mbps: number
  /** The server's highest RSS during the run, MiB. */
  readonly rss: number
  readonly errors: string
}

const ms = (text: string) => {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text.trim())
  if (m === null) return NaN
  const n = Number(m[1])
  return m[2] === "us" ? n / 1000 : m[2] === "s" ? n * 1000 : n
}
const mb = (text: string) => {
  const m = /^([\d.]+)(B|KB|MB|GB)$/.exec(text.trim())
  if (m === null) return NaN
  const n = Number(m[1])
  return m[2] === "B" ? n / 1e6 : m[2] === "KB" ? n / 1e3 : m[2] === "GB" ? n * 1e3 : n
}

/** CPU time (user + system) a process has used so far, in ms (Linux clock ticks of 10 ms). */
const cpuMs = (pid: number | undefined) => {
  if (pid === undefined) return NaN
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? []
  return (Number(fields[11]) + Number(fields[12])) * 10
}

/** Resident memory of a process now (VmRSS), in MiB. */
const rssNow = (pid: number | undefined) => {
  if (pid === undefined) return NaN
  try {
    return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? "NaN") / 1024
  } catch {
    return NaN
  }
}

/** wrk's output, with the highest RSS of `pid` seen (every 100 ms) while it ran. */
const wrkRun = (args: ReadonlyArray<string>, pid: number | undefined) =>
  new Promise<{ out: string; rss: number }>((resolve, reject) => {
    let rss = rssNow(pid)
    const timer = setInterval(() => {
      rss = Math.max(rss, rssNow(pid))
    }, 100)
    execFile("wrk", args, { encoding: "utf8", maxBuffer: 16 * 1024 * 1024 }, (error, out) => {
      clearInterval(timer)
      if (error !== null) reject(error)
      else resolve({ out, rss: Math.max(rss, rssNow(pid)) })
    })
  })

const wrk = async (label: string, url: string, connections: number, duration: number, pid: number | undefined): Promise<WrkResult> => {
  const { out, rss } = await wrkRun(["-t2", `-c${connections}`, `-d${duration}s`, "--timeout", "30s", "--latency", url], pid)
  const errors = [
    /Non-2xx or 3xx responses: (\d+)/.exec(out)?.[0],
    /Socket errors: .*/.exec(out)?.[0]
  ].filter((e) => e !== undefined).join("; ")
  return {
    label,
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? "NaN"),
    p50: ms(/^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? ""),
    p99: ms(/^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? ""),
    mbps: mb(/Transfer\/sec:\s+(\S+)/.exec(out)?.[1] ?? ""),
    rss,
    errors
  }
}

const row = (r: WrkResult) =>
  `${r.label.padEnd(44)} ${r.rps.toFixed(0).padStart(8)} ${r.p50.toFixed(1).padStart(9)} ${r.p99.toFixed(1).padStart(9)} ${r.mbps.toFixed(1).padStart(9)} ${r.rss.toFixed(0).padStart(8)}  ${r.errors}`

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN

// ------------------------------------------------------------------------------------------------- main

const main = async () => {
  const duration = Number(arg("duration", "10"))
  const connections = Number(arg("connections", "100"))
  const base = arg("base", "/tmp")
  try {
    execFileSync("sh", ["-c", "command -v wrk"], { stdio: "ignore" })
  } catch {
    throw new Error("wrk is not installed: apt-get install wrk")
  }
  const work = mkdtempSync(join(base, "upm-bench-http-"))
  const children: Array<ChildProcess> = []
  try {
    console.log("building the working tree privately (tsc) …")
    try {
      execFileSync("npx", ["tsc", "-p", "tsconfig.build.json", "--outDir", join(BUILD, "dist")], { cwd: ROOT, stdio: "ignore" })
    } catch {
      // tsc exits non-zero on type errors (others' work in progress) but still emits; the server start says if not.
    }
    writeFileSync(join(BUILD, "upm.js"), `import "./dist/main.js"\n`)
    // The same content for both: 10 versions of a small package, and one 10 MB package (random bytes).
    const big = randomBytes(BIG)
    const readme = "# greetings\n\nSays hello.\n"
    const index = "module.exports = () => 'hello'\n"

    // ---- upm: publish straight into an fs store, then serve it from another process
    const store = join(work, "upm-store")
    console.log(`store and scratch under ${work}`)
    await Effect.gen(function* () {
      for (let i = 0; i < VERSIONS; i++) {
        yield* publish("bench/greetings", `1.0.${i}`, { "README.md": readme, "index.js": index, "package.json": `{"name":"greetings-bench","version":"1.0.${i}"}` }, {
          description: "Says hello",
          dependencies: { "bench/colors": "^1.0.0" },
          time: 1_700_000_000 + i,
          sign: true
        })
      }
      yield* publish("bench/big", "1.0.0", { "big.bin": big }, { description: "10 MB of random bytes", sign: true })
    }).pipe(Effect.provide(Registry.layer.pipe(Layer.provideMerge(layerFs(store)), Layer.provide(NodeContext.layer))), Effect.runPromise)

    // The real server: `upm serve` from the private build, TCP and HTTP on free ports.
    const upm = spawn(process.execPath, [join(BUILD, "upm.js"), "serve", "--store", `fs:${store}`, "--port", "0", "--http-port", "0"], {
      stdio: ["ignore", "ignore", "pipe"]
    })
    children.push(upm)
    const upmPid = upm.pid
    const upmUrl = await new Promise<string>((resolve, reject) => {
      let buf = ""
      let found = false
      // Its log lines (one per request) are read and dropped: a pipe nobody reads would block the server.
      upm.stderr?.on("data", (c: Buffer) => {
        if (found) return
        buf += c.toString()
        const line = /message="http listening" url=(http:\/\/\S+)/.exec(buf)
        if (line?.[1] !== undefined) {
          found = true
          resolve(line[1])
        }
      })
      upm.on("exit", (code) => reject(new Error(`upm serve exited with ${code}:\n${buf}`)))
    })
    await waitFor(`${upmUrl}/readyz`, 30_000)

    // ---- Verdaccio: install into the scratch dir, start, add a user, publish the same packages with npm
    const vdir = join(work, "verdaccio")
    mkdirSync(vdir, { recursive: true })
    console.log("installing verdaccio into the scratch dir (npm install --prefix)…")
    // verdaccio-audit asks for `node-fetch@cjs`, a dist-tag this machine's registry mirror lacks; pin the 2.x line
    // it means (the scratch dir's own package.json, nothing of the project's).
    writeFileSync(join(vdir, "package.json"), JSON.stringify({ name: "bench-verdaccio", private: true, overrides: { "node-fetch": "^2.7.0" } }))
    execFileSync("npm", ["install", "--prefix", vdir, "verdaccio@6", "--no-audit", "--no-fund", "--loglevel=error"], { stdio: "inherit" })
    const vVersion = JSON.parse(readFileSync(join(vdir, "node_modules/verdaccio/package.json"), "utf8")).version as string
    const vPort = await freePort()
    writeFileSync(join(vdir, "config.yaml"), [
      `storage: ${join(vdir, "storage")}`,
      "auth:", "  htpasswd:", `    file: ${join(vdir, "htpasswd")}`, "    max_users: 10",
      "uplinks: {}",
      "packages:", "  '**':", "    access: $all", "    publish: $authenticated",
      "max_body_size: 64mb",
      "log: { type: stdout, format: pretty, level: error }"
    ].join("\n"))
    const verdaccio = spawn(process.execPath, [join(vdir, "node_modules/verdaccio/bin/verdaccio"), "-c", join(vdir, "config.yaml"), "-l", `127.0.0.1:${vPort}`], { stdio: ["ignore", "ignore", "inherit"] })
    children.push(verdaccio)
    const vUrl = `http://127.0.0.1:${vPort}`
    await waitFor(`${vUrl}/-/ping`, 60_000)
    const user = await fetch(`${vUrl}/-/user/org.couchdb.user:bench`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "bench", password: "bench-password", type: "user", roles: [] })
    })
    const { token } = (await user.json()) as { token: string }
    const npmrc = join(vdir, ".npmrc")
    writeFileSync(npmrc, `registry=${vUrl}/\n//127.0.0.1:${vPort}/:_authToken=${token}\n`)
    const npmPublish = (dir: string) =>
      execFileSync("npm", ["publish", "--userconfig", npmrc, "--registry", `${vUrl}/`, "--loglevel=error"], { cwd: dir, stdio: ["ignore", "ignore", "inherit"] })
    for (let i = 0; i < VERSIONS; i++) {
      const dir = join(vdir, `pkg-${i}`)
      mkdirSync(dir)
      writeFileSync(join(dir, "package.json"), JSON.stringify({
        name: "greetings-bench", version: `1.0.${i}`, description: "Says hello", main: "index.js",
        dependencies: { "colors-bench": "^1.0.0" }
      }))
      writeFileSync(join(dir, "README.md"), readme)
      writeFileSync(join(dir, "index.js"), index)
      npmPublish(dir)
    }
    const bigDir = join(vdir, "big")
    mkdirSync(bigDir)
    writeFileSync(join(bigDir, "package.json"), JSON.stringify({ name: "big-bench", version: "1.0.0", description: "10 MB of random bytes" }))
    writeFileSync(join(bigDir, "big.bin"), big)
    npmPublish(bigDir)

    // ---- sanity: both answer what we are about to measure
    const versions = (await (await fetch(`${upmUrl}/api/v1/packages/bench/greetings`)).json()) as { versions: Array<unknown> }
    const packument = (await (await fetch(`${vUrl}/greetings-bench`)).json()) as { versions: Record<string, unknown> }
    if (versions.versions.length !== VERSIONS || Object.keys(packument.versions).length !== VERSIONS) throw new Error("the packages are not published as expected")
    const tgzUrl = `${upmUrl}/api/v1/packages/bench/big/1.0.0/archive.tar.gz`
    // The first download of a release builds its archive (the Exporter, gzip) into the cache: timed on its own.
    let t0 = performance.now()
    let c0 = cpuMs(upmPid)
    const tgzSize = (await (await fetch(tgzUrl)).arrayBuffer()).byteLength
    const coldTgz = performance.now() - t0
    const coldTgzCpu = cpuMs(upmPid) - c0
    t0 = performance.now()
    c0 = cpuMs(upmPid)
    await (await fetch(`${upmUrl}/api/v1/packages/bench/big/1.0.0/archive.zip`)).arrayBuffer()
    const coldZip = performance.now() - t0
    const coldZipCpu = cpuMs(upmPid) - c0
    t0 = performance.now()
    execFileSync("git", ["--git-dir", store, "archive", "--format=tar.gz", "refs/tags/bench/big/v1.0.0"], { maxBuffer: 64 * 1024 * 1024 })
    const coldGit = performance.now() - t0
    const vTgzUrl = `${vUrl}/big-bench/-/big-bench-1.0.0.tgz`
    const vTgzSize = (await (await fetch(vTgzUrl)).arrayBuffer()).byteLength

    // ---- measure
    console.log(`\nwrk -t2 -c${connections} -d${duration}s (downloads ${duration * 3}s); load average ${execFileSync("cat", ["/proc/loadavg"], { encoding: "utf8" }).split(" ").slice(0, 3).join(" ")}; Node ${process.version}, Verdaccio ${vVersion}, ${execFileSync("git", ["--version"], { encoding: "utf8" }).trim()}`)
    console.log(`${"endpoint".padEnd(44)} ${"req/s".padStart(8)} ${"p50 ms".padStart(9)} ${"p99 ms".padStart(9)} ${"MB/s".padStart(9)} ${"RSS MiB".padStart(8)}`)
    const results: Record<string, WrkResult> = {}
    // 100 clients × 10 MB is a gigabyte per round: downloads run 3× longer so that requests complete.
    const run = async (key: string, label: string, url: string, pid: number | undefined, seconds = duration) => {
      // A short unmeasured run first, at the same concurrency: the first wave of 100 requests on a fresh server
      // (code loaded and compiled on first use) would otherwise be the p99 of whichever server is measured first.
      await wrkRun(["-t2", `-c${connections}`, "-d3s", "--timeout", "30s", url], pid)
      results[key] = await wrk(label, url, connections, seconds, pid)
      console.log(row(results[key]!))
    }
    await run("upmVersions", "upm   GET /api/v1/packages/bench/greetings", `${upmUrl}/api/v1/packages/bench/greetings`, upmPid)
    await run("vMeta", "verd. GET /greetings-bench (packument)", `${vUrl}/greetings-bench`, verdaccio.pid)
    await run("upmRelease", "upm   GET …/bench/greetings/1.0.9 (one release)", `${upmUrl}/api/v1/packages/bench/greetings/1.0.9`, upmPid)
    await run("upmTgz", `upm   10 MB .tar.gz (${(tgzSize / 1e6).toFixed(1)} MB, cached)`, tgzUrl, upmPid, duration * 3)
    await run("upmFile", "upm   10 MB raw file (files/big.bin)", `${upmUrl}/api/v1/packages/bench/big/1.0.0/files/big.bin`, upmPid, duration * 3)
    await run("vTgz", `verd. 10 MB tarball (${(vTgzSize / 1e6).toFixed(1)} MB)`, vTgzUrl, verdaccio.pid, duration * 3)

    // ---- one client, one archive at a time: upm's HTTP download against git archive on the same store
    const single: Array<number> = []
    const gitTimes: Array<number> = []
    let failed = 0
    for (let i = 0; i < 5; i++) {
      let t = performance.now()
      try {
        await (await fetch(tgzUrl)).arrayBuffer()
        single.push(performance.now() - t)
      } catch (e) {
        failed++
        console.log(`single-client download ${i} failed: ${String(e)}`)
      }
      t = performance.now()
      execFileSync("git", ["--git-dir", store, "archive", "--format=tar.gz", "refs/tags/bench/big/v1.0.0"], { maxBuffer: 64 * 1024 * 1024 })
      gitTimes.push(performance.now() - t)
    }

    const upmRss = peakRss(upmPid)
    const vRss = peakRss(verdaccio.pid)
    const ratio = (a: number, b: number) => (a / b).toFixed(2)
    console.log("\nratios (upm / Verdaccio):")
    console.log(`  metadata req/s  ${ratio(results["upmVersions"]!.rps, results["vMeta"]!.rps)}×   p99 ${ratio(results["upmVersions"]!.p99, results["vMeta"]!.p99)}×`)
    console.log(`  10 MB req/s     ${ratio(results["upmTgz"]!.rps, results["vTgz"]!.rps)}× (.tar.gz from the download cache vs a stored tarball)   MB/s ${ratio(results["upmTgz"]!.mbps, results["vTgz"]!.mbps)}×   p99 ${ratio(results["upmTgz"]!.p99, results["vTgz"]!.p99)}×`)
    console.log(`single client, first download (builds the archive): .tar.gz ${coldTgz.toFixed(0)} ms (server CPU ${coldTgzCpu} ms), .zip ${coldZip.toFixed(0)} ms (server CPU ${coldZipCpu} ms); git archive ${coldGit.toFixed(0)} ms (upm/git ${ratio(coldTgz, coldGit)}×)`)
    console.log(`single client, 10 MB .tar.gz again (${failed} of 5 failed): upm HTTP median ${median(single).toFixed(0)} ms, git archive median ${median(gitTimes).toFixed(0)} ms (upm/git ${ratio(median(single), median(gitTimes))}×)`)
    console.log(`peak RSS: upm server ${upmRss.toFixed(0)} MiB, Verdaccio ${vRss.toFixed(0)} MiB`)
  } finally {
    for (const child of children) child.kill("SIGTERM")
    rmSync(work, { recursive: true, force: true })
    rmSync(BUILD, { recursive: true, force: true })
  }
}

main().then(() => process.exit(0), (e: unknown) => {
  console.error(e)
  process.exit(1)
})
