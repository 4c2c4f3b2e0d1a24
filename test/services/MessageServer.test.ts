/** The message server end to end: a real Listener on 127.0.0.1:0 with the real MessageProtocol layer. */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Option } from "effect"
import * as net from "node:net"
import { Accounts } from "../../src/services/Accounts.js"
import * as Listener from "../../src/services/Listener.js"
import { ProposalPolicy } from "../../src/services/ProposalPolicy.js"
import { ProposalQueue } from "../../src/services/Queue.js"
import { Registry } from "../../src/services/Registry.js"
import { PackageName } from "../../src/domain/Package.js"
import { client, nodeHandler, sealRelease, seedRelease, TestServer } from "./MessageFixtures.js"

const PEER_SECRET = "a-long-shared-secret-for-peer-b"

const handlers = {
  echo: nodeHandler(`onRequest((req) => reply(req, "ok", { you: req.header.user ?? null, data: req.payload.data }))`),
  open: nodeHandler(`onRequest((req) => reply(req, "ok", "anyone may ask"))`, { anonymous: true }),
  notify: nodeHandler(`onRequest((req) => reply(req, "ok", { note: req.payload.data.text }, { commandData: req.payload.data.to }))`, { mode: "persistent" }),
  announce: nodeHandler(`onRequest((req) => ({ header: { status: "ok", command: "sendServers", commandData: "all", id: req.header.id }, payload: { type: "announce", data: req.payload.data } }))`),
  propose: nodeHandler(`onRequest((req) => reply(req, "ok", { decision: "queued", message: "I will put it in the list" }))`)
}

const Server = TestServer({ handlers, messages: { peerSecrets: { "peer-b": PEER_SECRET }, selfRegistration: false } })

const addUsers = Effect.gen(function* () {
  const accounts = yield* Accounts
  yield* accounts.create("alice", "alice-password", ["maintainer"])
  yield* accounts.create("bob", "bob-password", [])
})

