/**
 * One simulated run for one seed: K servers (full mesh or a line, chosen by the seed), clients publishing
 * signed releases to random servers, crashes and restarts, partitions, lossy links with latency; then the faults
 * stop, the network heals, every server restarts, and all must converge within a bounded simulated time.
 * Invariants (checked after every step): no release is ever visible with part of its graph missing, and no
 * server ever shows two contents for one release. Runs on simulated time (`simulate`: SimRuntime; the TestClock
 * works too, far slower); every random choice comes from the simulation's one seeded PRNG, so the same seed
 * replays the same run (`trace` is identical).
 */
import { Duration, Effect, type Fiber, Logger, LogLevel } from "effect"
import { createHash } from "node:crypto"
import type { SigningKey } from "../../src/services/Keys.js"
import { makeSimulation, noFaults, type SimFaults } from "../../src/services/Network.js"
import { makeMemory } from "../../src/services/ObjectStore.js"
import {
  buildRelease, checkInvariants, convergence, makeServer, newObserved, publish, releaseSets, type Sabotage, type SimServer
} from "./harness.js"
import { runSimulated } from "./SimRuntime.js"

export interface RunOptions {
  readonly servers: number
  readonly steps: number
  /** Anti-entropy interval (ms of simulated time). */
  readonly interval: number
  /** Signing keys by owner namespace; none: unsigned releases and the shape-only Verifier. */
  readonly keys: ReadonlyMap<string, SigningKey> | undefined
  /** Convergence must happen within this many intervals after healing. */
  readonly boundIntervals: number
  /** Deliberately broken behaviour (harness.ts): the invariants must catch it on some seed. */
  readonly sabotage?: Sabotage | undefined
}

export interface RunResult {
  readonly ok: boolean
  readonly detail: string
  /** Everything that happened, for reproducing and for determinism checks. */
  readonly trace: ReadonlyArray<string>
  readonly digest: string
  /** Simulated ms from healing to convergence. */
  readonly convergedAfter: number
  readonly published: number
  /** Connections opened on the simulated network. */
  readonly connections: number
}

const faulty: SimFaults = {
  latencyMin: Duration.millis(1),
  latencyMax: Duration.millis(60),
  jitter: Duration.millis(30),
  connectLoss: 0.05,
  chunkLoss: 0.01
}

