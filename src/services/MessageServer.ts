/**
 * MessageServer: the message protocol's sessions (seed 001), the real `MessageProtocol` the Listener hands every
 * connection to that does not start with `lit?`.
 *
 * A session reads `ClientRequest` frames and answers each with a `ServerResponse` echoing its `header.id`.
 * - The first message that carries `header.authentication` authenticates the session (later ones may omit it;
 *   once authenticated it is not checked again, as the seed says). `scope: "server"` messages authenticate as a
 *   configured peer (`authentication.username` = peer name, `password` = its shared secret) — the seed waives
 *   authentication for them; we don't (docs/protocol.md, "Message protocol").
 * - A session that never authenticates is anonymous: it may `resolve`, `register`, open a conversation and answer
 *   it, and send types whose handler says `anonymous: true`. Publishing needs no account (the tag's signature
 *   authorizes it), so a publisher's conversation session can stay anonymous.
 * - Built-ins: `authenticate`, `logout`, `change-password`, `register` (self-registration: allowed by the
 *   `register` handler, or by `selfRegistration` in the config; otherwise `upm user add` on the server),
 *   `conversation-open`, `conversation-answer`, `resolve`, `queue-list` / `queue-accept` / `queue-reject`
 *   (maintainers), `sync` (peers). Anything else goes to its handler, or gets "no handler for type X".
 * - Requests run concurrently (so a `conversation-answer` gets through while a request waits for it), at most
 *   `maxInFlight` per session; beyond that the request is answered `busy` at once.
 * - A handler's reply is routed: `sendClients` to the requester (default), to the named users' sessions, or to
 *   all; `sendServers` to the named peers or all (through PeerLink). The requester always gets an answer: the
 *   reply itself, or an acknowledgement saying where it went.
 */
import type { CommandExecutor, FileSystem, Path } from "@effect/platform"
import { Cause, type Chunk, Duration, Effect, Either, Exit, FiberSet, HashMap, Layer, Mailbox, Option, Ref, Schema, Stream } from "effect"
import * as Codec from "../protocol/MessageCodec.js"
import { PackageName, releaseTagName, Version } from "../domain/Package.js"
import { type Account, Accounts, type AccountsOptions, Role } from "./Accounts.js"
import * as AccountsModule from "./Accounts.js"
import type { ConnectionError, ConnectionInfo } from "./Connection.js"
import { MessageProtocol } from "./Connection.js"
import { ConversationHub, type ConversationOptions, layerConversations, layerHub } from "./Conversations.js"
import { type Cancel, type HandlerError, Handlers, HandlersConfig, type Invocation } from "./Handlers.js"
import * as HandlersModule from "./Handlers.js"
import * as Metrics from "./Metrics.js"
import type { ObjectStore } from "./ObjectStore.js"
import {
  Announcement, layerPeerLinkLog, layerPeerSecrets, layerProposalHandler, layerResolve, layerSyncHandler,
  layerSyncLogAccept, PeerCredentials, PeerLink, ResolvePolicy, SyncPolicy
} from "./Policies.js"
import { type Conversations, ProposalPolicy } from "./ProposalPolicy.js"
import { ProposalQueue } from "./Queue.js"
import * as QueueModule from "./Queue.js"
import type { Registry } from "./Registry.js"
import type { Verifier } from "./Verifier.js"

// ---------------------------------------------------------------------------------------------
// Config: the server config's `messages` section

export const MessagesConfig = Schema.Struct({
  maxFrame: Schema.optionalWith(Schema.Int.pipe(Schema.between(1024, 64 * 1024 * 1024)), { default: () => 1024 * 1024 }),
  maxDepth: Schema.optionalWith(Schema.Int.pipe(Schema.between(2, 256)), { default: () => 32 }),
  /** Requests of one session running at once. */
  maxInFlight: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 1024)), { default: () => 32 }),
  /** Whether anyone may create an account with `register` (when no `register` handler decides). */
  selfRegistration: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  /** Peers allowed to send `scope: "server"` messages: name → shared secret (at least 16 characters). */
  peerSecrets: Schema.optionalWith(
    Schema.Record({ key: Schema.String, value: Schema.String.pipe(Schema.minLength(16)) }),
    { default: () => ({}) }
  ),
  /** Directory of the handle socket (default: a private temporary directory). */
  runtimeDir: Schema.optional(Schema.String),
  /** How long `upm receive` waits for the user's answer. */
  receiveTimeout: Schema.optionalWith(HandlersModule.HandlerDuration, { default: () => Duration.minutes(5) })
})
export type MessagesConfig = typeof MessagesConfig.Type
export type MessagesConfigInput = typeof MessagesConfig.Encoded

