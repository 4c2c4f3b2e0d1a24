import { assert, describe, it } from "@effect/vitest"
import { Chunk, Deferred, Effect, Exit, Fiber, Option, Ref, Stream } from "effect"
import * as fsp from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as DownloadCache from "../../src/services/DownloadCache.js"

const tempDir = Effect.acquireRelease(
  Effect.promise(() => fsp.mkdtemp(join(tmpdir(), "upm-download-cache-test-"))),
  (dir) => Effect.promise(() => fsp.rm(dir, { recursive: true, force: true }))
)

const bytesOf = (text: string) => new TextEncoder().encode(text)

const collect = <E>(stream: Stream.Stream<Uint8Array, E>) =>
  Effect.map(Stream.runCollect(stream), (chunks) => Buffer.concat(Chunk.toReadonlyArray(chunks)).toString("utf8"))

/** A build that counts its runs and gives `text` in two chunks. */
const counted = (runs: Ref.Ref<number>, text: string) =>
  Stream.unwrap(Effect.as(Ref.update(runs, (n) => n + 1), Stream.make(bytesOf(text.slice(0, 3)), bytesOf(text.slice(3)))))

const options = { maxBytes: 1024 * 1024, maxConcurrentBuilds: 2, readChunkBytes: 4 }

const listing = (dir: string) => Effect.promise(() => fsp.readdir(dir))

describe("DownloadCache", () => {
  it.scoped("builds a missing entry once however many ask at once, into a private file renamed into place", () =>
    Effect.gen(function* () {
      const dir = join(yield* tempDir, "cache")
      const cache = yield* DownloadCache.make({ ...options, dir })
      const runs = yield* Ref.make(0)
      const files = yield* Effect.all(
        Array.from({ length: 20 }, () => cache.get("k1", counted(runs, "hello, cache"))),
        { concurrency: "unbounded" }
      )
      assert.strictEqual(yield* Ref.get(runs), 1)
      for (const file of files) assert.strictEqual(file.size, 12)
      // Read in 4-byte chunks, whole.
      assert.strictEqual(yield* collect(files[0]!.bytes), "hello, cache")
      assert.deepStrictEqual(yield* listing(dir), ["k1"])
      assert.strictEqual((yield* Effect.promise(() => fsp.stat(dir))).mode & 0o777, 0o700)
      assert.strictEqual((yield* Effect.promise(() => fsp.stat(join(dir, "k1")))).mode & 0o777, 0o600)
      // Built already: no build, the same bytes.
      assert.strictEqual(yield* collect((yield* cache.get("k1", counted(runs, "never used"))).bytes), "hello, cache")
      assert.strictEqual(yield* Ref.get(runs), 1)
      assert.strictEqual(Buffer.from(yield* files[0]!.head(5)).toString(), "hello")
    }))

  it.scoped("keeps nothing of a failed build, tells every waiter, and builds again on the next request", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const cache = yield* DownloadCache.make({ ...options, dir })
      const failing = Stream.concat(Stream.make(bytesOf("partial")), Stream.fail("boom" as const))
      const results = yield* Effect.all([cache.get("k", failing), cache.get("k", failing)], { concurrency: "unbounded", mode: "either" })
      for (const result of results) assert.deepStrictEqual(result._tag === "Left" ? result.left : undefined, "boom")
      assert.deepStrictEqual(yield* listing(dir), [])
      assert.isTrue(Option.isNone(yield* cache.peek("k", failing)))
      const file = yield* cache.get("k", Stream.make(bytesOf("whole")))
      assert.strictEqual(yield* collect(file.bytes), "whole")
    }))

  it.scoped("finishes a build whose first requester went away, for the ones still waiting", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const cache = yield* DownloadCache.make({ ...options, dir })
      const gate = yield* Deferred.make<void>()
      const slow = Stream.unwrap(Effect.as(Deferred.await(gate), Stream.make(bytesOf("slow content"))))
      const first = yield* Effect.fork(cache.get("k", slow))
      const second = yield* Effect.fork(cache.get("k", slow))
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(first)
      yield* Deferred.succeed(gate, undefined)
      const file = yield* Fiber.join(second)
      assert.strictEqual(yield* collect(file.bytes), "slow content")
    }))

  it.scoped("stays within its size, deleting the least recently used entries", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const cache = yield* DownloadCache.make({ ...options, dir, maxBytes: 250 })
      const hundred = (c: string) => Stream.make(bytesOf(c.repeat(100)))
      yield* cache.get("a", hundred("a"))
      yield* cache.get("b", hundred("b"))
      // A use of "a" makes "b" the least recently used.
      yield* cache.get("a", hundred("a"))
      yield* cache.get("c", hundred("c"))
      assert.deepStrictEqual((yield* listing(dir)).sort(), ["a", "c"])
      assert.deepStrictEqual(yield* cache.usage, { entries: 2, bytes: 200 })
      // An entry bigger than the whole cache is still served (then it is the only one).
      const big = yield* cache.get("big", Stream.make(bytesOf("x".repeat(300))))
      assert.strictEqual((yield* collect(big.bytes)).length, 300)
      assert.deepStrictEqual(yield* listing(dir), ["big"])
    }))

  it.scoped("rebuilds an entry deleted between its lookup and its read (eviction, another process)", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const cache = yield* DownloadCache.make({ ...options, dir })
      const runs = yield* Ref.make(0)
      const file = yield* cache.get("k", counted(runs, "same bytes"))
      yield* Effect.promise(() => fsp.rm(join(dir, "k")))
      assert.strictEqual(yield* collect(file.bytes), "same bytes")
      assert.strictEqual(yield* Ref.get(runs), 2)
      assert.deepStrictEqual(yield* listing(dir), ["k"])
    }))

  it.scoped("picks up what an earlier run (or another process) built, and removes abandoned temp files", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      yield* Effect.scoped(Effect.flatMap(DownloadCache.make({ ...options, dir }), (cache) => cache.get("k", Stream.make(bytesOf("kept")))))
      yield* Effect.promise(() => fsp.writeFile(join(dir, ".tmp-k2-abcdef"), "half"))
      const cache = yield* DownloadCache.make({ ...options, dir })
      assert.deepStrictEqual(yield* listing(dir), ["k"])
      const never = Stream.die("must not build")
      const found = yield* cache.peek("k", never)
      assert.isTrue(Option.isSome(found))
      assert.strictEqual(yield* collect(Option.getOrThrow(found).bytes), "kept")
      // Renamed into place by someone else after start: found on disk, not rebuilt.
      yield* Effect.promise(() => fsp.writeFile(join(dir, "other"), "theirs"))
      assert.strictEqual(yield* collect((yield* cache.get("other", never)).bytes), "theirs")
      assert.deepStrictEqual(yield* cache.usage, { entries: 2, bytes: 10 })
    }))

  it.scoped("fails with a typed error when its directory cannot be made", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      yield* Effect.promise(() => fsp.writeFile(join(dir, "file"), "x"))
      const exit = yield* Effect.exit(DownloadCache.make({ ...options, dir: join(dir, "file", "cache") }))
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) assert.include(String(exit.cause), "DownloadCacheError")
    }))
})