describe("MessageServer", () => {
  it.layer(Server, { timeout: 60_000 })("sessions", (it) => {
    it.scoped("the first message authenticates; later ones may omit it", () =>
      Effect.gen(function* () {
        yield* addUsers
        const session = yield* client()
        const anonymous = yield* session.request("echo", 1)
        assert.strictEqual(anonymous.header.status, "unauthorized")
        const wrong = yield* session.request("echo", 1, { authentication: { username: "alice", password: "nope-nope" } })
        assert.strictEqual(wrong.header.status, "unauthorized")
        assert.include(JSON.stringify(wrong.payload.data), "wrong username or password")
        const first = yield* session.request("echo", 2, { authentication: { username: "alice", password: "alice-password" } })
        assert.strictEqual(first.header.status, "ok")
        assert.deepStrictEqual(first.payload.data, { you: "alice", data: 2 })
        const later = yield* session.request("echo", 3)
        assert.deepStrictEqual(later.payload.data, { you: "alice", data: 3 })
        // once authenticated, the block is not checked again (seed 001): bogus data is ignored
        const bogus = yield* session.request("echo", 4, { authentication: { username: "x", password: "y" } })
        assert.deepStrictEqual(bogus.payload.data, { you: "alice", data: 4 })
        const me = yield* session.expect("authenticate", null)
        assert.deepStrictEqual(me.payload.data, { username: "alice", roles: ["maintainer"] })
        yield* session.expect("logout", null)
        assert.strictEqual((yield* session.request("echo", 5)).header.status, "unauthorized")
        // anonymous types stay open
        assert.strictEqual((yield* session.request("open", null)).header.status, "ok")
      }))

    it.scoped("unknown types get a clear answer", () =>
      Effect.gen(function* () {
        const session = yield* client()
        yield* session.authenticate("bob", "bob-password")
        const r = yield* session.request("frobnicate", {})
        assert.strictEqual(r.header.status, "no-handler")
        assert.deepStrictEqual(r.payload.data, { error: "no handler for type frobnicate" })
      }))

    it.scoped("a malformed message is answered with the wrong fields, and the session goes on", () =>
      Effect.gen(function* () {
        const { port } = (yield* Listener.Listener).address
        const frames: Array<unknown> = []
        const done = yield* Deferred.make<void>()
        const socket = net.connect(port, "127.0.0.1")
        let buf = Buffer.alloc(0)
        socket.on("data", (chunk) => {
          buf = Buffer.concat([buf, chunk])
          while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32LE(0)) {
            frames.push(JSON.parse(buf.subarray(4, 4 + buf.readUInt32LE(0)).toString()))
            buf = buf.subarray(4 + buf.readUInt32LE(0))
            if (frames.length === 2) Deferred.unsafeDone(done, Effect.void)
          }
        })
        const send = (obj: unknown) => {
          const b = Buffer.from(JSON.stringify(obj))
          const h = Buffer.alloc(4)
          h.writeUInt32LE(b.length)
          socket.write(Buffer.concat([h, b]))
        }
        send({ header: { scope: "nowhere" }, payload: { type: 42 } })
        send({ header: { scope: "client", id: 7 }, payload: { type: "resolve", data: "alice/nothing" } })
        yield* Deferred.await(done)
        socket.destroy()
        const [bad, good] = frames as Array<{ header: { status: string; id?: number }; payload: { data: { issues?: Array<{ path: string }> } } }>
        assert.strictEqual(bad?.header.status, "bad-request")
        assert.deepStrictEqual(bad?.payload.data.issues?.map((i) => i.path).sort(), ["header.scope", "payload.type"])
        assert.strictEqual(good?.header.id, 7)
        assert.strictEqual(good?.header.status, "not-found")
      }))

    it.scoped("resolve: owner/name with a range or seed-000 style, default highest sealed match", () =>
      Effect.gen(function* () {
        yield* sealRelease("carol/tool", "1.0.0")
        yield* sealRelease("carol/tool", "3.2.0")
        yield* sealRelease("carol/tool", "3.4.1")
        yield* sealRelease("carol/tool", "4.0.0")
        const session = yield* client()
        const gt = yield* session.expect("resolve", "carol/tool>3.1 <4")
        assert.strictEqual((gt.payload.data as { version: string }).version, "3.4.1")
        const at = yield* session.expect("resolve", { identifier: "carol/tool@^1" })
        assert.strictEqual((at.payload.data as { version: string }).version, "1.0.0")
        const newest = yield* session.expect("resolve", "carol/tool")
        assert.strictEqual((newest.payload.data as { version: string }).version, "4.0.0")
        assert.strictEqual((yield* session.request("resolve", "carol/tool@^9")).header.status, "not-found")
        const bad = yield* session.request("resolve", "not an identifier")
        assert.strictEqual(bad.header.status, "bad-request")
        assert.strictEqual((yield* session.request("resolve", { nope: 1 })).header.status, "bad-request")
      }))

    it.scoped("server scope only for configured peers that prove it", () =>
      Effect.gen(function* () {
        const stranger = yield* client()
        const announcement = { name: "carol/tool", version: "1.0.0", hash: "a".repeat(40) }
        assert.strictEqual((yield* stranger.request("sync", announcement, { scope: "server" })).header.status, "unauthorized")
        const liar = yield* client()
        const lie = yield* liar.request("sync", announcement, { scope: "server", authentication: { username: "peer-b", password: "guessed-secret-xxxxxxxx" } })
        assert.strictEqual(lie.header.status, "unauthorized")
        const peer = yield* client()
        const ok = yield* peer.request("sync", announcement, { scope: "server", authentication: { username: "peer-b", password: PEER_SECRET } })
        assert.strictEqual(ok.header.status, "accepted")
        // a user account cannot send server-scope types
        const user = yield* client()
        yield* user.authenticate("bob", "bob-password")
        assert.strictEqual((yield* user.request("sync", announcement)).header.status, "unauthorized")
      }))

    it.scoped("registration is closed unless a policy opens it; change-password works", () =>
      Effect.gen(function* () {
        const session = yield* client()
        const closed = yield* session.request("register", { username: "mallory", password: "mallory-pass" })
        assert.strictEqual(closed.header.status, "forbidden")
        const dave = yield* Effect.flatMap(Accounts, (a) => a.create("dave", "dave-password", []))
        assert.strictEqual(dave.username, "dave")
        const s = yield* client()
        yield* s.authenticate("dave", "dave-password")
        const bad = yield* s.request("change-password", { oldPassword: "wrong-one", newPassword: "dave-password-2" })
        assert.strictEqual(bad.header.status, "unauthorized")
        const malformed = yield* s.request("change-password", { old: "x" })
        assert.strictEqual(malformed.header.status, "bad-request")
        assert.include(JSON.stringify(malformed.payload.data), "payload.data.oldPassword")
        yield* s.expect("change-password", { oldPassword: "dave-password", newPassword: "dave-password-2" })
        const again = yield* client()
        yield* again.authenticate("dave", "dave-password-2")
      }))

    it.scoped("sendClients to named users; sendServers acknowledged with deliveries", () =>
      Effect.gen(function* () {
        const got = yield* Deferred.make<unknown>()
        const bob = yield* client({ onMessage: (m) => Deferred.succeed(got, m.payload.data).pipe(Effect.asVoid) })
        yield* bob.authenticate("bob", "bob-password")
        const alice = yield* client()
        yield* alice.authenticate("alice", "alice-password")
        const ack = yield* alice.expect("notify", { to: ["bob"], text: "hi bob" })
        assert.deepStrictEqual(ack.payload.data, { routed: "clients", delivered: 1 })
        assert.deepStrictEqual(yield* Deferred.await(got), { note: "hi bob" })
        const self = yield* alice.expect("notify", { to: ["alice"], text: "me" })
        assert.deepStrictEqual(self.payload.data, { note: "me" })
        const servers = yield* alice.expect("announce", { x: 1 })
        assert.deepStrictEqual(servers.payload.data, { routed: "servers", deliveries: [] })
      }))

    it.scoped("propose through the handler queues; maintainers accept from the queue", () =>
      Effect.gen(function* () {
        const release = yield* seedRelease("erin/lib", "1.0.0")
        const decision = yield* Effect.flatMap(ProposalPolicy, (p) => p.propose(release, undefined))
        assert.deepStrictEqual(decision, { _tag: "Queued", message: "I will put it in the list" })
        // what the push flow does with a queued decision
        yield* Effect.flatMap(ProposalQueue, (q) => q.enqueue(release))
        const registry = yield* Registry
        assert.isTrue(Option.isNone(yield* registry.match(PackageName.make("erin/lib"), undefined)))
        const bob = yield* client()
        yield* bob.authenticate("bob", "bob-password")
        assert.strictEqual((yield* bob.request("queue-list", null)).header.status, "forbidden")
        const alice = yield* client()
        yield* alice.authenticate("alice", "alice-password")
        const list = yield* alice.expect("queue-list", null)
        assert.deepStrictEqual(list.payload.data, [{ name: "erin/lib", version: "1.0.0", hash: release.tagHash }])
        yield* alice.expect("queue-accept", { name: "erin/lib", version: "1.0.0" })
        const sealed = yield* registry.match(PackageName.make("erin/lib"), undefined)
        assert.strictEqual(Option.getOrThrow(sealed).hash, release.tagHash)
        assert.deepStrictEqual((yield* alice.expect("queue-list", null)).payload.data, [])
        assert.strictEqual((yield* alice.request("queue-accept", { name: "erin/lib", version: "1.0.0" })).header.status, "not-found")
        // reject
        const second = yield* seedRelease("erin/lib", "2.0.0")
        yield* Effect.flatMap(ProposalQueue, (q) => q.enqueue(second))
        yield* alice.expect("queue-reject", { name: "erin/lib", version: "2.0.0", reason: "no" })
        assert.isTrue(Option.isNone(yield* registry.match(PackageName.make("erin/lib"), "^2" as never)))
      }))

    it.scoped("a direct propose message explains how proposing works", () =>
      Effect.gen(function* () {
        const session = yield* client()
        const r = yield* session.request("propose", {})
        assert.strictEqual(r.header.status, "bad-request")
        assert.include(JSON.stringify(r.payload.data), "attach <token>")
      }))
  })

  it.layer(TestServer({ messages: { selfRegistration: true } }), { timeout: 60_000 })("self-registration", (it) => {
    it.scoped("open registration creates an account that can log in", () =>
      Effect.gen(function* () {
        const session = yield* client()
        yield* session.expect("register", { username: "newbie", password: "newbie-password" })
        const dup = yield* session.request("register", { username: "newbie", password: "other-password" })
        assert.strictEqual(dup.header.status, "bad-request")
        const again = yield* client()
        yield* again.authenticate("newbie", "newbie-password")
      }))
  })

  it.layer(TestServer({ handlers: { register: nodeHandler(`onRequest((req) => reply(req, req.payload.data.username.startsWith("ok") ? "ok" : "refused", "policy"))`) } }), { timeout: 60_000 })("registration handler", (it) => {
    it.scoped("a register handler decides who may sign up", () =>
      Effect.gen(function* () {
        const session = yield* client()
        yield* session.expect("register", { username: "ok-user", password: "ok-user-password" })
        assert.strictEqual((yield* session.request("register", { username: "no-user", password: "no-user-password" })).header.status, "forbidden")
      }))
  })
})
