/**
 * Deterministic simulation of peers (docs/peers.md): many seeds, each a run of K servers over the in-memory
 * network on simulated time (test/sim/run.ts on SimRuntime: time jumps to the next timer whenever no fiber can
 * run, so a seed costs its CPU work only). SIM_SEEDS=<n> changes how many seeds run here; bench/sim.ts sweeps
 * longer runs. A failing seed is named in the test title and the failure, with its trace; rerun only it with
 * `SIM_SEED=<seed> npx vitest run test/sim/Peers.sim.test.ts`.
 */
import { assert, describe, it } from "vitest"
import { memoryKey } from "../services/KeysFixtures.js"
import { type RunOptions, type RunResult, simulate } from "./run.js"

const keys = new Map([["alice", memoryKey("alice_ed25519")], ["bob", memoryKey("bob_rsa3072")]])
/** Short runs (12 steps of 10–410 ms: a few publishes, crashes, partitions) on many seeds. */
const unsigned: RunOptions = { servers: 3, steps: 12, interval: 5000, keys: undefined, boundIntervals: 12 }
const signed: RunOptions = { ...unsigned, steps: 20, keys }

const only = process.env["SIM_SEED"]
const COUNT = Number(process.env["SIM_SEEDS"] ?? 150)
const SEEDS = only !== undefined ? [Number(only)] : Array.from({ length: COUNT }, (_, i) => i + 1)

const report = (seed: number, result: RunResult) =>
  `simulation seed ${seed} failed: ${result.detail}\n${result.trace.join("\n")}\nreproduce: SIM_SEED=${seed} npx vitest run test/sim/Peers.sim.test.ts`

const check = async (seed: number, options: RunOptions) => {
  const { value } = await simulate(seed, options)
  if (!value.ok) console.error(report(seed, value))
  assert.isTrue(value.ok, `seed ${seed}: ${value.detail}`)
}

/** Runs seeds until one fails; the seed that failed, or undefined. */
const firstFailing = async (from: number, count: number, options: RunOptions) => {
  for (let seed = from; seed < from + count; seed++) {
    const { value } = await simulate(seed, options)
    if (!value.ok) return { seed, value }
  }
  return undefined
}

describe("peers simulation", () => {
  it("the same seed replays the same run", async () => {
    const a = (await simulate(7, signed)).value
    const b = (await simulate(7, signed)).value
    assert.isTrue(a.ok, a.detail)
    assert.strictEqual(a.digest, b.digest)
    assert.deepStrictEqual(a.trace, b.trace)
    assert.isAbove(a.published, 3)
  })

  // Signed releases (the real Verifier: SSHSIG + namespace ownership) on a few seeds …
  for (const seed of SEEDS.slice(0, 3)) {
    it(`seed ${seed} (signed)`, () => check(seed, signed))
  }
  // … and the shape-only verifier on many (the checks are the same; signing costs CPU per release).
  it(`${SEEDS.length} seeds`, async () => {
    const failed: Array<string> = []
    for (const seed of SEEDS) {
      const { value } = await simulate(seed + 100_000, unsigned)
      if (!value.ok) {
        console.error(report(seed + 100_000, value))
        failed.push(`${seed + 100_000}: ${value.detail}`)
      }
    }
    assert.deepStrictEqual(failed, [])
  }, 300_000)

  // The invariants have teeth: broken behaviour makes some seed fail, and that failure replays exactly.
  it("without anti-entropy, lost announcements are never healed: convergence fails on some seed", async () => {
    const found = await firstFailing(200_000, 40, { ...unsigned, sabotage: "no-anti-entropy" })
    assert.isDefined(found, "no seed failed without anti-entropy")
    assert.match(found!.value.detail, /not converged/)
    const again = (await simulate(found!.seed, { ...unsigned, sabotage: "no-anti-entropy" })).value
    assert.strictEqual(again.digest, found!.value.digest)
    // The same seed with the real behaviour passes.
    assert.isTrue((await simulate(found!.seed, unsigned)).value.ok)
  }, 120_000)

  it("a store that loses acknowledged writes makes a release partially visible on some seed", async () => {
    const found = await firstFailing(300_000, 40, { ...unsigned, sabotage: "lying-store" })
    assert.isDefined(found, "no seed failed with a lying store")
    assert.match(found!.value.detail, /partially visible/)
  }, 120_000)
})
