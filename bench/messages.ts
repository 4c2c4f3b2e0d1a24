/**
 * Message protocol throughput and latency, through the real server (Listener on 127.0.0.1:0, the real
 * MessageProtocol layer) and real handler processes:
 *
 * 1. persistent mode: 50 concurrent authenticated clients, each sending requests back to back to a persistent
 *    Node handler for a fixed time → requests/s, p50/p99 latency (target ≥ 5,000/s on 2 cores). The clients run
 *    in 2 load-generator processes (plain `node:net`, like wrk) so that the figure is the server's, not the
 *    client library's; the same phase is also run with 50 in-process MessageClient sessions;
 * 2. per-request mode: sequential requests, one process spawned per message → p50/p99 latency;
 * 3. built-in `resolve` (no handler process) with the same 50 clients, as the ceiling of the session layer.
 *
 *   npx tsx bench/messages.ts [seconds=5] [clients=50] [--only=loadgen,client,resolve,spawn] [--depth=1,4]
 */
import { NodeContext } from "@effect/platform-node"
import { spawn } from "node:child_process"
import { fork } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import { cpus, loadavg } from "node:os"
import { Effect, Layer, Schema, Stream } from "effect"
import { Accounts } from "../src/services/Accounts.js"
import { SyncProtocol } from "../src/services/Connection.js"
import { HandlersConfig } from "../src/services/Handlers.js"
import * as Listener from "../src/services/Listener.js"
import { connect, type MessageSession } from "../src/services/MessageClient.js"
import { layerServer, MessagesConfig } from "../src/services/MessageServer.js"
import { layerMemory } from "../src/services/ObjectStore.js"
import { layerAcceptAll } from "../src/services/ProposalPolicy.js"
import * as Registry from "../src/services/Registry.js"
import { layerUnsigned } from "../src/services/Verifier.js"

const positional = process.argv.slice(2).filter((a) => !a.startsWith("--"))
const flag = (name: string) => process.argv.slice(2).find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
const seconds = Number(positional[0] ?? 5)
const clients = Number(positional[1] ?? 50)
/** Phases to run (comma list of loadgen, client, resolve, spawn); default all. */
const phases = new Set((flag("only") ?? "loadgen,client,resolve,spawn").split(","))
/** Requests each load-generator connection keeps in flight (comma list: one loadgen phase each). */
const depths = (flag("depth") ?? "1,4").split(",").map(Number)

const HANDLER = String.raw`
const write = (obj) => { const b = Buffer.from(JSON.stringify(obj)); const h = Buffer.alloc(4); h.writeUInt32LE(b.length, 0); return Buffer.concat([h, b]) }
let buf = Buffer.alloc(0)
process.stdin.on("data", (chunk) => {
  buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
  const out = []
  while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32LE(0)) {
    const len = buf.readUInt32LE(0)
    const req = JSON.parse(buf.subarray(4, 4 + len).toString("utf8"))
    buf = buf.subarray(4 + len)
    out.push(write({ header: { status: "ok", command: "sendClients", id: req.header.id }, payload: { type: "echo", data: req.payload.data } }))
  }
  if (out.length > 0) process.stdout.write(Buffer.concat(out))
})
`

const handlers = Schema.decodeSync(HandlersConfig)({
  echo: { command: process.execPath, args: ["-e", HANDLER], mode: "persistent", concurrency: 256, queue: 1024, timeout: "30s" },
  spawn: { command: process.execPath, args: ["-e", HANDLER], mode: "per-request", concurrency: 4, timeout: "30s" }
})

const noSync = Layer.succeed(SyncProtocol, SyncProtocol.of({ serve: () => Stream.empty }))
const deps = Layer.mergeAll(Registry.layer, layerUnsigned, layerAcceptAll).pipe(Layer.provideMerge(layerMemory))
const server = Listener.layer({ ...Listener.defaultOptions, port: 0, maxConnectionsPerAddress: 1024, maxConnections: 1024 }).pipe(
  Layer.provide(noSync),
  Layer.provideMerge(layerServer({ handlers, messages: Schema.decodeSync(MessagesConfig)({ maxInFlight: 64 }) }).pipe(Layer.provideMerge(deps))),
  Layer.orDie,
  Layer.provideMerge(NodeContext.layer)
)

/**
 * A load generator: `conns` raw connections, each authenticating then keeping `depth` requests of `type` in
 * flight (depth 1: the next request as soon as the previous answer is in). Plain `node:net`, like wrk, so the
 * figure is the server's: it prints its own CPU time.
 */
