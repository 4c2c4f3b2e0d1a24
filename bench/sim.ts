/**
 * A longer sweep of the peers simulation (test/sim/run.ts) than `npm test` runs: more seeds, more servers, more
 * steps. Prints failing seeds (rerun one with SIM_SEED=<seed> npx vitest run test/sim/Peers.sim.test.ts).
 *
 *   npx tsx bench/sim.ts [seeds=50] [servers=4] [steps=60]
 */
import { Effect, TestContext } from "effect"
import { memoryKey } from "../test/services/KeysFixtures.js"
import { runSeed } from "../test/sim/run.js"

const [seeds = 50, servers = 4, steps = 60] = process.argv.slice(2).map(Number)
const keys = new Map([["alice", memoryKey("alice_ed25519")], ["bob", memoryKey("bob_rsa3072")]])

const program = Effect.gen(function* () {
  const failed: Array<number> = []
  const started = performance.now()
  let worst = 0
  for (let seed = 1_000_000; seed < 1_000_000 + seeds; seed++) {
    const result = yield* runSeed(seed, { servers, steps, interval: 5000, keys, boundIntervals: 12 }).pipe(Effect.provide(TestContext.TestContext))
    worst = Math.max(worst, result.convergedAfter)
    if (!result.ok) {
      failed.push(seed)
      console.log(`seed ${seed} FAILED: ${result.detail}`)
    }
  }
  const s = (performance.now() - started) / 1000
  console.log(`${seeds} seeds × ${servers} servers × ${steps} steps: ${failed.length} failed; slowest convergence ${worst} ms simulated; ${s.toFixed(1)} s real (${(s / seeds).toFixed(2)} s per seed)`)
  if (failed.length > 0) process.exitCode = 1
})

Effect.runPromise(program)
