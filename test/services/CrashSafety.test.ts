/**
 * Crash safety of the server runtime on the fs store: a real `upm serve` process is killed with SIGKILL at
 * seeded random moments during pushes (mid-handshake, mid-object, between batches, while sealing), restarted on
 * the same store, and checked every time:
 *
 * - `git fsck --strict` finds no corruption (dangling objects are allowed: they are unsealed leftovers);
 * - no release ref is visible unless every object of its graph is stored;
 * - the client's retried push completes, and sends only what the server is missing (plus the tag, which a push
 *   always starts with).
 *
 * Rounds cycle through protocol v0 (the server WANTs level by level), v2 (the server names what it needs, the
 * client streams it) and v3 (v2 with deflated SENDs, stored as they arrive).
 */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import type { ObjectHash } from "../../src/domain/ObjectHash.js"
import * as SyncCodec from "../../src/protocol/SyncCodec.js"
import { ConnectionError } from "../../src/services/Connection.js"
import { getDeflated, getFramed, makeMemory, ObjectStore } from "../../src/services/ObjectStore.js"
import * as SyncClient from "../../src/services/SyncClient.js"
import { type Files, git, gitFsck, graphOf, hasLoose, signedRelease } from "../e2e/release.js"
import { type ServerProcess, spawnServer } from "../e2e/server.js"
import { deflating } from "./SyncFixtures.js"

const SEED = 0x5eed_2026
const ROUNDS = 20

/** mulberry32: a small seeded PRNG, so a failing round can be replayed. */
const prng = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * A release tree: files shared by every release, and files of its own in several folders two levels deep (over
 * 64 objects, so a v0 push takes several WANT batches and the kill can fall between stored batches).
 */
const releaseFiles = (round: number, random: () => number): Files => {
  const shared: Record<string, string> = {}
  for (let i = 0; i < 8; i++) shared[`shared-${i}.js`] = `export const shared${i} = ${i}\n`
  const own: Record<string, Files> = {}
  for (let d = 0; d < 4; d++) {
    const folder: Record<string, string | Files> = {}
    for (let i = 0; i < 16; i++) folder[`own-${i}.js`] = `export const v = "${round}.${d}.${i}.${random()}"\n`.repeat(20)
    const nested: Record<string, string> = {}
    for (let i = 0; i < 8; i++) nested[`n-${i}.txt`] = `round ${round} folder ${d} nested ${i} ${random()}\n`.repeat(20)
    folder["nested"] = nested
    own[`part-${d}`] = folder
  }
  return {
    "upm.json": `{"name":"alice/crash","version":"${round + 1}.0.0"}\n`,
    "README.md": "# crash test package\n",
    lib: { ...shared, [`r${round}`]: own }
  }
}

interface Trigger {
  /** Bytes the client has written so far. */
  written: number
  /** Kill the server once this many bytes are written (the write that crosses it is cut there). */
  readonly threshold: number
  /** Wait this long after the threshold before killing (lands the kill inside the server's work). */
  readonly delayMillis: number
  fired: boolean
}

/** The client is paced like a slow link (2 KiB slices, 3 ms apart) so the server keeps up with what it is sent. */
const SLICE = 2048
const PACE_MILLIS = 3

/**
 * connectTcp, paced, with the server SIGKILLed when the client has written `trigger.threshold` bytes (plus
 * `trigger.delayMillis`): the kill lands wherever the server is in reading, storing or sealing by then.
 */
const killingConnect = (trigger: Trigger, kill: Effect.Effect<void>): SyncClient.Connect => (address) =>
  Effect.map(SyncClient.connectTcp(address), (transport) => {
    const writeSlice = (bytes: Uint8Array): Effect.Effect<void, ConnectionError> =>
      Effect.gen(function* () {
        const room = trigger.threshold - trigger.written
        if (trigger.fired || bytes.length < room) {
          trigger.written += bytes.length
          return yield* transport.write(bytes)
        }
        yield* transport.write(bytes.subarray(0, room))
        trigger.written += room
        trigger.fired = true
        if (trigger.delayMillis > 0) yield* Effect.sleep(trigger.delayMillis)
        yield* kill
        return yield* Effect.fail(new ConnectionError({ reason: "Closed", detail: "server killed by the test" }))
      })
    return {
      input: transport.input,
      write: (bytes: Uint8Array) =>
        Effect.gen(function* () {
          for (let at = 0; at < bytes.length; at += SLICE) {
            if (at > 0) yield* Effect.sleep(PACE_MILLIS)
            yield* writeSlice(bytes.subarray(at, Math.min(bytes.length, at + SLICE)))
          }
        })
    }
  })

