/**
 * The example maintainer handlers (examples/), each end to end through the real server: a publisher opens a
 * message session and its conversation, pushes a release over the sync protocol naming that conversation
 * (`attach <token>`), the server asks the example handler, which talks with the publisher through the real
 * `upm send` / `upm receive` (bin/upm.js, built by the suite's global setup).
 */
import { assert, describe, it } from "@effect/vitest"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { Context, Effect, Layer, Option, Ref } from "effect"
import { PackageName } from "../../src/domain/Package.js"
import * as Listener from "../../src/services/Listener.js"
import { layerMemory, ObjectStore } from "../../src/services/ObjectStore.js"
import { ProposalQueue } from "../../src/services/Queue.js"
import { Registry } from "../../src/services/Registry.js"
import * as SyncClient from "../../src/services/SyncClient.js"
import { client, seedRelease, TestServer } from "./MessageFixtures.js"

const ROOT = resolve(import.meta.dirname, "../..")
const UPM_BIN = `${process.execPath} ${join(ROOT, "bin/upm.js")}`
const env = { UPM_BIN }
const example = (file: string) => join(ROOT, "examples", file)

/**
 * Publishes `name@version` as a user would: a message session with a conversation (answers from `answers`,
 * lines shown collected), then a sync push attached to it. Returns the push result (or its error) and the lines.
 */
const publish = (name: string, version: string, answers: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const shown = yield* Ref.make<Array<string>>([])
    const asked = yield* Ref.make(0)
    const session = yield* client()
    const token = yield* session.openConversation({
      onSend: (line) => Ref.update(shown, (l) => [...l, line]),
      onReceive: (prompt) =>
        Ref.getAndUpdate(asked, (n) => n + 1).pipe(
          Effect.tap(() => Ref.update(shown, (l) => [...l, `? ${prompt}`])),
          Effect.map((n) => answers[n] ?? "")
        )
    })
    const { port } = (yield* Listener.Listener).address
    const clientStore = yield* Layer.build(layerMemory).pipe(Effect.map(Context.get(ObjectStore)))
    const release = yield* seedRelease(name, version).pipe(Effect.provideService(ObjectStore, clientStore))
    const sync = yield* SyncClient.make(SyncClient.connectTcp).pipe(Effect.provideService(ObjectStore, clientStore))
    const result = yield* Effect.scoped(Effect.gen(function* () {
      const s = yield* sync.connect({ host: "127.0.0.1", port })
      yield* s.attach(token)
      return yield* s.push(release.tagHash)
    })).pipe(Effect.either)
    return { result, shown: yield* Ref.get(shown), release }
  })

const sealed = (name: string) =>
  Effect.flatMap(Registry, (r) => r.match(PackageName.make(name), undefined)).pipe(Effect.map(Option.map((r) => r.version)))

describe("example handlers", () => {
  it.layer(TestServer({
    sync: true,
    handlers: { propose: { command: "python3", args: [example("moderation-queue.py")], env, timeout: "60s" } }
  }), { timeout: 120_000 })("moderation queue (Python, per-request)", (it) => {
    it.scoped("queues the release, tells the publisher, and a maintainer accepts it", () =>
      Effect.gen(function* () {
        const { release, result, shown } = yield* publish("alice/verycool", "1.0.0", [])
        assert(result._tag === "Right", `push failed: ${JSON.stringify(result)}`)
        assert.strictEqual(result.right.status, "Queued")
        assert.include(result.right.message, "I will put it in the list for proposed packages")
        assert.deepStrictEqual(shown, ["Ah okay, I will put it in the list for proposed packages, the maintainer will accept it maybe"])
        assert.isTrue(Option.isNone(yield* sealed("alice/verycool")))
        const queue = yield* ProposalQueue
        assert.deepStrictEqual((yield* queue.list()).map((q) => q.hash), [release.tagHash])
        yield* queue.accept(release.name, release.version)
        assert.deepStrictEqual(yield* sealed("alice/verycool"), Option.some(release.version))
      }))
  })

  it.layer(TestServer({
    sync: true,
    handlers: { propose: { command: process.execPath, args: [example("trust-all.mjs")], mode: "persistent", env, timeout: "60s" } }
  }), { timeout: 120_000 })("trust-all (Node, persistent)", (it) => {
    it.scoped("accepts and seals at once, saying so", () =>
      Effect.gen(function* () {
        const { result, shown } = yield* publish("bob/anything", "2.0.0", [])
        assert(result._tag === "Right", `push failed: ${JSON.stringify(result)}`)
        assert.strictEqual(result.right.status, "Sealed")
        assert.deepStrictEqual(shown, ["OH YES I TRUST THIS PACKAGE IT IS GOOD"])
        assert.deepStrictEqual(yield* sealed("bob/anything"), Option.some("2.0.0"))
      }))
  })

  const db = join(mkdtempSync(join(tmpdir(), "upm-first-come-")), "names.json")
  it.layer(TestServer({
    sync: true,
    handlers: { propose: { command: "python3", args: [example("first-come.py")], env: { ...env, FIRST_COME_DB: db }, timeout: "90s" } }
  }), { timeout: 180_000 })("first come, with a password (Python, asks through upm send/receive)", (it) => {
    it.scoped("the first publisher sets a password; later ones need it", () =>
      Effect.gen(function* () {
        const first = yield* publish("carol/verycool", "1.0.0", ["sesame-open-1"])
        assert(first.result._tag === "Right", `push failed: ${JSON.stringify(first.result)}`)
        assert.strictEqual(first.result.right.status, "Sealed")
        assert.deepStrictEqual(first.shown, [
          "Okay, nobody ever created a package named carol/verycool, so you are allowed. please setup a password",
          "? password"
        ])
        const wrong = yield* publish("carol/verycool", "1.1.0", ["guess-guess"])
        assert.strictEqual(wrong.result._tag, "Left")
        assert.include(JSON.stringify(wrong.result), "wrong password")
        assert.deepStrictEqual(wrong.shown, [
          "Oh, but somebody already created a package with that name. if you have the password, i'll do it.",
          "? password"
        ])
        assert.deepStrictEqual(yield* sealed("carol/verycool"), Option.some("1.0.0"))
        const right = yield* publish("carol/verycool", "1.2.0", ["sesame-open-1"])
        assert(right.result._tag === "Right")
        assert.strictEqual(right.result.right.status, "Sealed")
        assert.deepStrictEqual(yield* sealed("carol/verycool"), Option.some("1.2.0"))
        rmSync(db, { force: true })
      }))
  })
})
