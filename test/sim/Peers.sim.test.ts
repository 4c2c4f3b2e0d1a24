/**
 * Deterministic simulation of peers (docs/peers.md): many seeds, each a run of K servers over the in-memory
 * network on the TestClock (test/sim/run.ts). `npm test` runs few seeds (each costs 2–7 s: every simulated wake-up
 * makes the TestClock poll fibers with real timers); SIM_SEEDS=<n> runs more, bench/sim.ts sweeps. A failing seed is named in the test title and the failure; rerun
 * only it with `SIM_SEED=<seed> npx vitest run test/sim/Peers.sim.test.ts`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { memoryKey } from "../services/KeysFixtures.js"
import { type RunOptions, runSeed } from "./run.js"

const keys = new Map([["alice", memoryKey("alice_ed25519")], ["bob", memoryKey("bob_rsa3072")]])
const signed: RunOptions = { servers: 3, steps: 30, interval: 5000, keys, boundIntervals: 12 }
const unsigned: RunOptions = { ...signed, keys: undefined }

const only = process.env["SIM_SEED"]
const SEEDS = only !== undefined ? [Number(only)] : Array.from({ length: Number(process.env["SIM_SEEDS"] ?? 2) }, (_, i) => i + 1)

const check = (seed: number, options: RunOptions) =>
  Effect.gen(function* () {
    const result = yield* runSeed(seed, options)
    if (!result.ok) {
      console.error(`simulation seed ${seed} failed: ${result.detail}\n${result.trace.join("\n")}\nreproduce: SIM_SEED=${seed} npx vitest run test/sim/Peers.sim.test.ts`)
    }
    assert.isTrue(result.ok, `seed ${seed}: ${result.detail}`)
    return result
  })

describe("peers simulation", () => {
  it.effect("the same seed replays the same run", () =>
    Effect.gen(function* () {
      const a = yield* runSeed(7, signed)
      const b = yield* runSeed(7, signed)
      assert.isTrue(a.ok, a.detail)
      assert.strictEqual(a.digest, b.digest)
      assert.deepStrictEqual(a.trace, b.trace)
      assert.isAbove(a.published, 5)
    }))

  // Signed releases (the real Verifier: SSHSIG + namespace ownership) on a few seeds …
  for (const seed of SEEDS.slice(0, 1)) {
    it.effect(`seed ${seed} (signed)`, () => check(seed, signed))
  }
  // … and the shape-only verifier on many, to keep the suite fast.
  for (const seed of SEEDS) {
    it.effect(`seed ${seed}`, () => check(seed + 100_000, unsigned))
  }
})