const push = (server: ServerProcess, publisher: ObjectStore["Type"], tag: ObjectHash, versions: ReadonlyArray<number>, connect: SyncClient.Connect) =>
  Effect.scoped(Effect.gen(function* () {
    const client = yield* SyncClient.make(connect, { versions, timeout: SyncClient.defaultOptions.timeout })
      .pipe(Effect.provideService(ObjectStore, publisher))
    const session = yield* client.connect({ host: server.host, port: server.port })
    return yield* session.push(tag)
  }))

describe("crash safety", () => {
  it.live(`SIGKILL during pushes (${ROUNDS} rounds, seed 0x${SEED.toString(16)}): fsck clean, no partial release, retries send only what is missing`, () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped({ prefix: "upm-crash-" })
      const storeDir = `${dir}/store`
      const random = prng(SEED)
      // Serves deflated bytes too, so the client offers version 3 when a round asks for it.
      const publisher = deflating(yield* makeMemory)
      const start = () => spawnServer({ store: `fs:${storeDir}`, startTimeout: "60 seconds" })
      let server = yield* start()
      const summary: Array<string> = []

      for (let round = 0; round < ROUNDS; round++) {
        const { tag } = yield* signedRelease(publisher, "alice/crash", `${round + 1}.0.0`, releaseFiles(round, random))
        const graph = yield* graphOf(publisher, tag)
        const versions = [[0], [0, 2], [0, 2, 3]][round % 3]!
        const version = Math.max(...versions)
        // Every byte the first push writes (at most: v2 leaves out what earlier releases hold): the handshake, a
        // SEND per object (deflated in v3), and in v2 and v3 the `?verify` query.
        let total = `lit?${versions.join(",")}\n`.length + (version >= 2 ? `?verify ${tag}\n\n`.length : 0)
        for (const hash of graph) {
          const payload = yield* Effect.orDie((version === 3 ? getDeflated(hash) : getFramed(hash)).pipe(Effect.provideService(ObjectStore, publisher)))
          total += SyncCodec.sendHeader(payload.length).length + payload.length
        }
        // One round in five lets every byte through and kills while the server stores, verifies and seals.
        const late = random() < 0.2
        const trigger: Trigger = {
          written: 0,
          threshold: late ? total : 1 + Math.floor(random() * (total - 1)),
          // A little more spread over the server's reading, storing and sealing.
          delayMillis: Math.floor(random() * 50),
          fired: false
        }
        const victim = server
        const first = yield* push(victim, publisher, tag, versions, killingConnect(trigger, victim.kill("SIGKILL"))).pipe(Effect.either)
        if (!trigger.fired) yield* victim.kill("SIGKILL") // the push finished first: crash right after it
        assert.strictEqual(yield* victim.exitCode, 137, `round ${round}: the server was not killed`)

        // After the crash: no corruption, no partial release.
        const fsck = yield* gitFsck(storeDir)
        assert.isTrue(fsck.ok, `round ${round}: git fsck --strict: ${fsck.problems.join("\n")}`)
        const refs = (yield* git(storeDir, "for-each-ref", "--format=%(objectname) %(refname)", "refs/tags")).trim()
        for (const line of refs === "" ? [] : refs.split("\n")) {
          const [hash = "", name = ""] = line.split(" ")
          const missing = (yield* graphOf(publisher, hash as ObjectHash)).filter((h) => !hasLoose(storeDir, h))
          assert.deepStrictEqual(missing, [], `round ${round}: ${name} is visible but its graph is incomplete`)
        }

        // Restart on the same store and push again: only what is missing travels.
        server = yield* start()
        const missingBefore = graph.filter((h) => h !== tag && !hasLoose(storeDir, h)).length
        const retry = yield* push(server, publisher, tag, versions, SyncClient.connectTcp)
        assert.strictEqual(retry.status, "Sealed", `round ${round}`)
        assert.strictEqual(retry.objects, missingBefore + 1, `round ${round}: sent ${retry.objects}, missing ${missingBefore} + the tag`)
        assert.strictEqual((yield* git(storeDir, "rev-parse", `refs/tags/alice/crash/v${round + 1}.0.0`)).trim(), tag)
        summary.push(
          `round ${round} v${version}: killed after ${trigger.fired ? `${trigger.written}/${total} bytes +${trigger.delayMillis}ms` : "the push"}` +
          ` (first push ${Either.isRight(first) ? "completed" : "failed"}), retry sent ${retry.objects}/${graph.length}`
        )
      }
      const fsck = yield* gitFsck(storeDir)
      assert.isTrue(fsck.ok, fsck.problems.join("\n"))
      yield* Effect.logInfo(`crash safety:\n${summary.join("\n")}`)
    }).pipe(Effect.scoped, Effect.provide(NodeContext.layer)), 240_000)
})