const LOADGEN = String.raw`
const net = require("node:net")
const [port, conns, ms, type, data, depth, good] = [Number(process.argv[1]), Number(process.argv[2]), Number(process.argv[3]), process.argv[4], JSON.parse(process.argv[5]), Number(process.argv[6]), process.argv[7].split(",")]
const frame = (obj) => { const b = Buffer.from(JSON.stringify(obj)); const h = Buffer.alloc(4); h.writeUInt32LE(b.length, 0); return Buffer.concat([h, b]) }
const latencies = []; const starters = []; let errors = 0; let open = conns; let deadline = 0; let ready = 0; let cpu
for (let c = 0; c < conns; c++) {
  const s = net.connect(port, "127.0.0.1"); s.setNoDelay(true)
  let buf = Buffer.alloc(0), id = 0, authed = false; const sent = new Map()
  const send = () => { const i = ++id; sent.set(i, performance.now()); s.write(frame({ header: { scope: "client", id: i }, payload: { type, data } })) }
  s.on("connect", () => s.write(frame({ header: { scope: "client", id: 0, authentication: { username: "bench", password: "bench-password" } }, payload: { type: "authenticate", data: null } })))
  s.on("data", (chunk) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
    while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32LE(0)) {
      const len = buf.readUInt32LE(0); const r = JSON.parse(buf.subarray(4, 4 + len)); buf = buf.subarray(4 + len)
      if (!authed) { authed = true; if (++ready === conns) process.send("go"); continue }
      const t = sent.get(r.header.id); sent.delete(r.header.id)
      if (good.includes(r.header.status)) latencies.push(performance.now() - t); else errors++
      if (Date.now() < deadline) send()
      else if (sent.size === 0) { s.end(); if (--open === 0) { const u = process.cpuUsage(cpu); process.send(JSON.stringify({ latencies, errors, cpu: (u.user + u.system) / 1e6 }), () => process.exit(0)) } }
    }
  })
  starters.push(() => { for (let k = 0; k < depth; k++) send() })
}
process.on("message", () => { deadline = Date.now() + ms; cpu = process.cpuUsage(); for (const start of starters) start() })
`

/** Runs `procs` load generators with `conns` connections each for `ms`; returns every latency. */
const loadgen = (port: number, procs: number, conns: number, ms: number, type: string, data: unknown, depth: number, good: ReadonlyArray<string> = ["ok"]) =>
  Effect.async<{ latencies: Array<number>; errors: number; cpu: number; server: number; handlers: number }>((resume) => {
    // CPU of this process and the handlers from "go" (every connection authenticated: scrypt is not counted).
    let started = { server: 0, handlers: 0 }
    const all: Array<number> = []
    let errors = 0
    let cpu = 0
    let done = 0
    let ready = 0
    const children = Array.from({ length: procs }, () =>
      fork("-e", [LOADGEN, String(port), String(conns), String(ms), type, JSON.stringify(data), String(depth), good.join(",")], { execArgv: [] }))
    for (const child of children) {
      child.on("message", (m) => {
        if (m === "go") {
          if (++ready === procs) {
            started = cpuSeconds(children.map((c) => c.pid))
            for (const c of children) c.send("go")
          }
          return
        }
        const r = JSON.parse(String(m)) as { latencies: Array<number>; errors: number; cpu: number }
        for (const l of r.latencies) all.push(l)
        errors += r.errors
        cpu += r.cpu
        if (++done === procs) {
          const ended = cpuSeconds(children.map((c) => c.pid))
          resume(Effect.succeed({
            latencies: all.sort((a, b) => a - b), errors, cpu, server: ended.server - started.server, handlers: ended.handlers - started.handlers
          }))
        }
      })
    }
  })

/** CPU seconds used so far by this process and its live children (the handler processes). */
const cpuSeconds = (except: ReadonlyArray<number | undefined> = []) => {
  const own = process.cpuUsage()
  let children = 0
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8")
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      if (Number(fields[1]) === process.pid && fields[0] !== "Z" && !except.includes(Number(entry))) {
        children += (Number(fields[11]) + Number(fields[12])) / 100
      }
    } catch {
      // gone
    }
  }
  return { server: (own.user + own.system) / 1e6, handlers: children }
}

const percentile = (sorted: ReadonlyArray<number>, p: number) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN
const fmt = (ms: number) => `${ms.toFixed(2)} ms`

/** Each session sends `type` requests back to back until the deadline; returns every latency (ms). */
const hammer = (sessions: ReadonlyArray<MessageSession>, type: string, data: unknown, durationMs: number, good: ReadonlyArray<string> = ["ok"]) =>
  Effect.gen(function* () {
    const deadline = performance.now() + durationMs
    const latencies: Array<number> = []
    let errors = 0
    const cpu = process.cpuUsage()
    yield* Effect.forEach(sessions, (session) =>
      Effect.gen(function* () {
        while (performance.now() < deadline) {
          const start = performance.now()
          const r = yield* session.request(type, data)
          if (good.includes(r.header.status)) latencies.push(performance.now() - start)
          else errors++
        }
      }), { concurrency: "unbounded", discard: true })
    const used = process.cpuUsage(cpu)
    return { latencies: latencies.sort((a, b) => a - b), errors, cpuMs: (used.user + used.system) / 1000 }
  })

