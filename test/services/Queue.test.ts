/**
 * The moderation queue and gc: a queued release is kept (its queue ref reaches its objects); once rejected, its
 * queue ref goes and its objects are collectable by `upm gc` (LocalStore.gc over the store's fs layout), while
 * what sealed releases reach — also objects a rejected proposal shared with them — stays.
 */
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { PackageName, Version } from "../../src/domain/Package.js"
import { layerFs } from "../../src/services/FsStore.js"
import { gc } from "../../src/services/LocalStore.js"
import { missingReachable, ObjectStore } from "../../src/services/ObjectStore.js"
import * as QueueModule from "../../src/services/Queue.js"
import { ProposalQueue, QUEUE_PREFIX } from "../../src/services/Queue.js"
import * as Registry from "../../src/services/Registry.js"
import { layerUnsigned } from "../../src/services/Verifier.js"
import { sealRelease, seedRelease } from "./MessageFixtures.js"

const withStore = <A, E>(body: (root: string) => Effect.Effect<A, E, ObjectStore | ProposalQueue | Registry.Registry | NodeContext.NodeContext>) =>
  Effect.gen(function* () {
    const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "upm-queue-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(root, { recursive: true, force: true })))
    const store = layerFs(root)
    const layer = Layer.mergeAll(QueueModule.layer, Registry.layer).pipe(
      Layer.provideMerge(Layer.merge(layerUnsigned, Registry.layer)),
      Layer.provideMerge(store),
      Layer.provideMerge(NodeContext.layer)
    )
    return yield* body(root).pipe(Effect.provide(layer))
  })

describe("ProposalQueue and gc", () => {
  it.scoped("a rejected proposal's objects become collectable; the queue ref goes; sealed releases keep theirs", () =>
    withStore((root) =>
      Effect.gen(function* () {
        const store = yield* ObjectStore
        const queue = yield* ProposalQueue
        const kept = yield* sealRelease("alice/kept", "1.0.0")
        // A proposal with content of its own, and one whose tree is the sealed release's (only its tag is its own).
        const own = yield* seedRelease("alice/proposed", "1.0.0", "only in the proposal\n")
        const shared = yield* seedRelease("alice/shared", "1.0.0", "hello from alice/kept@1.0.0\n")
        assert.strictEqual(shared.tree, kept.tree)
        yield* queue.enqueue(own)
        yield* queue.enqueue(shared)

        // Queued: gc keeps everything (the queue refs reach the proposals).
        const first = yield* gc(root, false)
        assert.strictEqual(first.removed, 0)
        assert.isTrue(yield* store.has(own.tagHash))

        yield* queue.reject(PackageName.make("alice/proposed"), Version.make("1.0.0"), "not now")
        yield* queue.reject(PackageName.make("alice/shared"), Version.make("1.0.0"), "a copy")
        assert.deepStrictEqual(yield* store.listRefs(QUEUE_PREFIX), [])
        assert.deepStrictEqual(yield* queue.list(), [])

        // Rejected: the proposal's own objects (tag, tree, blob) and the shared one's tag go; the sealed release
        // keeps its whole graph.
        const dry = yield* gc(root, true)
        assert.strictEqual(dry.removed, 4)
        assert.isTrue(yield* store.has(own.tagHash))
        const second = yield* gc(root, false)
        assert.strictEqual(second.removed, 4)
        assert.isFalse(yield* store.has(own.tagHash))
        assert.isFalse(yield* store.has(own.tree))
        assert.isFalse(yield* store.has(shared.tagHash))
        assert.isTrue(yield* store.has(kept.tagHash))
        assert.deepStrictEqual(yield* missingReachable(kept.tagHash), [])
        // Nothing is left to collect.
        assert.strictEqual((yield* gc(root, false)).removed, 0)
      })))
})
