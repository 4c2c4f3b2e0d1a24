/**
 * Conversations: talking with the user while a request is decided (seed 000's `upm send` / `upm receive`).
 *
 * - A client's message session becomes a conversation partner: on `conversation-open` it gets a token (32 random
 *   bytes, base64url) valid as long as the session is open. The sync push flow names that token (`attach <token>`)
 *   so the propose policy can talk with the publishing user; a request sent on the message session itself is
 *   its own conversation.
 * - A handler working on a request gets a *handle*: another unguessable token, valid only while that request is
 *   being handled, naming the requester's conversation. `upm send <handle> <message>` and `upm receive <handle>`
 *   connect to the server's *handle socket*, a unix domain socket in a directory only the server's user can enter
 *   (mode 0700; the socket itself 0600; path in `UPM_HANDLE_SOCKET`): reachable only from the server's machine
 *   and, with the handle, only for that request.
 * - The server relays: `send` pushes `{"payload":{"type":"send","data":{"conversation","message"}}}` to the
 *   client; `receive` pushes `{"payload":{"type":"receive","data":{"conversation","id","prompt"}}}` and waits
 *   (at most `receiveTimeout`) for the client's `conversation-answer` request with that id. A client that
 *   disconnects fails every wait on its conversation with `ConversationClosed`.
 */
import { randomBytes } from "node:crypto"
import { FileSystem, Path } from "@effect/platform"
import { NodeSink, NodeSocket, NodeSocketServer, NodeStream } from "@effect/platform-node"
import {
  Context, Deferred, Duration, Effect, Either, HashMap, Layer, Option, Ref, Schema, type Scope, Stream
} from "effect"
import * as Codec from "../protocol/MessageCodec.js"
import { type Conversation, ConversationClosed, Conversations } from "./ProposalPolicy.js"

// ---------------------------------------------------------------------------------------------
// The service

/** How the hub reaches a client's message session. */
export interface SessionLink {
  /** Pushes a frame to the client (waits while the client's output is full). */
  readonly push: (message: Codec.ServerResponse) => Effect.Effect<void>
}

export interface Handle {
  readonly token: string
  /** The handle socket's path (`UPM_HANDLE_SOCKET`). */
  readonly socket: string
}