const report = (label: string, r: { latencies: ReadonlyArray<number>; errors: number; cpuMs: number }, durationMs: number) =>
  Effect.sync(() => {
    const rate = r.latencies.length / (durationMs / 1000)
    console.log(`${label}: ${r.latencies.length} requests in ${(durationMs / 1000).toFixed(1)} s = ${rate.toFixed(0)} req/s, ` +
      `p50 ${fmt(percentile(r.latencies, 0.5))}, p99 ${fmt(percentile(r.latencies, 0.99))}, errors ${r.errors}; ` +
      `this process (server + clients) used ${(r.cpuMs / 1000).toFixed(2)} CPU s = ${(r.latencies.length / (r.cpuMs / 1000)).toFixed(0)} req per CPU s`)
    return rate
  })

const program = Effect.gen(function* () {
  const { port } = (yield* Listener.Listener).address
  const accounts = yield* Accounts
  yield* accounts.create("bench", "bench-password", [])
  const sessions = yield* Effect.forEach(Array.from({ length: clients }), () =>
    Effect.tap(connect({ host: "127.0.0.1", port }), (s) => s.authenticate("bench", "bench-password")), { concurrency: 10 })
  console.log(`upm message protocol bench: ${clients} clients, ${seconds} s per phase, node ${process.version}, load average ${loadavg().map((l) => l.toFixed(1)).join(" ")}`)
  // warm up the persistent handler and the JIT
  yield* hammer(sessions, "echo", { warm: true }, 1000)
  const durationMs = seconds * 1000
  const data = { package: "alice/greetings", range: "^1.2" }
  for (const depth of depths) {
    if (!phases.has("loadgen")) break
    const external = yield* loadgen(port, 2, Math.ceil(clients / 2), durationMs, "echo", data, depth)
    const rate = external.latencies.length / seconds
    const serverCpu = external.server
    const handlerCpu = external.handlers
    const perRequest = (s: number) => `${((s * 1e6) / external.latencies.length).toFixed(0)} µs/req`
    console.log(`persistent handler, ${clients} clients in 2 load processes, ${depth} in flight each: ${external.latencies.length} requests = ` +
      `${rate.toFixed(0)} req/s, p50 ${fmt(percentile(external.latencies, 0.5))}, p99 ${fmt(percentile(external.latencies, 0.99))}, errors ${external.errors}`)
    console.log(`  CPU: server process ${serverCpu.toFixed(2)} s (${perRequest(serverCpu)}), handler ${handlerCpu.toFixed(2)} s (${perRequest(handlerCpu)}), ` +
      `load generators ${external.cpu.toFixed(2)} s (${perRequest(external.cpu)}); wall ${seconds} s on ${cpus().length} cores, load average now ${loadavg()[0]?.toFixed(1)}`)
    console.log(`  target ≥ 5000 req/s: ${rate >= 5000 ? "met" : "MISSED"} (${(rate / 5000).toFixed(2)}× target)`)
  }
  if (phases.has("client")) {
    const persistent = yield* hammer(sessions, "echo", data, durationMs)
    yield* report(`persistent handler, ${clients} in-process MessageClient sessions`, persistent, durationMs)
  }
  if (phases.has("resolve")) {
    // resolve of an unknown package answers "not-found": count every answer
    const r = yield* loadgen(port, 2, Math.ceil(clients / 2), durationMs, "resolve", "nobody/nothing@^1", 1, ["ok", "not-found"])
    const serverCpu = r.server
    console.log(`built-in resolve (no handler process), ${clients} clients in 2 load processes, 1 in flight each: ` +
      `${(r.latencies.length / seconds).toFixed(0)} req/s, p50 ${fmt(percentile(r.latencies, 0.5))}, p99 ${fmt(percentile(r.latencies, 0.99))}, ` +
      `errors ${r.errors}; server ${((serverCpu * 1e6) / r.latencies.length).toFixed(0)} µs CPU/req`)
  }
  const one = sessions[0]
  if (one !== undefined && phases.has("spawn")) {
    const latencies: Array<number> = []
    for (let i = 0; i < 30; i++) {
      const start = performance.now()
      const r = yield* one.request("spawn", { i })
      if (r.header.status === "ok") latencies.push(performance.now() - start)
    }
    latencies.sort((a, b) => a - b)
    console.log(`per-request handler (spawn per message, sequential): ${latencies.length} requests, p50 ${fmt(percentile(latencies, 0.5))}, p99 ${fmt(percentile(latencies, 0.99))}`)
    const start = performance.now()
    yield* Effect.async<void>((resume) => {
      spawn(process.execPath, ["-e", "0"]).on("exit", () => resume(Effect.void))
    })
    console.log(`  (a bare \`node -e 0\` spawn and exit on this machine now: ${fmt(performance.now() - start)})`)
  }
})


Effect.runPromise(Effect.scoped(Effect.flatMap(Layer.build(server), (ctx) => program.pipe(Effect.provide(ctx))))).then(
  () => process.exit(0),
  (e) => {
    console.error(e)
    process.exit(1)
  }
)