export interface SessionOptions {
  readonly limits: Codec.Limits
  readonly maxInFlight: number
  readonly selfRegistration: boolean
}

// ---------------------------------------------------------------------------------------------
// Sessions

interface SessionEntry {
  readonly user: Option.Option<string>
  readonly push: (message: Codec.ServerResponse) => Effect.Effect<void>
}

interface Identity {
  readonly user: Option.Option<Account>
  readonly peer: Option.Option<string>
}

const RegisterData = Schema.Struct({ username: Schema.String, password: Schema.String })
const ChangePasswordData = Schema.Struct({ oldPassword: Schema.String, newPassword: Schema.String })
const ResolveData = Schema.Union(
  Schema.String.pipe(Schema.maxLength(512)),
  Schema.Struct({ identifier: Schema.String.pipe(Schema.maxLength(512)) })
)
const QueueItem = Schema.Struct({ name: PackageName, version: Version, reason: Schema.optional(Schema.String.pipe(Schema.maxLength(4096))) })

const reply = (status: string, type: string, data: unknown, id: Codec.CorrelationId | undefined): Codec.ServerResponse => ({
  header: id === undefined ? { status } : { status, id },
  payload: { type, data }
})

const statusOfHandlerError = (e: HandlerError) =>
  e.reason === "NoHandler" ? "no-handler" : e.reason === "Busy" ? "busy" : e.reason === "Timeout" ? "timeout" : "handler-error"

/** Decodes a request's data with a Schema; errors name the field under `payload.data`. */
const dataOf = <A, I>(schema: Schema.Schema<A, I>, data: unknown) =>
  Schema.decodeUnknown(schema, { errors: "all" })(data).pipe(
    Effect.mapError((e) => ({
      status: "bad-request",
      error: `malformed payload.data: ${Codec.issuesOf(e).map((i) => `${i.path === "" ? "payload.data" : `payload.data.${i.path}`}: ${i.message}`).join("; ")}`
    }))
  )

interface Failure {
  readonly status: string
  readonly error: string
}

/** The types the server answers itself; any other goes to its handler. */
const builtins: ReadonlySet<string> = new Set([
  "authenticate", "logout", "change-password", "register", "conversation-open", "conversation-answer", "resolve",
  "queue-list", "queue-accept", "queue-reject", "sync", "propose"
])

/** Built-ins answered in order on the read loop: cheap, and never to be blocked behind slow requests. */
const inOrder: ReadonlySet<string> = new Set(["authenticate", "logout", "conversation-open", "conversation-answer"])