export class ConversationHub extends Context.Tag("upm/ConversationHub")<ConversationHub, {
  /**
   * Makes a session a conversation partner until the scope closes or `close` runs (the client can no longer
   * answer, e.g. its input ended); returns its token.
   */
  readonly open: (session: SessionLink) => Effect.Effect<{ readonly token: string; readonly close: Effect.Effect<void> }, never, Scope.Scope>
  /** The conversation of a token, if its session is open. */
  readonly conversation: (token: string) => Effect.Effect<Option.Option<Conversation>>
  /** Delivers a client's answer to a pending `receive`; false if nothing waits for it. */
  readonly answer: (token: string, id: number, answer: string) => Effect.Effect<boolean>
  /** A handle for one request, valid until the scope closes. */
  readonly handle: (conversation: Conversation) => Effect.Effect<Handle, never, Scope.Scope>
  /**
   * Runs `use` with a handle on the conversation of `token`, valid while `use` runs; `undefined` when that
   * conversation is not open. (`conversation` + `handle` without a Scope: this runs for every handler request.)
   */
  readonly withHandle: <A, E, R>(
    token: string,
    use: (handle: Handle | undefined) => Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E, R>
  /**
   * A handle on the conversation of `token` until `close` runs (synchronous, so that a callback can end it);
   * `None` when that conversation is not open.
   */
  readonly openHandle: (token: string) => Effect.Effect<Option.Option<OpenHandle>>
  /** The handle a token names (for the handle socket and tests). */
  readonly byHandle: (token: string) => Effect.Effect<Option.Option<Conversation>>
}>() {}

export interface OpenHandle {
  readonly handle: Handle
  /** Ends the handle (idempotent). */
  readonly close: () => void
}

export interface ConversationOptions {
  /** Directory for the handle socket; default: a fresh private temporary directory, removed on stop. */
  readonly runtimeDir?: string | undefined
  /** How long a `receive` waits for the user's answer. Default 5 minutes. */
  readonly receiveTimeout?: Duration.DurationInput
}

const newToken = () => randomBytes(32).toString("base64url")

/**
 * Unguessable tokens, 32 random bytes each, cut from a pool refilled 64 at a time: a handle is made for every
 * handler request, and one `randomBytes` call per token cost more than the rest of the handle.
 */
const tokenSource = () => {
  const TOKEN = 32
  let pool = Buffer.alloc(0)
  let at = 0
  return {
    next: (): string => {
      if (at + TOKEN > pool.length) {
        pool = randomBytes(TOKEN * 64)
        at = 0
      }
      at += TOKEN
      return pool.toString("base64url", at - TOKEN, at)
    }
  }
}

interface Partner {
  readonly session: SessionLink
  readonly waiting: Ref.Ref<HashMap.HashMap<number, Deferred.Deferred<string, ConversationClosed>>>
  readonly nextId: Ref.Ref<number>
}

// ---------------------------------------------------------------------------------------------
// The handle socket

const handleReply = Codec.encodeMessage(Codec.HandleReply)
const decodeHandleRequest = Codec.decodeMessage(Codec.HandleRequest, { maxFrame: 128 * 1024, maxDepth: 4 })

/** Serves `upm send` / `upm receive` connections: one request frame, one reply frame. */
const serveHandles = (byHandle: (token: string) => Effect.Effect<Option.Option<Conversation>>) =>
  Effect.gen(function* () {
    const conn = yield* Effect.serviceOption(NodeSocket.NetSocket).pipe(Effect.flatten, Effect.orDie)
    const toError = (cause: unknown) => new ConversationClosed({ detail: String(cause) })
    const reply = (r: Codec.HandleReply) => Either.getOrElse(handleReply(r), () => new Uint8Array())
    const answer = (body: Uint8Array): Effect.Effect<Codec.HandleReply> =>
      Either.match(decodeHandleRequest(body), {
        onLeft: (e) => Effect.succeed({ ok: false, error: e.message }),
        onRight: (request) =>
          Effect.flatMap(byHandle(request.handle), Option.match({
            onNone: () => Effect.succeed<Codec.HandleReply>({ ok: false, error: "unknown or expired handle" }),
            onSome: (conversation) =>
              request.op === "send"
                ? Effect.as(conversation.send(request.message), { ok: true })
                : conversation.receive(request.message).pipe(
                  Effect.map((answer): Codec.HandleReply => ({ ok: true, answer })),
                  Effect.catchAll((e) => Effect.succeed<Codec.HandleReply>({ ok: false, error: e.detail }))
                )
          }))
      })
    yield* NodeStream.fromReadable<ConversationClosed, Uint8Array>(() => conn, toError, { closeOnDone: false }).pipe(
      Codec.decodeFrames(128 * 1024),
      Stream.take(1),
      Stream.mapEffect(answer),
      Stream.map(reply),
      Stream.run(NodeSink.fromWritable(() => conn, toError, { endOnDone: true })),
      Effect.ensuring(Effect.sync(() => conn.destroy()))
    )
  }).pipe(Effect.catchAll((e) => Effect.logDebug("handle connection ended", e)))

// ---------------------------------------------------------------------------------------------
// The layer

export const make = (options: ConversationOptions = {}) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const receiveTimeout = options.receiveTimeout ?? Duration.minutes(5)
    const partners = yield* Ref.make(HashMap.empty<string, Partner>())
    // Live handles. A plain Map of this hub: one is added and removed for every handler request, also from
    // callbacks (openHandle's close).
    const handles = new Map<string, Conversation>()
    const tokens = tokenSource()

    const conversationOf = (token: string, partner: Partner): Conversation => ({
      send: (message) =>
        partner.session.push({ header: { status: "ok" }, payload: { type: "send", data: { conversation: token, message } } }),
      receive: (prompt) =>
        Effect.gen(function* () {
          const id = yield* Ref.getAndUpdate(partner.nextId, (n) => n + 1)
          const deferred = yield* Deferred.make<string, ConversationClosed>()
          yield* Ref.update(partner.waiting, HashMap.set(id, deferred))
          // The session may have closed while we registered: then nobody would ever answer.
          if (Option.isNone(HashMap.get(yield* Ref.get(partners), token))) {
            return yield* Effect.fail(new ConversationClosed({ detail: "the user disconnected" }))
          }
          yield* partner.session.push({ header: { status: "ok" }, payload: { type: "receive", data: { conversation: token, id, prompt } } })
          return yield* Deferred.await(deferred).pipe(
            Effect.timeoutFail({
              duration: receiveTimeout,
              onTimeout: () => new ConversationClosed({ detail: `no answer within ${Duration.format(receiveTimeout)}` })
            }),
            Effect.ensuring(Ref.update(partner.waiting, HashMap.remove(id)))
          )
        })
    })