export const runSeed = (seed: number, options: RunOptions) =>
  Effect.scoped(Effect.gen(function* () {
    const sim = yield* makeSimulation(seed, faulty)
    const rng = sim.rng
    const trace: Array<string> = []
    const start = yield* Effect.clockWith((c) => c.currentTimeMillis)
    const log = (line: string) =>
      Effect.map(Effect.clockWith((c) => c.currentTimeMillis), (t) => { trace.push(`${t - start} ${line}`) })
    const names = Array.from({ length: options.servers }, (_, i) => `s${i}`)
    const mesh = (yield* rng.next) < 0.5
    const neighbours = (i: number) =>
      mesh ? names.filter((_, j) => j !== i) : names.filter((_, j) => Math.abs(i - j) === 1)
    yield* log(`topology ${mesh ? "mesh" : "line"} ${names.join(",")}`)
    const servers: Array<SimServer> = []
    for (const [i, name] of names.entries()) {
      servers.push(yield* makeServer(sim, { name, peers: neighbours(i) }, { interval: options.interval, signed: options.keys !== undefined, sabotage: options.sabotage }))
    }
    yield* Effect.forEach(servers, (s) => s.boot, { discard: true })

    const owners = options.keys === undefined ? ["alice", "bob"] : [...options.keys.keys()]
    const packages = owners.flatMap((o) => [`${o}/one`, `${o}/two`])
    const nextMinor = new Map<string, number>()
    const clientStore = yield* makeMemory
    const observed = newObserved()
    const publishes: Array<Fiber.RuntimeFiber<void>> = []
    let published = 0

    const pick = <A>(xs: ReadonlyArray<A>) => Effect.map(rng.int(xs.length), (i) => xs[i]!)

    const step = (n: number) =>
      Effect.gen(function* () {
        const r = yield* rng.next
        if (r < 0.45) {
          const server = yield* pick(servers)
          const name = yield* pick(packages)
          const minor = nextMinor.get(name) ?? 0
          // Now and then the same version again with other content, on another server: a conflict.
          const again = minor > 0 && (yield* rng.chance(0.08))
          const version = `1.${again ? minor - 1 : minor}.0`
          if (!again) nextMinor.set(name, minor + 1)
          const key = options.keys?.get(name.slice(0, name.indexOf("/")))
          const tag = yield* buildRelease(clientStore, key, name, version, `${name}@${version} step ${n} seed ${seed}\n`)
          published++
          const client = `client${yield* rng.int(3)}`
          yield* log(`publish ${name}@${version} ${tag.slice(0, 8)} via ${client} to ${server.name}`)
          publishes.push(yield* publish(sim, client, server.name, clientStore, tag).pipe(
            Effect.flatMap((outcome) => log(`published ${name}@${version} on ${server.name}: ${outcome}`)),
            Effect.forkScoped
          ))
        } else if (r < 0.53) {
          const live = servers.filter((s) => s.up())
          if (live.length > 1) {
            const victim = yield* pick(live)
            yield* log(`crash ${victim.name}`)
            yield* victim.crash
          }
        } else if (r < 0.66) {
          const dead = servers.filter((s) => !s.up())
          if (dead.length > 0) {
            const back = yield* pick(dead)
            yield* log(`restart ${back.name}`)
            yield* back.boot
          }
        } else if (r < 0.72) {
          const side = yield* Effect.forEach(names, () => rng.chance(0.5))
          const a = names.filter((_, i) => side[i])
          const b = names.filter((_, i) => !side[i])
          yield* log(`partition [${a.join(",")}] [${b.join(",")}]`)
          yield* sim.partition([a, b])
        } else if (r < 0.8) {
          yield* log("heal")
          yield* sim.heal
        }
        yield* Effect.sleep(Duration.millis(10 + (yield* rng.int(400))))
        return yield* checkInvariants(servers, observed)
      })

    const fail = (detail: string) =>
      Effect.map(sim.stats, (st): RunResult => ({ ok: false, detail, trace, digest: digestOf(trace), convergedAfter: -1, published, connections: st.connections }))

    for (let n = 0; n < options.steps; n++) {
      const violation = yield* step(n)
      if (violation !== undefined) return yield* fail(`invariant broken at step ${n}: ${violation}`)
    }

    // Faults stop: heal, restart everyone, let publishes finish.
    yield* sim.heal
    yield* sim.setFaults(noFaults)
    yield* Effect.forEach(servers.filter((s) => !s.up()), (s) => s.boot, { discard: true })
    const healedAt = yield* Effect.clockWith((c) => c.currentTimeMillis)
    yield* log("faults stop: healed, all servers up")
    const bound = options.boundIntervals * options.interval
    const tick = Math.max(50, Math.floor(options.interval / 4))
    for (let waited = 0; waited <= bound; waited += tick) {
      const violation = yield* checkInvariants(servers, observed)
      if (violation !== undefined) return yield* fail(`invariant broken after healing: ${violation}`)
      const c = yield* convergence(servers)
      if (c.converged && publishes.every((f) => f.unsafePoll() !== null)) {
        const sets = yield* releaseSets(servers)
        yield* log(`converged: ${c.detail}`)
        const final = [...sets[0]!.entries()].sort().map(([n, h]) => `${n} ${h}`)
        trace.push(...final)
        const now = yield* Effect.clockWith((cl) => cl.currentTimeMillis)
        const { connections } = yield* sim.stats
        return { ok: true, detail: c.detail, trace, digest: digestOf(trace), convergedAfter: now - healedAt, published, connections } satisfies RunResult
      }
      yield* Effect.sleep(Duration.millis(tick))
    }
    const c = yield* convergence(servers)
    const pending = yield* Effect.forEach(servers, (s) => Effect.map(s.pending, (n) => `${s.name} ${n}`))
    return yield* fail(`not converged within ${bound} ms of simulated time after healing: ${c.detail} (pulls pending: ${pending.join(", ")})`)
  }))

const digestOf = (trace: ReadonlyArray<string>) => createHash("sha1").update(trace.join("\n")).digest("hex")

/**
 * Runs one seed on the discrete-event runtime (SimRuntime: time jumps to the next timer whenever no fiber can
 * run), with logging off (the trace says what happened). Rejects only if the run itself breaks (deadlock,
 * livelock, defect); a broken invariant is a result with `ok: false`.
 */
export const simulate = (seed: number, options: RunOptions, logLevel: LogLevel.LogLevel = LogLevel.None) =>
  runSimulated(runSeed(seed, options).pipe(Logger.withMinimumLogLevel(logLevel)), { maxTime: 3_600_000 })