export const make = (options: SessionOptions) =>
  Effect.gen(function* () {
    const accounts = yield* Accounts
    const handlers = yield* Handlers
    const hub = yield* ConversationHub
    const resolver = yield* ResolvePolicy
    const queue = yield* ProposalQueue
    const sync = yield* SyncPolicy
    const peers = yield* PeerLink
    const peerCredentials = yield* PeerCredentials
    const sessions = yield* Ref.make(HashMap.empty<number, SessionEntry>())
    // Responses are built here from decoded values (statuses and types are bounded by the Schemas they came
    // through), so they are framed without a second Schema pass.
    const encode = (message: Codec.ServerResponse) => Codec.encodeJson(message, options.limits.maxFrame)
    const decodeRequest = Codec.decodeMessage(Codec.ClientRequest, options.limits)

    /** Pushes a frame to every session of the named users (or all authenticated sessions); returns how many. */
    const sendToUsers = (users: "all" | ReadonlyArray<string>, message: Codec.ServerResponse, except: number) =>
      Effect.gen(function* () {
        const targets = [...HashMap.toEntries(yield* Ref.get(sessions))].filter(([id, s]) =>
          id !== except && Option.isSome(s.user) && (users === "all" || users.includes(s.user.value)))
        yield* Effect.forEach(targets, ([, s]) => s.push(message), { discard: true, concurrency: "unbounded" })
        return targets.length
      })

    const serve = (input: Stream.Stream<Uint8Array, ConnectionError>, info: ConnectionInfo) =>
      Stream.unwrapScoped(Effect.gen(function* () {
        const out = yield* Mailbox.make<Uint8Array, ConnectionError>({ capacity: 64 })
        const push = (message: Codec.ServerResponse) =>
          Either.match(encode(message), {
            onRight: (frame) => out.offer(frame),
            onLeft: (e) =>
              // A reply too big to send becomes an error reply, so the client still hears something.
              Either.match(encode(reply("error", message.payload.type, { error: `reply not sent: ${e.message}` }, message.header.id)), {
                onRight: (frame) => out.offer(frame),
                onLeft: () => Effect.succeed(false)
              })
          }).pipe(Effect.asVoid)
        const identity = yield* Ref.make<Identity>({ user: Option.none(), peer: Option.none() })
        const { close: closeConversation, token: conversationToken } = yield* hub.open({ push })
        yield* Effect.acquireRelease(
          Ref.update(sessions, HashMap.set(info.id, { user: Option.none(), push })),
          () => Ref.update(sessions, HashMap.remove(info.id))
        )
        const setUser = (user: Option.Option<Account>) =>
          Ref.update(identity, (i) => ({ ...i, user })).pipe(
            Effect.zipRight(Ref.update(sessions, HashMap.modify(info.id, (s) => ({ ...s, user: Option.map(user, (u) => u.username) }))))
          )
        const log = Effect.annotateLogs({ connection: info.id, remote: info.remoteAddress })

        // -- authentication (runs in order, before the request is dispatched)

        const authenticate = (request: Codec.ClientRequest): Effect.Effect<Option.Option<Failure>> =>
          Effect.gen(function* () {
            const auth = request.header.authentication
            const current = yield* Ref.get(identity)
            if (request.header.scope === "server") {
              if (Option.isSome(current.peer)) return Option.none()
              if (auth === undefined) {
                return Option.some({ status: "unauthorized", error: "scope \"server\" needs header.authentication with a configured peer's name and secret" })
              }
              const ok = yield* peerCredentials.verify(auth.username, auth.password)
              if (!ok) {
                yield* Effect.logWarning(`peer authentication failed for "${auth.username}"`)
                return Option.some({ status: "unauthorized", error: "unknown peer or wrong secret" })
              }
              yield* Ref.update(identity, (i) => ({ ...i, peer: Option.some(auth.username) }))
              return Option.none()
            }
            if (auth === undefined || Option.isSome(current.user)) return Option.none()
            return yield* accounts.authenticate(auth.username, auth.password, info.remoteAddress).pipe(
              Effect.flatMap((account) => Effect.as(setUser(Option.some(account)), Option.none<Failure>())),
              Effect.catchAll((e) =>
                Effect.succeed(Option.some<Failure>({
                  status: e._tag === "AuthError" && e.reason === "Throttled" ? "throttled" : e._tag === "AuthError" ? "unauthorized" : "error",
                  error: e.message
                })))
            )
          })

        // -- the request types

        const needUser = Effect.flatMap(Ref.get(identity), (i) =>
          Option.match(i.user, {
            onNone: () => Effect.fail<Failure>({ status: "unauthorized", error: "authenticate first (header.authentication)" }),
            onSome: Effect.succeed
          }))
        const needRole = (...roles: ReadonlyArray<Role>) =>
          Effect.flatMap(needUser, (user) =>
            user.roles.some((r) => roles.includes(r))
              ? Effect.succeed(user)
              : Effect.fail<Failure>({ status: "forbidden", error: `needs the ${roles.join(" or ")} role` }))
        const needPeer = Effect.flatMap(Ref.get(identity), (i) =>
          Option.match(i.peer, {
            onNone: () => Effect.fail<Failure>({ status: "unauthorized", error: "only configured peers may send this (scope \"server\")" }),
            onSome: Effect.succeed
          }))
        const failWith = (status: string) => (e: { readonly message: string }): Failure => ({ status, error: e.message })

        /** A handler's reply, routed; returns what the requester gets. */
        const route = (request: Codec.ClientRequest, handlerReply: Codec.HandlerReply) =>
          Effect.gen(function* () {
            const { command, commandData, status } = handlerReply.header
            const { type, data } = handlerReply.payload
            const id = request.header.id
            if (command === "sendClients") {
              if (commandData === undefined || commandData === null || commandData === "requester") return reply(status, type, data, id)
              const me = Option.getOrUndefined((yield* Ref.get(identity)).user)?.username
              const delivered = yield* sendToUsers(commandData, reply(status, type, data, undefined), info.id)
              const includesMe = commandData === "all" || (me !== undefined && commandData.includes(me))
              return includesMe ? reply(status, type, data, id) : reply(status, type, { routed: "clients", delivered }, id)
            }
            const deliveries = yield* peers.send(
              commandData === undefined || commandData === null || commandData === "all" || commandData === "requester" ? "all" : commandData,
              { type, status, data }
            )
            return reply(status, type, { routed: "servers", deliveries }, id)
          })

        /** Who may send `request` to its handler: the invocation without its handle, or why not. */
        const invocationOf = (request: Codec.ClientRequest): Effect.Effect<Omit<Invocation, "handle">, Failure> =>
          Effect.flatMap(Ref.get(identity), (who) => {
            const { type, data } = request.payload
            const spec = handlers.spec(type)
            if (Option.isNone(spec)) return Effect.fail<Failure>({ status: "no-handler", error: `no handler for type ${type}` })
            if (request.header.scope === "client" && Option.isNone(who.user) && !spec.value.anonymous) {
              return Effect.fail<Failure>({ status: "unauthorized", error: `authenticate first: type ${type} is not open to anonymous sessions` })
            }
            return Effect.succeed({
              type,
              scope: request.header.scope,
              data,
              user: Option.getOrUndefined(who.user)?.username,
              peer: Option.getOrUndefined(who.peer)
            })
          })

        const viaHandler = (request: Codec.ClientRequest) =>
          Effect.gen(function* () {
            const invocation = yield* invocationOf(request)
            const handlerReply = yield* hub.withHandle(conversationToken, (handle) => handlers.call({ ...invocation, handle })).pipe(
              Effect.mapError((e) => failWith(statusOfHandlerError(e))(e))
            )
            return yield* route(request, handlerReply)
          })

        const respond = (request: Codec.ClientRequest): Effect.Effect<Codec.ServerResponse, Failure> => {
          const { type, data } = request.payload
          const id = request.header.id
          const ok = (result: unknown) => reply("ok", type, result, id)
          switch (type) {
            case "authenticate":
              return Effect.flatMap(Ref.get(identity), (i) =>
                Option.match(i.user, {
                  onNone: () => Effect.fail<Failure>({ status: "unauthorized", error: "header.authentication is missing" }),
                  onSome: (u) => Effect.succeed(ok({ username: u.username, roles: u.roles }))
                }))
            case "logout":
              return Effect.as(setUser(Option.none()), ok({ loggedOut: true }))
            case "change-password":
              return Effect.gen(function* () {
                const user = yield* needUser
                const d = yield* dataOf(ChangePasswordData, data)
                yield* accounts.changePassword(user.username, d.oldPassword, d.newPassword, info.remoteAddress).pipe(
                  Effect.mapError((e) => failWith(e._tag === "AuthError" ? (e.reason === "Throttled" ? "throttled" : "unauthorized") : "error")(e))
                )
                return ok({ changed: true })
              })
            case "register":
              return Effect.gen(function* () {
                const d = yield* dataOf(RegisterData, data)
                if (Option.isSome(handlers.spec("register"))) {
                  const who = yield* Ref.get(identity)
                  const decision = yield* handlers.call({
                    type: "register", scope: "client", data: { username: d.username }, user: Option.getOrUndefined(who.user)?.username
                  }).pipe(Effect.mapError((e) => failWith(statusOfHandlerError(e))(e)))
                  if (!["ok", "accepted"].includes(decision.header.status)) {
                    return yield* Effect.fail<Failure>({ status: "forbidden", error: `registration refused: ${JSON.stringify(decision.payload.data)}` })
                  }
                } else if (!options.selfRegistration) {
                  return yield* Effect.fail<Failure>({ status: "forbidden", error: "registration is closed on this server: ask its operator (upm user add)" })
                }
                const account = yield* accounts.create(d.username, d.password, []).pipe(Effect.mapError(failWith("bad-request")))
                return ok({ username: account.username })
              })
            case "conversation-open":
              return Effect.succeed(ok({ conversation: conversationToken }))
            case "conversation-answer":
              return Effect.gen(function* () {
                const d = yield* dataOf(Codec.ConversationAnswer, data)
                if (d.conversation !== conversationToken) {
                  return yield* Effect.fail<Failure>({ status: "bad-request", error: "payload.data.conversation: not this session's conversation" })
                }
                return ok({ delivered: yield* hub.answer(d.conversation, d.id, d.answer) })
              })
            case "resolve":
              return Effect.gen(function* () {
                const d = yield* dataOf(ResolveData, data)
                const identifier = typeof d === "string" ? d : d.identifier
                const who = yield* Ref.get(identity)
                const found = yield* resolver.resolve(identifier, Option.getOrUndefined(who.user)?.username).pipe(
                  Effect.mapError((e) => failWith(e._tag === "ResolveError" && e.reason === "BadIdentifier" ? "bad-request" : "error")(e))
                )
                return Option.match(found, {
                  onNone: () => reply("not-found", type, { identifier, error: `nothing matches ${identifier}` }, id),
                  onSome: (r) => ok({ name: r.name, version: r.version, hash: r.hash })
                })
              })
            case "queue-list":
              return Effect.gen(function* () {
                yield* needRole("maintainer", "admin")
                const items = yield* queue.list().pipe(Effect.mapError(failWith("error")))
                return ok(items.map((q) => ({ name: q.name, version: q.version, hash: q.hash })))
              })
            case "queue-accept":
              return Effect.gen(function* () {
                const user = yield* needRole("maintainer", "admin")
                const d = yield* dataOf(QueueItem, data)
                const result = yield* queue.accept(d.name, d.version).pipe(
                  Effect.mapError((e) => failWith(e._tag === "QueueError" && e.reason === "NotQueued" ? "not-found" : "error")(e))
                )
                yield* Effect.logInfo(`${user.username} accepted ${releaseTagName(d.name, d.version)}`)
                return ok({ name: d.name, version: d.version, result })
              })
            case "queue-reject":
              return Effect.gen(function* () {
                const user = yield* needRole("maintainer", "admin")
                const d = yield* dataOf(QueueItem, data)
                yield* queue.reject(d.name, d.version, `${d.reason ?? "no reason given"} (by ${user.username})`).pipe(
                  Effect.mapError((e) => failWith(e._tag === "QueueError" && e.reason === "NotQueued" ? "not-found" : "error")(e))
                )
                return ok({ name: d.name, version: d.version, rejected: true })
              })
            case "sync":
              return Effect.gen(function* () {
                const peer = yield* needPeer
                const d = yield* dataOf(Announcement, data)
                yield* Metrics.countAnnouncement("received")
                const decision = yield* sync.announce(peer, d)
                return decision._tag === "Accept"
                  ? reply("accepted", type, { name: d.name, version: d.version }, id)
                  : reply("refused", type, { name: d.name, version: d.version, reason: decision.reason }, id)
              })
            case "propose":
              return Effect.fail({
                status: "bad-request",
                error: "propose happens by pushing a signed release over the sync protocol (upm publish); " +
                  "name this session's conversation with the sync query `attach <token>` to talk with the server's policy"
              })
            default:
              return viaHandler(request)
          }
        }

        // -- the read loop

        const requests = yield* FiberSet.make<void>()
        const answer = (request: Codec.ClientRequest) =>
          respond(request).pipe(
            Effect.catchAll((f) => Effect.succeed(reply(f.status, request.payload.type, { error: f.error }, request.header.id))),
            Effect.flatMap(push)
          )

        // The fast lane: a request for a running persistent handler with a free slot is sent by the read loop
        // itself (Handlers.start), and its reply answered from the callback, with no fiber of its own. What cannot
        // be done synchronously there (routing elsewhere, waiting for room in the output) runs in `requests`.
        const forkRequest = yield* FiberSet.runtime(requests)<never>()
        const started = new Map<number, Cancel>()
        let nextStarted = 0
        const noneStarted = yield* Effect.makeLatch(true)
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            // The session was interrupted: give the handler slots of unanswered requests back.
            for (const cancel of started.values()) cancel()
            started.clear()
          }))
        const pushNow = (message: Codec.ServerResponse) => {
          const frame = encode(message)
          if (Either.isRight(frame) && out.unsafeOffer(frame.right)) return
          if (Option.isSome(out.unsafeSize())) forkRequest(push(message)) // full (or too large): the Effect way
        }
        const deliver = (request: Codec.ClientRequest, result: Exit.Exit<Codec.HandlerReply, HandlerError>) => {
          const type = request.payload.type
          if (Exit.isFailure(result)) {
            const e = Cause.failureOption(result.cause)
            return Option.isSome(e)
              ? pushNow(reply(statusOfHandlerError(e.value), type, { error: e.value.message }, request.header.id))
              : pushNow(reply("error", type, { error: "the handler request was interrupted" }, request.header.id))
          }
          const { command, commandData } = result.value.header
          if (command === "sendClients" && (commandData === undefined || commandData === null || commandData === "requester")) {
            return pushNow(reply(result.value.header.status, result.value.payload.type, result.value.payload.data, request.header.id))
          }
          forkRequest(Effect.flatMap(route(request, result.value), push))
        }
        /** Sends `request` to its handler on the fast lane; false when that is not possible now. */
        const startFast = (request: Codec.ClientRequest, invocation: Omit<Invocation, "handle">) =>
          Effect.flatMap(hub.openHandle(conversationToken), (opened) => {
            const key = nextStarted++
            let done = false
            const onDone = (result: Exit.Exit<Codec.HandlerReply, HandlerError>) => {
              done = true
              if (Option.isSome(opened)) opened.value.close()
              deliver(request, result)
              if (started.delete(key) && started.size === 0) noneStarted.unsafeOpen()
            }
            const handle = Option.getOrUndefined(opened)?.handle
            return Effect.map(handlers.start({ ...invocation, handle }, onDone), Option.match({
              onNone: () => {
                if (Option.isSome(opened)) opened.value.close()
                return false
              },
              onSome: (cancel) => {
                if (!done) {
                  started.set(key, cancel)
                  noneStarted.unsafeClose()
                }
                return true
              }
            }))
          })
        const viaHandlerFast = (request: Codec.ClientRequest) =>
          invocationOf(request).pipe(
            Effect.flatMap((invocation) => startFast(request, invocation)),
            Effect.catchAll((f) => Effect.as(push(reply(f.status, request.payload.type, { error: f.error }, request.header.id)), true))
          )

        const admitAndRun = (request: Codec.ClientRequest) => {
          const type = request.payload.type
          // Cheap built-ins are answered in order, never blocked behind slow requests.
          if (inOrder.has(type)) return answer(request)
          return Effect.flatMap(FiberSet.size(requests), (running) => {
            if (running + started.size >= options.maxInFlight) {
              return push(reply("busy", type, { error: `more than ${options.maxInFlight} requests in flight on this connection` }, request.header.id))
            }
            const slow = FiberSet.run(requests, answer(request))
            return builtins.has(type) ? slow : Effect.flatMap(viaHandlerFast(request), (sent) => (sent ? Effect.void : slow))
          })
        }
        const dispatch = (request: Codec.ClientRequest): Effect.Effect<void> =>
          // Only a message with credentials, or the first of a peer, has anything to authenticate.
          request.header.authentication === undefined && request.header.scope === "client"
            ? admitAndRun(request)
            : Effect.flatMap(authenticate(request), Option.match({
              onSome: (refused) => push(reply(refused.status, request.payload.type, { error: refused.error }, request.header.id)),
              onNone: () => admitAndRun(request)
            }))
        // By type: the built-ins and configured handlers by name, anything else as "other" (bounded labels).
        const countRequest = Metrics.requestCounter("message")
        const onFrame = (body: Uint8Array) =>
          Either.match(decodeRequest(body), {
            onLeft: (e) => push(reply("bad-request", "error", { error: e.message, issues: e.issues }, undefined)),
            onRight: (request) => {
              const type = request.payload.type
              countRequest(builtins.has(type) || inOrder.has(type) || Option.isSome(handlers.spec(type)) ? type : "other")
              return dispatch(request)
            }
          })
        // Frames are cut from each read synchronously (a stream stage per frame costs more than a small request).
        const reader = Codec.frameReader(options.limits.maxFrame)
        const onChunk = (chunk: Chunk.Chunk<Uint8Array>) =>
          Effect.suspend(() => {
            const bodies: Array<Uint8Array> = []
            for (const bytes of chunk) {
              const cut = reader.push(bytes)
              for (const body of cut.frames) bodies.push(body)
              if (cut.error !== undefined) return Effect.forEach(bodies, onFrame, { discard: true }).pipe(Effect.zipRight(Effect.fail(cut.error)))
            }
            return bodies.length === 1 ? onFrame(bodies[0]!) : Effect.forEach(bodies, onFrame, { discard: true })
          })
        const loop = input.pipe(
          Stream.runForEachChunk(onChunk),
          Effect.zipRight(Effect.suspend(() => Option.match(reader.end(), { onNone: () => Effect.void, onSome: Effect.fail }))),
          Effect.catchAll((e) =>
            e._tag === "FrameError"
              ? push(reply("bad-request", "error", { error: e.message }, undefined)).pipe(
                Effect.zipRight(Effect.logDebug(`message session closed: ${e.message}`))
              )
              : Effect.logDebug(`message session input ended: ${e.message}`))
        )
        // When the client has sent everything it can no longer answer a `receive`: end its conversation, answer
        // what is in flight, then end the output.
        const drain = closeConversation.pipe(Effect.zipRight(noneStarted.await), Effect.zipRight(FiberSet.awaitEmpty(requests)))
        yield* loop.pipe(Effect.zipRight(drain), Effect.ensuring(out.end), log, Effect.forkScoped)
        return Mailbox.toStream(out)
      }))

    return MessageProtocol.of({ serve })
  })

