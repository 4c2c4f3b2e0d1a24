/**
 * Handler processes: both modes, and every fault — crash mid-request, hang (also deaf to SIGTERM), garbage,
 * oversized frame, exit at start, never reading, a missing executable, a flood over the concurrency limit —
 * each giving a clear typed error while other requests are served, with no process or descriptor left behind.
 * Real processes with short real timeouts.
 */
import { assert, describe, it } from "@effect/vitest"
import { NodeContext } from "@effect/platform-node"
import { Cause, Deferred, Effect, Either, Exit, Logger, Option, Ref, Schema, Scope } from "effect"
import { HandlerError, Handlers, HandlersConfig, type HandlerSpecInput, make } from "../../src/services/Handlers.js"
import { children, eventually, nodeHandler, openPipesAndSockets } from "./MessageFixtures.js"

const fast = { timeout: 1500, killGrace: 200, restartBase: 50, restartMax: 400 } as const

/** Runs `body` with handlers from `config` in a scope of its own, then checks nothing was left behind. */
const withHandlers = <A, E>(config: Record<string, HandlerSpecInput>, body: (h: Handlers["Type"]) => Effect.Effect<A, E>) =>
  Effect.gen(function* () {
    const fdsBefore = openPipesAndSockets()
    const scope = yield* Scope.make()
    const handlers = yield* make(Schema.decodeSync(HandlersConfig)(config)).pipe(Scope.extend(scope))
    const result = yield* body(handlers).pipe(Effect.exit)
    yield* Scope.close(scope, Exit.void)
    yield* eventually(() => children().live === 0 && children().zombies === 0, "all handler processes gone")
    yield* eventually(() => openPipesAndSockets() <= fdsBefore, "descriptors released")
    return yield* result
  }).pipe(Effect.provide(NodeContext.layer))

const call = (h: Handlers["Type"], type: string, data: unknown = null) =>
  h.call({ type, scope: "client", data, user: "alice" })

const failure = (h: Handlers["Type"], type: string, data: unknown = null) =>
  Effect.flip(call(h, type, data))

