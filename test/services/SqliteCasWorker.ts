/**
 * A separate process for SqliteStore.test.ts: advances one ref `count` times by compare-and-set on the SQLite file
 * given, each new value a blob naming the previous one, retrying when another process moved the ref first.
 *
 *   node --import tsx test/services/SqliteCasWorker.ts <file> <ref> <worker id> <count> <dir>
 *
 * Once its store is open it creates `<dir>/ready-<id>` and waits for `<dir>/go`, so the workers start together.
 */
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Effect, Layer, Option, Schedule, Schema } from "effect"
import { existsSync, writeFileSync } from "node:fs"
import { hashOf } from "../../src/domain/GitObject.js"
import { ObjectStore, RefName } from "../../src/services/ObjectStore.js"
import { layerSqlite } from "../../src/services/SqliteStore.js"

const [file, refName, id, count, dir] = process.argv.slice(2)
const name = Schema.decodeSync(RefName)(refName ?? "")

const advance = (i: number) =>
  Effect.gen(function* () {
    const store = yield* ObjectStore
    const current = yield* store.readRef(name)
    const body = new TextEncoder().encode(`${Option.getOrElse(current, () => "none")}\n${id} ${i}\n`)
    const next = yield* store.put("blob", body)
    if (next !== hashOf("blob", body)) return yield* Effect.dieMessage("put returned another hash")
    yield* store.setRef(name, current, next)
  }).pipe(Effect.retry({ while: (e) => e._tag === "RefConflict" }))

const waitForGo = Effect.sync(() => existsSync(`${dir}/go`)).pipe(
  Effect.repeat({ schedule: Schedule.spaced("5 millis"), until: (go) => go })
)

Effect.gen(function* () {
  yield* ObjectStore
  writeFileSync(`${dir}/ready-${id}`, "")
  yield* waitForGo
  yield* Effect.forEach(Array.from({ length: Number(count) }, (_, i) => i), advance, { discard: true })
}).pipe(
  Effect.provide(layerSqlite(file ?? "").pipe(Layer.provide(NodeContext.layer))),
  NodeRuntime.runMain
)