/** MessageProtocol over the services it dispatches to. */
export const layer = (options: SessionOptions): Layer.Layer<
  MessageProtocol,
  never,
  Accounts | Handlers | ConversationHub | ResolvePolicy | ProposalQueue | SyncPolicy | PeerLink | PeerCredentials
> => Layer.effect(MessageProtocol, make(options))

// ---------------------------------------------------------------------------------------------
// Everything the message protocol brings, from the server config

export interface ServerMessagingConfig {
  readonly handlers?: HandlersConfig | undefined
  readonly messages?: MessagesConfig | undefined
  readonly accounts?: AccountsOptions | undefined
  /** Real peer links and the default `sync` policy (Peers.ts), fully provided; without: log-only placeholders. */
  readonly peerLink?: Layer.Layer<PeerLink, never, ServerMessagingRequirements> | undefined
  readonly syncPolicy?: Layer.Layer<SyncPolicy, never, ServerMessagingRequirements> | undefined
}

/**
 * The message protocol and its policies, ready for the Listener and the sync push flow: provides
 * MessageProtocol, Conversations (for `attach <token>`), the handler-backed ProposalPolicy, ResolvePolicy,
 * SyncPolicy, ProposalQueue, Accounts, Handlers and ConversationHub. Needs the store, registry, verifier, the
 * default ProposalPolicy (e.g. `layerAcceptAll` or the signing issue's owner check) and the platform.
 */
