/**
 * MessageClient: a message-protocol session from any Effect program (the CLI's `queue`, `propose`/`publish`
 * conversations, tests, benchmarks).
 *
 * ```ts
 * const session = yield* MessageClient.connect({ host: "127.0.0.1", port: 4822 })
 * yield* session.authenticate("alice", password)
 * const reply = yield* session.request("queue-list", null)
 * const token = yield* session.openConversation({
 *   onSend: (message) => Console.log(message),
 *   onReceive: (prompt) => readAnswer(prompt)
 * })
 * ```
 *
 * Every request carries a numeric `header.id`; responses are matched by it, so requests may overlap. Frames the
 * server pushes without an id are conversation frames (`send` / `receive`, given to the callbacks; a `receive`
 * is answered with `conversation-answer`) or routed messages (given to `onMessage`).
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket" // subpath: the index loads all of platform-node
import type { Socket } from "@effect/platform"
import { Clock, Deferred, Duration, Effect, Either, HashMap, Mailbox, Option, Ref, Schedule, Schema, type Scope, Stream } from "effect"
import * as Codec from "../protocol/MessageCodec.js"

export class MessageClientError extends Schema.TaggedError<MessageClientError>()("MessageClientError", {
  reason: Schema.Literal("Connect", "Closed", "Protocol", "Timeout", "Refused"),
  detail: Schema.String,
  /** The server's `header.status` when it refused. */
  status: Schema.optional(Schema.String)
}) {
  override get message() {
    return this.detail
  }
}

export interface ConversationCallbacks {
  /** `upm send`: show a line to the user. */
  readonly onSend: (message: string) => Effect.Effect<void>
  /** `upm receive`: ask the user; the answer goes back to the handler. */
  readonly onReceive: (prompt: string) => Effect.Effect<string>
}

export interface MessageSession {
  /** Sends a request and waits for its response (any status). */
  readonly request: (
    type: string,
    data: unknown,
    options?: { readonly scope?: Codec.Scope; readonly authentication?: Codec.Authentication; readonly timeout?: Duration.DurationInput }
  ) => Effect.Effect<Codec.ServerResponse, MessageClientError>
  /** `request`, failing unless the status is one of `ok` (default) or the given ones. */
  readonly expect: (
    type: string,
    data: unknown,
    statuses?: ReadonlyArray<string>
  ) => Effect.Effect<Codec.ServerResponse, MessageClientError>
  /** Authenticates the session (`authenticate` with header.authentication). */
  readonly authenticate: (username: string, password: string) => Effect.Effect<void, MessageClientError>
  /** Opens this session's conversation: the token for the sync query `attach <token>`. */
  readonly openConversation: (callbacks: ConversationCallbacks) => Effect.Effect<string, MessageClientError>
}

export interface ConnectOptions {
  readonly host?: string
  readonly port?: number
  /** A unix socket path instead of host/port. */
  readonly path?: string
  readonly connectTimeout?: Duration.DurationInput
  /** How long a request waits for its response. Default 60 s. */
  readonly timeout?: Duration.DurationInput
  readonly limits?: Codec.Limits
  /** Routed messages (`sendClients` from another user's request) and error frames without an id. */
  readonly onMessage?: (message: Codec.ServerResponse) => Effect.Effect<void>
}

interface Pending {
  readonly deferred: Deferred.Deferred<Codec.ServerResponse, MessageClientError>
  /** Epoch ms after which the request fails with Timeout. */
  readonly deadline: number
  readonly type: string
}

const errorText = (response: Codec.ServerResponse) => {
  const data = response.payload.data
  if (typeof data === "object" && data !== null && "error" in data && typeof data.error === "string") return data.error
  return JSON.stringify(data)
}