    const open = (session: SessionLink) =>
      Effect.gen(function* () {
        const token = newToken()
        const partner: Partner = {
          session,
          waiting: yield* Ref.make(HashMap.empty<number, Deferred.Deferred<string, ConversationClosed>>()),
          nextId: yield* Ref.make(1)
        }
        const close = Ref.update(partners, HashMap.remove(token)).pipe(
          Effect.zipRight(Ref.getAndSet(partner.waiting, HashMap.empty())),
          Effect.flatMap((waiting) =>
            Effect.forEach(HashMap.values(waiting), (d) => Deferred.fail(d, new ConversationClosed({ detail: "the user disconnected" })), { discard: true }))
        )
        yield* Effect.acquireRelease(Ref.update(partners, HashMap.set(token, partner)), () => close)
        return { token, close }
      })

    const conversation = (token: string) =>
      Effect.map(Ref.get(partners), (m) => Option.map(HashMap.get(m, token), (p) => conversationOf(token, p)))

    // The handle socket: a private directory (0700) holding a 0600 socket.
    const dir = options.runtimeDir === undefined
      ? yield* fs.makeTempDirectoryScoped({ prefix: "upm-" }).pipe(Effect.orDie)
      : options.runtimeDir
    yield* fs.makeDirectory(dir, { recursive: true, mode: 0o700 }).pipe(Effect.orDie)
    yield* fs.chmod(dir, 0o700).pipe(Effect.orDie)
    const socket = path.join(dir, `handles-${process.pid}.sock`)
    yield* fs.remove(socket, { force: true }).pipe(Effect.ignore)
    const server = yield* NodeSocketServer.make({ path: socket }).pipe(Effect.orDie)
    yield* fs.chmod(socket, 0o600).pipe(Effect.orDie)
    yield* Effect.addFinalizer(() => fs.remove(socket, { force: true }).pipe(Effect.ignore))

    const byHandle = (token: string) => Effect.sync(() => Option.fromNullable(handles.get(token)))
    yield* Effect.forkScoped(server.run(() => serveHandles(byHandle)))

    return ConversationHub.of({
      open,
      conversation,
      answer: (token, id, answer) =>
        Effect.gen(function* () {
          const partner = HashMap.get(yield* Ref.get(partners), token)
          if (Option.isNone(partner)) return false
          const waiting = yield* Ref.modify(partner.value.waiting, (m) => [HashMap.get(m, id), HashMap.remove(m, id)] as const)
          if (Option.isNone(waiting)) return false
          return yield* Deferred.succeed(waiting.value, answer)
        }),
      handle: (c) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            const token = tokens.next()
            handles.set(token, c)
            return token
          }),
          (token) => Effect.sync(() => handles.delete(token))
        ).pipe(Effect.map((token) => ({ token, socket }))),
      withHandle: (token, use) =>
        Effect.flatMap(Ref.get(partners), (m) => {
          const partner = HashMap.get(m, token)
          if (Option.isNone(partner)) return use(undefined)
          const c = conversationOf(token, partner.value)
          return Effect.acquireUseRelease(
            Effect.sync(() => {
              const handle = tokens.next()
              handles.set(handle, c)
              return handle
            }),
            (handle) => use({ token: handle, socket }),
            (handle) => Effect.sync(() => handles.delete(handle))
          )
        }),
      openHandle: (token) =>
        Effect.map(Ref.get(partners), (m) =>
          Option.map(HashMap.get(m, token), (partner): OpenHandle => {
            const handle = tokens.next()
            handles.set(handle, conversationOf(token, partner))
            return { handle: { token: handle, socket }, close: () => handles.delete(handle) }
          })),
      byHandle
    })
  })

export const layerHub = (options: ConversationOptions = {}): Layer.Layer<ConversationHub, never, FileSystem.FileSystem | Path.Path> =>
  Layer.scoped(ConversationHub, make(options))

/** The `Conversations` the sync push flow attaches to, backed by the hub. */
export const layerConversations: Layer.Layer<Conversations, never, ConversationHub> = Layer.effect(
  Conversations,
  Effect.map(ConversationHub, (hub) => Conversations.of({ attach: hub.conversation }))
)
