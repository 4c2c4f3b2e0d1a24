/**
 * A longer sweep of the peers simulation (test/sim/run.ts on the discrete-event SimRuntime) than `npm test`
 * runs: more seeds, more servers, more steps, a share of them with signed releases (the real Verifier and
 * ownership chains). Prints failing seeds (rerun one with SIM_SEED=<seed> npx vitest run test/sim/Peers.sim.test.ts,
 * or here with the same arguments and first seed).
 *
 *   npx tsx bench/sim.ts [seeds=300] [servers=4] [steps=40] [first=1000000] [signedEvery=5]
 */
import { memoryKey } from "../test/services/KeysFixtures.js"
import { simulate } from "../test/sim/run.js"

const [seeds = 300, servers = 4, steps = 40, first = 1_000_000, signedEvery = 5] = process.argv.slice(2).map(Number)
const keys = new Map([["alice", memoryKey("alice_ed25519")], ["bob", memoryKey("bob_rsa3072")]])

const failed: Array<number> = []
const started = performance.now()
const cpu0 = process.cpuUsage()
let worst = 0
let published = 0
let connections = 0
for (let seed = first; seed < first + seeds; seed++) {
  const signed = signedEvery > 0 && seed % signedEvery === 0
  const { value } = await simulate(seed, { servers, steps, interval: 5000, keys: signed ? keys : undefined, boundIntervals: 12 })
  worst = Math.max(worst, value.convergedAfter)
  published += value.published
  connections += value.connections
  if (!value.ok) {
    failed.push(seed)
    console.log(`seed ${seed}${signed ? " (signed)" : ""} FAILED: ${value.detail}`)
  }
}
const s = (performance.now() - started) / 1000
const cpu = process.cpuUsage(cpu0)
console.log(
  `${seeds} seeds × ${servers} servers × ${steps} steps (every ${signedEvery}th signed): ${failed.length} failed; ` +
    `${published} publishes, ${connections} connections; slowest convergence ${worst} ms simulated; ` +
    `${s.toFixed(1)} s real, ${((cpu.user + cpu.system) / 1000 / seeds).toFixed(0)} ms CPU per seed`
)
if (failed.length > 0) process.exitCode = 1