/** Connects; the session closes with the scope. */
export const connect = (options: ConnectOptions): Effect.Effect<MessageSession, MessageClientError, Scope.Scope> =>
  Effect.gen(function* () {
    const limits = options.limits ?? Codec.defaultLimits
    const requestTimeout = options.timeout ?? Duration.seconds(60)
    const where = options.path ?? `${options.host ?? "127.0.0.1"}:${options.port ?? 4822}`
    const socket: Socket.Socket = yield* NodeSocket.makeNet({
      ...(options.path !== undefined ? { path: options.path } : { host: options.host ?? "127.0.0.1", port: options.port ?? 4822 }),
      openTimeout: options.connectTimeout ?? Duration.seconds(10)
    }).pipe(Effect.mapError((e) => new MessageClientError({ reason: "Connect", detail: `cannot connect to ${where}: ${e.message}` })))
    const write = yield* socket.writer
    const pending = yield* Ref.make(HashMap.empty<number, Pending>())
    const nextId = yield* Ref.make(1)
    const closed = yield* Deferred.make<void, MessageClientError>()
    // When the connection ends (or the session's scope closes), every request still waiting fails.
    const failPending = Effect.flatMap(Ref.getAndSet(pending, HashMap.empty()), (m) =>
      Effect.forEach(HashMap.values(m), (p) =>
        Deferred.fail(p.deferred, new MessageClientError({ reason: "Closed", detail: `${where} closed the connection` })), { discard: true }))
    // One sweeper for request timeouts instead of a timer per request.
    yield* Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const late = yield* Ref.modify(pending, (m) => {
        const expired = [...HashMap.filter(m, (p) => p.deadline <= now)]
        return [expired, expired.length === 0 ? m : HashMap.removeMany(m, expired.map(([id]) => id))] as const
      })
      yield* Effect.forEach(late, ([, p]) =>
        Deferred.fail(p.deferred, new MessageClientError({ reason: "Timeout", detail: `no response to ${p.type} in time` })), { discard: true })
    }).pipe(Effect.repeat(Schedule.spaced("100 millis")), Effect.forkScoped)
    yield* Effect.addFinalizer(() => Effect.zipRight(Deferred.succeed(closed, undefined), failPending))
    const callbacks = yield* Ref.make(Option.none<ConversationCallbacks>())
    const encode = Codec.encodeMessage(Codec.ClientRequest, limits)

    const request: MessageSession["request"] = (type, data, requestOptions) =>
      Effect.gen(function* () {
        const id = yield* Ref.getAndUpdate(nextId, (n) => n + 1)
        const message: Codec.ClientRequest = {
          header: {
            scope: requestOptions?.scope ?? "client",
            id,
            ...(requestOptions?.authentication !== undefined ? { authentication: requestOptions.authentication } : {})
          },
          payload: { type, data }
        }
        const frame = yield* Either.match(encode(message), {
          onLeft: (e) => Effect.fail(new MessageClientError({ reason: "Protocol", detail: e.message })),
          onRight: Effect.succeed
        })
        const deferred = yield* Deferred.make<Codec.ServerResponse, MessageClientError>()
        const timeout = Duration.decode(requestOptions?.timeout ?? requestTimeout)
        const now = yield* Clock.currentTimeMillis
        yield* Ref.update(pending, HashMap.set(id, { deferred, deadline: now + Duration.toMillis(timeout), type }))
        if (yield* Deferred.isDone(closed)) {
          return yield* Effect.fail(new MessageClientError({ reason: "Closed", detail: `${where} closed the connection` }))
        }
        yield* write(frame).pipe(Effect.mapError((e) => new MessageClientError({ reason: "Closed", detail: `${where}: ${e.message}` })))
        return yield* Deferred.await(deferred).pipe(Effect.ensuring(Ref.update(pending, HashMap.remove(id))))
      })

    const expect: MessageSession["expect"] = (type, data, statuses = ["ok"]) =>
      Effect.flatMap(request(type, data), (response) =>
        statuses.includes(response.header.status)
          ? Effect.succeed(response)
          : Effect.fail(new MessageClientError({ reason: "Refused", status: response.header.status, detail: `${type}: ${response.header.status}: ${errorText(response)}` })))

    const onPush = (message: Codec.ServerResponse): Effect.Effect<void> =>
      Effect.gen(function* () {
        const cb = yield* Ref.get(callbacks)
        const type = message.payload.type
        if (Option.isSome(cb) && type === "send") {
          const d = Schema.decodeUnknownOption(Codec.ConversationSend)(message.payload.data)
          if (Option.isSome(d)) return yield* cb.value.onSend(d.value.message)
        }
        if (Option.isSome(cb) && type === "receive") {
          const d = Schema.decodeUnknownOption(Codec.ConversationReceive)(message.payload.data)
          if (Option.isSome(d)) {
            const { conversation, id, prompt } = d.value
            // Answer in the background: reading goes on meanwhile.
            return yield* cb.value.onReceive(prompt).pipe(
              Effect.flatMap((answer) => request("conversation-answer", { conversation, id, answer })),
              Effect.ignore,
              Effect.forkDaemon,
              Effect.asVoid
            )
          }
        }
        if (options.onMessage !== undefined) return yield* options.onMessage(message)
        yield* Effect.logDebug("unsolicited message", message)
      })

    const dispatch = (item: Either.Either<Codec.ServerResponse, Codec.MessageError>) =>
      Either.match(item, {
        onLeft: (e) => Effect.logWarning(`server sent a malformed message: ${e.message}`),
        onRight: (message) => {
          const id = message.header.id
          if (typeof id !== "number") return onPush(message)
          return Effect.flatMap(Ref.get(pending), (m) =>
            Option.match(HashMap.get(m, id), {
              onNone: () => onPush(message),
              onSome: (p) => Deferred.succeed(p.deferred, message)
            }))
        }
      })

    const incoming = yield* Mailbox.make<Uint8Array, MessageClientError>({ capacity: 256 })
    yield* socket.run((chunk) => incoming.offer(chunk)).pipe(
      Effect.mapError((e) => new MessageClientError({ reason: "Closed", detail: `${where}: ${e.message}` })),
      Effect.exit,
      Effect.flatMap((exit) => incoming.done(exit)),
      Effect.forkScoped
    )
    yield* Mailbox.toStream(incoming).pipe(
      Codec.decodeAll(Codec.ServerResponse, limits),
      Stream.runForEach(dispatch),
      Effect.exit,
      Effect.flatMap(() => Effect.zipRight(Deferred.succeed(closed, undefined), failPending)),
      Effect.forkScoped
    )

    return {
      request,
      expect,
      authenticate: (username, password) =>
        Effect.asVoid(
          Effect.flatMap(request("authenticate", null, { authentication: { username, password } }), (response) =>
            response.header.status === "ok"
              ? Effect.void
              : Effect.fail(new MessageClientError({ reason: "Refused", status: response.header.status, detail: `authentication failed: ${errorText(response)}` })))
        ),
      openConversation: (cb) =>
        Effect.gen(function* () {
          yield* Ref.set(callbacks, Option.some(cb))
          const response = yield* expect("conversation-open", null)
          const data = response.payload.data
          if (typeof data === "object" && data !== null && "conversation" in data && typeof data.conversation === "string") {
            return data.conversation
          }
          return yield* Effect.fail(new MessageClientError({ reason: "Protocol", detail: "conversation-open: no token in the reply" }))
        })
    } satisfies MessageSession
  })