export const layerServer = (config: ServerMessagingConfig) => {
  const messages = config.messages ?? Schema.decodeSync(MessagesConfig)({})
  const conversationOptions: ConversationOptions = { runtimeDir: messages.runtimeDir, receiveTimeout: messages.receiveTimeout }
  const base = Layer.mergeAll(
    HandlersModule.layer(config.handlers ?? {}),
    layerHub(conversationOptions),
    AccountsModule.layer(config.accounts ?? {}),
    QueueModule.layer,
    config.peerLink ?? layerPeerLinkLog,
    layerPeerSecrets(messages.peerSecrets)
  )
  const policies = Layer.mergeAll(
    layerResolve,
    layerSyncHandler.pipe(Layer.provide(config.syncPolicy ?? layerSyncLogAccept)),
    layerProposalHandler,
    layerConversations
  ).pipe(Layer.provideMerge(base))
  const protocol = layer({
    limits: { maxFrame: messages.maxFrame, maxDepth: messages.maxDepth },
    maxInFlight: messages.maxInFlight,
    selfRegistration: messages.selfRegistration
  })
  return protocol.pipe(Layer.provideMerge(policies))
}

export type ServerMessagingRequirements =
  | ObjectStore | Registry | Verifier | ProposalPolicy | CommandExecutor.CommandExecutor | FileSystem.FileSystem | Path.Path
export type ServerMessagingServices =
  | MessageProtocol | Conversations | ProposalPolicy | ResolvePolicy | SyncPolicy | ProposalQueue | Accounts | Handlers
  | ConversationHub | PeerLink | PeerCredentials