describe("Handlers", () => {
  it.live("per-request: one process per message, request frame in, reply frame out", () =>
    withHandlers({
      echo: nodeHandler(`onRequest((req) => { return reply(req, "ok", { type: process.env.UPM_MESSAGE_TYPE, user: req.header.user, data: req.payload.data, pid: process.pid }) })`, fast)
    }, (h) =>
      Effect.gen(function* () {
        const [a, b] = yield* Effect.all([call(h, "echo", 1), call(h, "echo", 2)], { concurrency: 2 })
        assert.strictEqual(a.header.status, "ok")
        const da = a.payload.data as { type: string; user: string; data: number; pid: number }
        const db = b.payload.data as { pid: number; data: number }
        assert.deepStrictEqual([da.type, da.user, da.data, db.data], ["echo", "alice", 1, 2])
        assert.notStrictEqual(da.pid, db.pid)
      })))

  it.live("persistent: one process, many concurrent requests correlated by id", () =>
    withHandlers({
      slow: nodeHandler(`onRequest((req) => new Promise((r) => setTimeout(() => r(reply(req, "ok", { n: req.payload.data, pid: process.pid })), 50 - req.payload.data)))`, { ...fast, mode: "persistent", concurrency: 20 })
    }, (h) =>
      Effect.gen(function* () {
        const replies = yield* Effect.forEach(Array.from({ length: 20 }, (_, i) => i), (i) => call(h, "slow", i), { concurrency: 20 })
        const data = replies.map((r) => r.payload.data as { n: number; pid: number })
        assert.deepStrictEqual(data.map((d) => d.n), Array.from({ length: 20 }, (_, i) => i))
        assert.strictEqual(new Set(data.map((d) => d.pid)).size, 1)
      })))

  it.live("unknown type: no handler for type X", () =>
    withHandlers({}, (h) =>
      Effect.gen(function* () {
        const e = yield* failure(h, "nope")
        assert.strictEqual(e.reason, "NoHandler")
        assert.strictEqual(e.detail, "no handler for type nope")
      })))

  it.live("per-request faults: crash mid-request, exit at start, garbage, oversized frame, missing executable", () =>
    withHandlers({
      crash: nodeHandler(`onRequest(() => { process.stdout.write(Buffer.from([50, 0])); process.exit(3) })`, fast),
      early: nodeHandler(`process.exit(1)`, fast),
      garbage: nodeHandler(`onRequest(() => { const b = Buffer.from("this is not json"); const h = Buffer.alloc(4); h.writeUInt32LE(b.length); process.stdout.write(Buffer.concat([h, b])) })`, fast),
      wrongShape: nodeHandler(`onRequest((req) => ({ header: { status: "ok", command: "sendEverywhere" }, payload: { type: "x", data: 1 } }))`, fast),
      huge: nodeHandler(`onRequest((req) => reply(req, "ok", "x".repeat(5000)))`, { ...fast, maxFrame: 1024 }),
      missing: { command: "/nonexistent/handler-binary", ...fast },
      fine: nodeHandler(`onRequest((req) => reply(req, "ok", "still here"))`, fast)
    }, (h) =>
      Effect.gen(function* () {
        const [crash, early, garbage, wrongShape, huge, missing, fine] = yield* Effect.all([
          failure(h, "crash"), failure(h, "early"), failure(h, "garbage"), failure(h, "wrongShape"), failure(h, "huge"),
          failure(h, "missing"), call(h, "fine")
        ], { concurrency: "unbounded" })
        assert.strictEqual(crash.reason, "Garbage") // died inside a frame
        assert.include(crash.detail, "stdout ended inside a frame")
        assert.strictEqual(early.reason, "Exited")
        assert.include(early.detail, "exited with code 1 without replying")
        assert.strictEqual(garbage.reason, "Garbage")
        assert.include(garbage.detail, "not JSON")
        assert.strictEqual(wrongShape.reason, "Garbage")
        assert.include(wrongShape.detail, "header.command")
        assert.strictEqual(huge.reason, "TooLarge")
        assert.strictEqual(missing.reason, "Spawn")
        assert.strictEqual(fine.payload.data, "still here")
      })))

  it.live("per-request hangs and deaf processes are killed at the timeout (SIGTERM, then SIGKILL)", () =>
    withHandlers({
      hang: nodeHandler(`onRequest(() => new Promise(() => {})); setInterval(() => {}, 1000)`, { ...fast, timeout: 400 }),
      deaf: nodeHandler(`process.on("SIGTERM", () => {}); setInterval(() => {}, 1000)`, { ...fast, timeout: 400 }),
      deafReader: nodeHandler(`setInterval(() => {}, 1000)`, { ...fast, timeout: 400 })
    }, (h) =>
      Effect.gen(function* () {
        const started = Date.now()
        const [hang, deaf, deafReader] = yield* Effect.all([failure(h, "hang"), failure(h, "deaf"), failure(h, "deafReader", "x".repeat(200_000))], { concurrency: 3 })
        assert.strictEqual(hang.reason, "Timeout")
        assert.strictEqual(deaf.reason, "Timeout")
        assert.strictEqual(deafReader.reason, "Timeout")
        assert.include(hang.detail, "killed")
        assert.isBelow(Date.now() - started, 3000)
        assert.strictEqual(children().live, 0)
      })))

  it.live("persistent: a crash mid-request fails it clearly; the handler is restarted", () =>
    withHandlers({
      flaky: nodeHandler(`onRequest((req) => req.payload.data === "die" ? process.exit(7) : reply(req, "ok", process.pid))`, { ...fast, mode: "persistent" })
    }, (h) =>
      Effect.gen(function* () {
        const before = (yield* call(h, "flaky", "hi")).payload.data
        const e = yield* failure(h, "flaky", "die")
        assert.strictEqual(e.reason, "Exited")
        assert.include(e.detail, "exited with code 7")
        const after = (yield* call(h, "flaky", "hi")).payload.data
        assert.notStrictEqual(before, after)
      })))

  it.live("persistent: a hang past the timeout restarts it; garbage restarts it; others keep being served", () =>
    withHandlers({
      moody: nodeHandler(`onRequest((req) => {
        if (req.payload.data === "hang") return new Promise(() => {})
        if (req.payload.data === "garbage") { process.stdout.write(Buffer.from([3,0,0,0,1,2,3])); return }
        return reply(req, "ok", process.pid)
      })`, { ...fast, mode: "persistent", timeout: 1000 }),
      steady: nodeHandler(`onRequest((req) => reply(req, "ok", "steady"))`, { ...fast, mode: "persistent" })
    }, (h) =>
      Effect.gen(function* () {
        const first = (yield* call(h, "moody", "hi")).payload.data
        const [hung, steady] = yield* Effect.all([failure(h, "moody", "hang"), call(h, "steady")], { concurrency: 2 })
        assert.strictEqual(hung.reason, "Timeout")
        assert.strictEqual(steady.payload.data, "steady")
        const second = (yield* call(h, "moody", "hi")).payload.data
        assert.notStrictEqual(first, second)
        const garbage = yield* failure(h, "moody", "garbage")
        assert.strictEqual(garbage.reason, "Garbage")
        const third = (yield* call(h, "moody", "hi")).payload.data
        assert.notStrictEqual(second, third)
      })))

  it.live("persistent: a handler that exits at start makes requests fail as unavailable, with the reason", () =>
    withHandlers({ dead: nodeHandler(`console.error("missing config file"); process.exit(2)`, { ...fast, mode: "persistent", timeout: 600 }) }, (h) =>
      Effect.gen(function* () {
        // A request either catches the process in its short life (Exited) or waits for it in vain (Unavailable);
        // once it has exited (at least once: slow machines start processes slowly), both say why.
        let said = 0
        for (let i = 0; i < 10 && said < 2; i++) {
          const e = yield* failure(h, "dead")
          assert.include(["Exited", "Unavailable"], e.reason)
          if (e.detail.includes("exited with code 2")) said++
          else assert.include(e.detail, "it has not started yet")
        }
        assert.strictEqual(said, 2)
      })))

  it.live("a flood over the concurrency limit: some wait, the rest are refused as busy, none hang", () =>
    withHandlers({
      gate: nodeHandler(`onRequest((req) => new Promise((r) => setTimeout(() => r(reply(req, "ok", req.payload.data)), 300)))`, { ...fast, mode: "persistent", concurrency: 2, queue: 2 })
    }, (h) =>
      Effect.gen(function* () {
        const results = yield* Effect.forEach(Array.from({ length: 10 }, (_, i) => i), (i) => Effect.either(call(h, "gate", i)), { concurrency: "unbounded" })
        const ok = results.filter(Either.isRight)
        const busy = results.filter(Either.isLeft).map((e) => e.left)
        assert.strictEqual(ok.length, 4)
        assert.strictEqual(busy.length, 6)
        for (const e of busy) {
          assert.instanceOf(e, HandlerError)
          assert.strictEqual(e.reason, "Busy")
        }
        // capacity is back afterwards
        assert.strictEqual((yield* call(h, "gate", 99)).payload.data, 99)
      })))

  it.live("start (the fast lane): sent at once and answered through the callback; None when it cannot be", () =>
    withHandlers({
      echo: nodeHandler(`onRequest((req) => req.payload.data === "die" ? process.exit(5) : reply(req, "ok", req.payload.data))`, { ...fast, mode: "persistent", concurrency: 2, queue: 0 }),
      slow: nodeHandler(`onRequest((req) => new Promise((r) => setTimeout(() => r(reply(req, "ok", req.payload.data)), 200)))`, { ...fast, mode: "persistent", concurrency: 1, queue: 0 }),
      once: nodeHandler(`onRequest((req) => reply(req, "ok", 1))`, fast)
    }, (h) =>
      Effect.gen(function* () {
        const startAndWait = (type: string, data: unknown) =>
          Effect.gen(function* () {
            const result = yield* Deferred.make<Exit.Exit<unknown, HandlerError>>()
            const cancel = yield* h.start({ type, scope: "client", data }, (exit) => {
              Deferred.unsafeDone(result, Exit.succeed(Exit.map(exit, (r) => r.payload.data)))
            })
            return { cancel, deferred: result, result: Deferred.await(result) }
          })
        yield* call(h, "echo", "warm") // the process is up
        const one = yield* startAndWait("echo", 42)
        assert.isTrue(Option.isSome(one.cancel))
        assert.deepStrictEqual(yield* one.result, Exit.succeed(42))
        // a crash mid-request reaches the callback as a typed error
        const dying = yield* startAndWait("echo", "die")
        const died = yield* dying.result
        assert.isTrue(Exit.isFailure(died))
        if (Exit.isFailure(died)) {
          const e = Cause.failureOption(died.cause)
          assert.isTrue(Option.isSome(e) && e.value.reason === "Exited" && e.value.detail.includes("exited with code 5"))
        }
        // per-request handlers and unknown types are not on the fast lane
        assert.isTrue(Option.isNone((yield* startAndWait("once", 1)).cancel))
        assert.isTrue(Option.isNone((yield* startAndWait("nope", 1)).cancel))
        // the slot limit: a second start while one runs is refused (None); cancelling gives the slot back
        yield* call(h, "slow", "warm")
        const first = yield* startAndWait("slow", 1)
        assert.isTrue(Option.isSome(first.cancel))
        assert.isTrue(Option.isNone((yield* startAndWait("slow", 2)).cancel))
        if (Option.isSome(first.cancel)) first.cancel.value()
        const third = yield* startAndWait("slow", 3)
        assert.isTrue(Option.isSome(third.cancel))
        assert.deepStrictEqual(yield* third.result, Exit.succeed(3))
        // the cancelled request never calls back (its late reply, in before the third's, was ignored)
        assert.isFalse(yield* Deferred.isDone(first.deferred))
      })))

  it.live("stderr goes to the server log with the handler's name", () =>
    Effect.gen(function* () {
      const lines = yield* Ref.make<Array<string>>([])
      const logger = Logger.make(({ annotations, message }) => {
        const handler = [...annotations].find(([k]) => k === "handler")?.[1]
        Effect.runSync(Ref.update(lines, (l) => [...l, `${String(handler)}: ${String(message)}`]))
      })
      yield* withHandlers({ noisy: nodeHandler(`onRequest((req) => { console.error("looking at " + req.payload.data); return reply(req, "ok", 1) })`, fast) }, (h) =>
        call(h, "noisy", "left-pad"))
        .pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
      assert.include(yield* Ref.get(lines), "noisy: looking at left-pad")
    }))

  it.live("stopping the server kills persistent handlers, also those deaf to SIGTERM", () =>
    withHandlers({
      deaf: nodeHandler(`process.on("SIGTERM", () => {}); onRequest((req) => reply(req, "ok", 1))`, { ...fast, mode: "persistent" })
    }, (h) =>
      Effect.gen(function* () {
        yield* call(h, "deaf")
        assert.strictEqual(children().live, 1)
      })))
})
