/**
 * Conversations: a handler talks with the requesting user through its handle on the server's handle socket;
 * the handle works only during its request; the socket is private; a user who disconnects mid-conversation
 * fails the handler's `receive` cleanly while the server goes on serving others.
 */
import { assert, describe, it } from "@effect/vitest"
import { readFileSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Deferred, Effect, Either, Exit, Fiber, Ref, Scope } from "effect"
import { Accounts } from "../../src/services/Accounts.js"
import { handleRequest } from "../../src/services/MessageClient.js"
import { children, client, eventually, nodeHandler, TestServer } from "./MessageFixtures.js"

/** Handler-side helper: one request on the handle socket, like `upm send` / `upm receive` do. */
const HANDLE = String.raw`
const net = require("node:net")
const talk = (req, op, message) => new Promise((resolve) => {
  const s = net.connect(req.header.handleSocket)
  const b = Buffer.from(JSON.stringify({ handle: req.header.handle, op, message })); const h = Buffer.alloc(4); h.writeUInt32LE(b.length)
  s.write(Buffer.concat([h, b]))
  let buf = Buffer.alloc(0)
  s.on("data", (c) => { buf = Buffer.concat([buf, c]); if (buf.length >= 4 && buf.length >= 4 + buf.readUInt32LE(0)) { resolve(JSON.parse(buf.subarray(4, 4 + buf.readUInt32LE(0)))); s.destroy() } })
  s.on("error", (e) => resolve({ ok: false, error: String(e) }))
})
`

const handlers = {
  chat: nodeHandler(HANDLE + `onRequest(async (req) => {
    await talk(req, "send", "hello " + req.header.user)
    const a = await talk(req, "receive", "your favourite colour?")
    return reply(req, "ok", { answer: a.answer, handle: req.header.handle, socket: req.header.handleSocket })
  })`, { timeout: 20_000 }),
  patient: nodeHandler(HANDLE + `onRequest(async (req) => {
    const a = await talk(req, "receive", "wait for me")
    require("node:fs").writeFileSync(req.payload.data, JSON.stringify(a))
    return reply(req, "ok", a)
  })`, { timeout: 20_000, anonymous: true }),
  quick: nodeHandler(`onRequest((req) => reply(req, "ok", "quick"))`, { anonymous: true })
}

describe("Conversations", () => {
  it.layer(TestServer({ handlers }), { timeout: 60_000 })("handles", (it) => {
    it.scoped("a handler sends and receives through its handle; the handle dies with the request", () =>
      Effect.gen(function* () {
        yield* Effect.flatMap(Accounts, (a) => a.create("alice", "alice-password", []))
        const shown = yield* Ref.make<Array<string>>([])
        const session = yield* client()
        yield* session.authenticate("alice", "alice-password")
        yield* session.openConversation({
          onSend: (m) => Ref.update(shown, (l) => [...l, m]),
          onReceive: (p) => Effect.as(Ref.update(shown, (l) => [...l, `? ${p}`]), "blue")
        })
        const r = yield* session.expect("chat", null)
        const data = r.payload.data as { answer: string; handle: string; socket: string }
        assert.strictEqual(data.answer, "blue")
        assert.deepStrictEqual(yield* Ref.get(shown), ["hello alice", "? your favourite colour?"])
        // private socket in a private directory
        assert.strictEqual(statSync(data.socket).mode & 0o777, 0o600)
        assert.strictEqual(statSync(join(data.socket, "..")).mode & 0o777, 0o700)
        // the handle expired with its request; a guessed one never worked
        const late = yield* Effect.either(handleRequest(data.socket, { handle: data.handle, op: "send", message: "late" }))
        assert(Either.isLeft(late))
        assert.include(late.left.message, "unknown or expired handle")
        const guessed = yield* Effect.either(handleRequest(data.socket, { handle: "x".repeat(43), op: "receive", message: "" }))
        assert(Either.isLeft(guessed))
        assert.strictEqual((yield* Ref.get(shown)).length, 2)
      }))

    it.scoped("a client that disconnects mid-conversation: the handler's receive fails, nothing leaks, others are served", () =>
      Effect.gen(function* () {
        const outcome = join(tmpdir(), `upm-conv-${process.pid}-${Date.now()}.json`)
        const asked = yield* Deferred.make<void>()
        const scope = yield* Scope.make()
        const leaving = yield* client().pipe(Scope.extend(scope))
        yield* leaving.openConversation({
          onSend: () => Effect.void,
          onReceive: () => Effect.zipRight(Deferred.succeed(asked, undefined), Effect.never)
        })
        const pending = yield* leaving.request("patient", outcome).pipe(Effect.either, Effect.fork)
        yield* Deferred.await(asked)
        yield* Scope.close(scope, Exit.void) // the user goes away while asked
        const result = yield* pending.await
        assert(Exit.isSuccess(result) && Either.isLeft(result.value))
        yield* eventually(() => {
          try {
            return readFileSync(outcome, "utf8").length > 0
          } catch {
            return false
          }
        }, "handler saw the end of the conversation")
        const seen = JSON.parse(readFileSync(outcome, "utf8")) as { ok: boolean; error: string }
        assert.deepStrictEqual(seen, { ok: false, error: "the user disconnected" })
        const other = yield* client()
        assert.strictEqual((yield* other.expect("quick", null)).payload.data, "quick")
        yield* eventually(() => children().live === 0, "the handler process gone")
      }))
  })

  it.layer(TestServer({ handlers, messages: { maxInFlight: 2 } }), { timeout: 60_000 })("limits", (it) => {
    it.scoped("a session flooding past its in-flight limit gets busy answers, and still its conversation answers", () =>
      Effect.gen(function* () {
        const outcome = join(tmpdir(), `upm-conv2-${process.pid}-${Date.now()}.json`)
        const session = yield* client()
        const asked = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        yield* session.openConversation({
          onSend: () => Effect.void,
          onReceive: () => Effect.zipRight(Deferred.succeed(asked, undefined), Effect.as(Deferred.await(release), "done"))
        })
        const patient = yield* session.request("patient", outcome).pipe(Effect.fork)
        yield* Deferred.await(asked)
        const flood = yield* Effect.forEach(Array.from({ length: 6 }, () => null), () => session.request("quick", null), { concurrency: "unbounded" })
        const statuses = flood.map((r) => r.header.status)
        assert.isAtLeast(statuses.filter((s) => s === "busy").length, 1)
        assert.isAtLeast(statuses.filter((s) => s === "ok").length, 1)
        yield* Deferred.succeed(release, undefined)
        const answered = yield* Fiber.join(patient)
        assert.deepStrictEqual(answered.payload.data, { ok: true, answer: "done" })
      }))
  })
})
