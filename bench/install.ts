/**
 * `upm install` of a synthetic package with 50 dependencies (each a few dozen files), cold (empty UPM_HOME)
 * and warm (the same UPM_HOME: everything cached, upm.lock present), against `npm install` of the same tree
 * from a local Verdaccio (installed at bench time into a temp dir, on 127.0.0.1, fresh npm cache), in one run.
 *
 *   npx tsx bench/install.ts            # BENCH_DIR=/dev/shm to compare tools on tmpfs; DEPS=50 FILES=30
 *
 * Targets: cold ≤ 0.5× npm, warm ≤ 0.2× npm. Rounds interleave upm and npm so both meet the same load; besides
 * wall time the table shows CPU time (user + sys of the process and its children, from GNU time), which moves
 * far less with the load on a shared machine.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

const ROOT = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "..")
// A private build: dist/ is shared with whoever runs the tests, and may be rebuilt during the bench.
const BUILD = Path.join(ROOT, ".bench", `install-${process.pid}`)
const BIN = Path.join(BUILD, "upm.js")
const DEPS = Number(process.env["DEPS"] ?? 50)
const FILES = Number(process.env["FILES"] ?? 30)
const base = Fs.mkdtempSync(Path.join(process.env["BENCH_DIR"] ?? Os.tmpdir(), "upm-bench-install-"))
const children: Array<ChildProcess> = []
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL")
  Fs.rmSync(base, { recursive: true, force: true })
  Fs.rmSync(BUILD, { recursive: true, force: true })
})

const TIME = "/usr/bin/time"
const hasTime = Fs.existsSync(TIME)
const CPU_MARK = "@@cpu "

/**
 * Runs a command; its wall time, and (through GNU time, when present) the CPU time it and its children used:
 * on a machine shared with other work, CPU seconds move much less with the load than wall seconds.
 */
const run = (cmd: string, args: ReadonlyArray<string>, opts: { cwd: string; env?: Record<string, string> }) =>
  new Promise<{ stdout: string; stderr: string; ms: number; cpuMs: number }>((resolve, reject) => {
    const start = performance.now()
    const [file, argv] = hasTime ? [TIME, ["-f", `${CPU_MARK}%U %S`, cmd, ...args]] : [cmd, [...args]]
    execFile(file, argv, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      const ms = performance.now() - start
      if (error) return reject(new Error(`${cmd} ${args.join(" ")} failed: ${error.message}\n${stdout}\n${stderr}`))
      const cpu = stderr.split("\n").find((l) => l.startsWith(CPU_MARK))?.slice(CPU_MARK.length).split(" ").map(Number)
      resolve({ stdout, stderr, ms, cpuMs: cpu === undefined ? NaN : ((cpu[0] ?? 0) + (cpu[1] ?? 0)) * 1000 })
    })
  })

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = Net.createServer().listen(0, "127.0.0.1", () => {
      const a = s.address()
      const port = typeof a === "object" && a !== null ? a.port : 0
      s.close(() => resolve(port))
    })
  })

const waitFor = async (port: number) => {
  for (let i = 0; i < 600; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = Net.connect(port, "127.0.0.1", () => { c.destroy(); resolve(true) }).on("error", () => resolve(false))
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`nothing listens on ${port}`)
}