/** Talks to a server's handle socket: what `upm send` / `upm receive` do. */
export const handleRequest = (socketPath: string, request: Codec.HandleRequest, timeout: Duration.DurationInput = Duration.minutes(10)) =>
  Effect.scoped(Effect.gen(function* () {
    const socket = yield* NodeSocket.makeNet({ path: socketPath, openTimeout: Duration.seconds(5) }).pipe(
      Effect.mapError((e) => new MessageClientError({ reason: "Connect", detail: `cannot reach the server's handle socket ${socketPath}: ${e.message}` }))
    )
    const write = yield* socket.writer
    const frame = yield* Either.match(Codec.encodeMessage(Codec.HandleRequest)(request), {
      onLeft: (e) => Effect.fail(new MessageClientError({ reason: "Protocol", detail: e.message })),
      onRight: Effect.succeed
    })
    const incoming = yield* Mailbox.make<Uint8Array, MessageClientError>({ capacity: 64 })
    yield* socket.run((chunk) => incoming.offer(chunk)).pipe(
      Effect.mapError((e) => new MessageClientError({ reason: "Closed", detail: e.message })),
      Effect.exit,
      Effect.flatMap((exit) => incoming.done(exit)),
      Effect.forkScoped
    )
    yield* write(frame).pipe(Effect.mapError((e) => new MessageClientError({ reason: "Closed", detail: e.message })))
    const reply = yield* Mailbox.toStream(incoming).pipe(
      Codec.decodeAll(Codec.HandleReply, { maxFrame: 128 * 1024, maxDepth: 4 }),
      Stream.runHead,
      Effect.mapError((e) => new MessageClientError({ reason: "Protocol", detail: e.message })),
      Effect.timeoutFail({ duration: timeout, onTimeout: () => new MessageClientError({ reason: "Timeout", detail: "the server did not answer" }) })
    )
    if (Option.isNone(reply)) return yield* Effect.fail(new MessageClientError({ reason: "Closed", detail: "the server closed the handle socket without answering" }))
    return yield* Either.match(reply.value, {
      onLeft: (e) => Effect.fail(new MessageClientError({ reason: "Protocol", detail: e.message })),
      onRight: (r) => r.ok ? Effect.succeed(r) : Effect.fail(new MessageClientError({ reason: "Refused", detail: r.error ?? "refused" }))
    })
  }))