/** A few dozen small text files per package, in a couple of folders. */
const writePackage = (dir: string, files: Record<string, string>, i: number) => {
  Fs.mkdirSync(dir, { recursive: true })
  for (const [name, content] of Object.entries(files)) Fs.writeFileSync(Path.join(dir, name), content)
  for (let f = 0; f < FILES; f++) {
    const sub = Path.join(dir, f % 3 === 0 ? "lib" : f % 3 === 1 ? "src/util" : "docs")
    Fs.mkdirSync(sub, { recursive: true })
    Fs.writeFileSync(Path.join(sub, `file${f}.js`), `// package ${i}, file ${f}\n` + `export const value${f} = ${i * 1000 + f}\n`.repeat(20 + (f % 7) * 10))
  }
}

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const main = async () => {
  await run("npx", ["tsc", "-p", "tsconfig.build.json", "--outDir", Path.join(BUILD, "dist")], { cwd: ROOT })
  // What bin/upm.js runs after `npm run build`: the bundle.
  await run(process.execPath, [Path.join(ROOT, "scripts", "bundle.mjs"), Path.join(BUILD, "dist")], { cwd: ROOT })
  Fs.writeFileSync(BIN, `import "./dist/bundle/main.js"\n`)
  console.log(`install bench: 1 package + ${DEPS} dependencies × ${FILES + 2} files, in ${base}`)
  // ---------------------------------------------------------------- upm
  const upmPort = await freePort()
  const server = spawn(process.execPath, [BIN, "serve", "--port", String(upmPort), "--store", `fs:${Path.join(base, "upm-server")}`, "--no-http"], { stdio: "ignore" })
  children.push(server)
  await waitFor(upmPort)
  const publisher = { UPM_HOME: Path.join(base, "publisher"), XDG_CONFIG_HOME: Path.join(base, "publisher-cfg"), UPM_SERVER: `127.0.0.1:${upmPort}`, UPM_NAME: "bench", UPM_EMAIL: "bench@example.com" }
  await run(process.execPath, [BIN, "keygen"], { cwd: base, env: publisher })
  const pkgs = Path.join(base, "upm-packages")
  const deps: Record<string, string> = {}
  for (let i = 0; i < DEPS; i++) {
    writePackage(Path.join(pkgs, `dep${i}`), { "upm.json": JSON.stringify({ name: `bench/dep${i}`, version: "1.0.0" }) }, i)
    deps[`bench/dep${i}`] = "^1.0.0"
  }
  writePackage(Path.join(pkgs, "app"), { "upm.json": JSON.stringify({ name: "bench/app", version: "1.0.0", dependencies: deps }) }, DEPS)
  let start = performance.now()
  for (const name of [...Array.from({ length: DEPS }, (_, i) => `dep${i}`), "app"]) {
    await run(process.execPath, [BIN, "publish", Path.join(pkgs, name)], { cwd: base, env: publisher })
  }
  console.log(`  (setup: published ${DEPS + 1} upm packages in ${((performance.now() - start) / 1000).toFixed(1)} s)`)

  type Times = { wall: Array<number>; cpu: Array<number> }
  const upmCold: Times = { wall: [], cpu: [] }
  const upmWarm: Times = { wall: [], cpu: [] }
  const add = (t: Times, r: { ms: number; cpuMs: number }) => {
    t.wall.push(r.ms)
    t.cpu.push(r.cpuMs)
  }
  const upmRound = async (round: number) => {
    const consumer = { UPM_HOME: Path.join(base, `consumer${round}`), XDG_CONFIG_HOME: Path.join(base, `consumer-cfg${round}`), UPM_SERVER: `127.0.0.1:${upmPort}` }
    const project = Path.join(base, `upm-project${round}`)
    Fs.mkdirSync(project)
    Fs.writeFileSync(Path.join(project, "upm.json"), JSON.stringify({ name: "bench/consumer", version: "1.0.0", dependencies: { "bench/app": "^1.0.0" } }))
    add(upmCold, await run(process.execPath, [BIN, "install"], { cwd: project, env: consumer }))
    const count = Fs.readdirSync(Path.join(project, "upm_modules", "bench")).length
    if (count !== DEPS + 1) throw new Error(`upm installed ${count} packages, expected ${DEPS + 1}`)
    Fs.rmSync(Path.join(project, "upm_modules"), { recursive: true })
    add(upmWarm, await run(process.execPath, [BIN, "install"], { cwd: project, env: consumer }))
  }
  const fmt = (ms: number) => `${(ms / 1000).toFixed(2)} s`

  // ---------------------------------------------------------------- npm + Verdaccio
  const vdir = Path.join(base, "verdaccio")
  start = performance.now()
  // The registry these machines reach lacks node-fetch's "cjs" dist-tag, which a verdaccio dependency asks for:
  // pin it to the 2.x line that tag names.
  Fs.mkdirSync(vdir, { recursive: true })
  Fs.writeFileSync(Path.join(vdir, "package.json"), JSON.stringify({ private: true, dependencies: { verdaccio: "^6" }, overrides: { "node-fetch": "2.7.0" } }))
  await run("npm", ["install", "--prefix", vdir, "--no-audit", "--no-fund", "--loglevel=error"], { cwd: base })
  console.log(`  (setup: installed verdaccio in ${((performance.now() - start) / 1000).toFixed(1)} s)`)
  const vport = await freePort()
  const registry = `http://127.0.0.1:${vport}/`
  Fs.writeFileSync(Path.join(vdir, "config.yaml"), [
    `storage: ${Path.join(vdir, "storage")}`,
    "auth:", "  htpasswd:", `    file: ${Path.join(vdir, "htpasswd")}`, "    max_users: 10",
    "uplinks: {}",
    "packages:", "  '@bench/*':", "    access: $all", "    publish: $authenticated",
    "  '**':", "    access: $all", "    publish: $authenticated",
    "log: { type: stdout, format: pretty, level: error }",
    `listen: 127.0.0.1:${vport}`
  ].join("\n"))
  const verdaccio = spawn(process.execPath, [Path.join(vdir, "node_modules", "verdaccio", "bin", "verdaccio"), "--config", Path.join(vdir, "config.yaml")], { stdio: "ignore" })
  children.push(verdaccio)
  await waitFor(vport)
  const user = await fetch(`${registry}-/user/org.couchdb.user:bench`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: "bench", password: "bench-password", email: "bench@example.com" })
  }).then((r) => r.json() as Promise<{ token: string }>)
  const npmrc = Path.join(base, "npmrc")
  Fs.writeFileSync(npmrc, `registry=${registry}\n//127.0.0.1:${vport}/:_authToken=${user.token}\n`)
  const npmEnv = { npm_config_userconfig: npmrc, npm_config_cache: Path.join(base, "npm-cache-publish") }
  const npmPkgs = Path.join(base, "npm-packages")
  const npmDeps: Record<string, string> = {}
  for (let i = 0; i < DEPS; i++) {
    writePackage(Path.join(npmPkgs, `dep${i}`), { "package.json": JSON.stringify({ name: `@bench/dep${i}`, version: "1.0.0" }) }, i)
    npmDeps[`@bench/dep${i}`] = "^1.0.0"
  }
  writePackage(Path.join(npmPkgs, "app"), { "package.json": JSON.stringify({ name: "@bench/app", version: "1.0.0", dependencies: npmDeps }) }, DEPS)
  start = performance.now()
  for (const name of [...Array.from({ length: DEPS }, (_, i) => `dep${i}`), "app"]) {
    await run("npm", ["publish", "--loglevel=error"], { cwd: Path.join(npmPkgs, name), env: npmEnv })
  }
  console.log(`  (setup: published ${DEPS + 1} npm packages in ${((performance.now() - start) / 1000).toFixed(1)} s)`)
  const npmTimes: Times = { wall: [], cpu: [] }
  const npmRound = async (round: number) => {
    const project = Path.join(base, `npm-project${round}`)
    Fs.mkdirSync(project)
    Fs.writeFileSync(Path.join(project, "package.json"), JSON.stringify({ name: "consumer", version: "1.0.0", private: true, dependencies: { "@bench/app": "^1.0.0" } }))
    add(npmTimes, await run("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error"], {
      cwd: project,
      env: { npm_config_userconfig: npmrc, npm_config_cache: Path.join(base, `npm-cache-${round}`) }
    }))
  }
  // Rounds interleave upm and npm, so that both meet the same load from whatever else runs on the machine.
  const loads: Array<number> = []
  for (let round = 0; round < 3; round++) {
    await upmRound(round)
    await npmRound(round)
    loads.push(Os.loadavg()[0] ?? 0)
    console.log(`  round ${round + 1}: upm cold ${fmt(upmCold.wall[round]!)}, warm ${fmt(upmWarm.wall[round]!)}; npm ${fmt(npmTimes.wall[round]!)} (load ${loads[round]!.toFixed(1)})`)
  }
  server.kill("SIGTERM")
  verdaccio.kill("SIGTERM")

  const row = (label: string, t: Times, target: string) => {
    const wall = median(t.wall)
    const cpu = median(t.cpu)
    const vs = (x: number, npm: number) => `${(x / npm).toFixed(2)}×`
    console.log(`${label.padEnd(24)} ${fmt(wall).padStart(8)} ${vs(wall, median(npmTimes.wall)).padStart(6)}   ${hasTime ? `${fmt(cpu).padStart(8)} ${vs(cpu, median(npmTimes.cpu)).padStart(6)}` : "   (no /usr/bin/time)"}   (${t.wall.map(fmt).join(", ")})  ${target}`)
  }
  console.log(`\n                             wall (median of 3, × npm)   CPU (× npm)   (wall runs)`)
  row("upm install, cold", upmCold, "target ≤ 0.5×")
  row("upm install, warm", upmWarm, "target ≤ 0.2×")
  row("npm install (Verdaccio)", npmTimes, "fresh cache each run")
  console.log(`load average (1 min) after each round: ${loads.map((l) => l.toFixed(1)).join(", ")}`)
  console.log(`load average: ${Os.loadavg().map((l) => l.toFixed(1)).join(" ")} on ${Os.cpus().length} cores`)
  process.exit(0)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
