/**
 * Listener: the server's one TCP port. Every accepted connection is a scoped fiber that sniffs the first four
 * bytes — `lit?` goes to the SyncProtocol, anything else to the MessageProtocol (src/services/Connection.ts) —
 * and pipes the socket through the chosen protocol, reading with backpressure (`NodeStream.fromReadable` on the
 * raw `net.Socket`: a slow consumer slows the peer down; nothing is buffered without limit).
 *
 * Limits: connections in total and per remote address (a refused connection gets a clear error in its own
 * protocol and is closed; every other connection is unaffected), and a deadline for the first bytes
 * (slowloris: a peer that connects and says nothing is closed).
 *
 * Shutdown (the layer's scope closes, e.g. SIGINT/SIGTERM under `runMain`): the listening socket is closed at
 * once (new connections are refused by the OS), in-flight connections get `shutdownGrace` to finish, then the
 * rest are interrupted. A push interrupted half-way leaves only unsealed objects behind, never a ref.
 */
import type { Socket } from "@effect/platform"
import { NodeSink, NodeSocket, NodeSocketServer, NodeStream } from "@effect/platform-node"
import {
  Chunk, Context, Duration, Effect, Either, Exit, Fiber, HashMap, Layer, Option, Ref, Schema, Scope, Stream,
  SubscriptionRef
} from "effect"
import type * as Net from "node:net"
import * as SyncCodec from "../protocol/SyncCodec.js"
import { ConnectionError, type ConnectionInfo, MessageProtocol, type Protocol, SyncProtocol } from "./Connection.js"
import * as Metrics from "./Metrics.js"

// ---------------------------------------------------------------------------------------------
// Errors

export class ListenerError extends Schema.TaggedError<ListenerError>()("ListenerError", {
  reason: Schema.Literal("Open", "Address"),
  detail: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {}

// ---------------------------------------------------------------------------------------------
// The service

export interface ListenerOptions {
  /** Interface to bind: `127.0.0.1` (default), `0.0.0.0`, `::`, … */
  readonly host: string
  /** TCP port; 0 picks a free one (tests). */
  readonly port: number
  /** Connections served at once, all addresses together. */
  readonly maxConnections: number
  /** Connections served at once from one remote address. */
  readonly maxConnectionsPerAddress: number
  /** A connection must send its first 4 bytes within this time. */
  readonly firstBytesTimeout: Duration.DurationInput
  /** On shutdown, how long in-flight connections may take to finish before they are interrupted. */
  readonly shutdownGrace: Duration.DurationInput
}

export const defaultOptions: ListenerOptions = {
  host: "127.0.0.1",
  port: 4822,
  maxConnections: 256,
  maxConnectionsPerAddress: 32,
  firstBytesTimeout: Duration.seconds(10),
  shutdownGrace: Duration.seconds(10)
}

export interface ListenerAddress {
  readonly host: string
  readonly port: number
}

export interface ListenerState {
  /** Connections admitted and being served. */
  readonly active: number
  /** Admitted connections per remote address (addresses with none are absent). */
  readonly byAddress: HashMap.HashMap<string, number>
  /** Connections accepted since start, admitted or refused. */
  readonly accepted: number
  /** Connections refused for a limit since start. */
  readonly refused: number
  /** True once shutdown has begun: new connections are refused. */
  readonly draining: boolean
  /** False once the listening socket is closed (shutdown). */
  readonly listening: boolean
}

export class Listener extends Context.Tag("upm/Listener")<Listener, {
  /** The bound address (the real port when 0 was asked for). */
  readonly address: ListenerAddress
  /** The current counters. */
  readonly state: Effect.Effect<ListenerState>
  /** The counters, every time they change (the current value first). */
  readonly changes: Stream.Stream<ListenerState>
}>() {}

// ---------------------------------------------------------------------------------------------
// Refusals

/** The sniffed prefix that selects the sync protocol (seed 004's handshake `lit?0,1\n`). */
export const SYNC_MAGIC = new Uint8Array([0x6c, 0x69, 0x74, 0x3f]) // "lit?"

const isSync = (prefix: Uint8Array) =>
  prefix.length >= 4 && SYNC_MAGIC.every((byte, i) => prefix[i] === byte)

/**
 * A seed-001 style error frame: `[4-byte LE length]{"header":{"status":"error"},"payload":{"type":"error","data":…}}`.
 * What a message-protocol client is told when it is refused before any message handler runs.
 */
export const messageErrorFrame = (data: string): Uint8Array => {
  const json = Buffer.from(JSON.stringify({ header: { status: "error" }, payload: { type: "error", data } }), "utf8")
  const frame = Buffer.alloc(4 + json.length)
  frame.writeUInt32LE(json.length, 0)
  json.copy(frame, 4)
  return frame
}

/**
 * A sync-protocol client is refused the way a sync session ends on any error (docs/protocol.md): one REPLY
 * `!error <reason>\n\n` in place of the handshake's `lit!<version>\n`.
 */
export const syncRefusal = (reason: string): Uint8Array =>
  Either.getOrElse(
    SyncCodec.encodeEither(SyncCodec.reply(`error ${reason.replace(/\s*\n\s*/g, " ").trim()}`)),
    // only a reason over the codec's text limit is unencodable: send the generic one
    () => Buffer.from("!error connection refused\n\n", "utf8")
  )

/** The MessageProtocol until the message-protocol issue provides one: every connection gets a clear refusal. */
export const layerRefuse: Layer.Layer<MessageProtocol> = Layer.succeed(MessageProtocol, MessageProtocol.of({
  serve: () => Stream.make(messageErrorFrame("message protocol not available"))
}))

// ---------------------------------------------------------------------------------------------
// Implementation

const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array =>
  parts.length === 1 && parts[0] !== undefined ? parts[0] : Buffer.concat(parts)

type Pull = Effect.Effect<Chunk.Chunk<Uint8Array>, Option.Option<ConnectionError>>

/** Small frames that are ready together are written together (one socket write, not one per frame). */
const COALESCE_BYTES = 256 * 1024
const coalesce = (chunk: Chunk.Chunk<Uint8Array>): Chunk.Chunk<Uint8Array> => {
  if (chunk.length <= 1) return chunk
  const out: Array<Uint8Array> = []
  let run: Array<Uint8Array> = []
  let size = 0
  const flush = () => {
    if (run.length > 0) out.push(concat(run))
    run = []
    size = 0
  }
  for (const bytes of chunk) {
    if (size + bytes.length > COALESCE_BYTES) flush()
    if (bytes.length >= COALESCE_BYTES) out.push(bytes)
    else {
      run.push(bytes)
      size += bytes.length
    }
  }
  flush()
  return Chunk.unsafeFromArray(out)
}

/** Reads until at least 4 bytes have arrived or the input ended; `ended` says whether `pull` is exhausted. */
const sniff = (pull: Pull) =>
  Effect.gen(function* () {
    const parts: Array<Uint8Array> = []
    let size = 0
    while (size < 4) {
      const next = yield* Effect.either(pull)
      if (next._tag === "Left") {
        if (Option.isSome(next.left)) return yield* Effect.fail(next.left.value)
        return { prefix: concat(parts), ended: true }
      }
      for (const part of next.right) {
        parts.push(part)
        size += part.length
      }
    }
    return { prefix: concat(parts), ended: false }
  })

/** How long a refused or finished connection may keep sending before it is destroyed (lingering close). */
const LINGER = Duration.seconds(2)
/** At most this many bytes are read and discarded while lingering. */
const LINGER_BYTES = 64 * 1024

const toSocketError = (cause: unknown) =>
  new ConnectionError({ reason: "Socket", detail: cause instanceof Error ? cause.message : String(cause) })

export const make = (options: ListenerOptions) =>
  Effect.gen(function* () {
    const sync = yield* SyncProtocol
    const message = yield* MessageProtocol
    const firstBytesTimeout = Duration.decode(options.firstBytesTimeout)
    const shutdownGrace = Duration.decode(options.shutdownGrace)

    const state = yield* SubscriptionRef.make<ListenerState>({
      active: 0, byAddress: HashMap.empty(), accepted: 0, refused: 0, draining: false, listening: true
    })
    // Refused connections are served briefly (sniff + refusal); this caps how many at once.
    const refusing = yield* Ref.make(0)

    // The socket server lives in its own scope so that shutdown can close the listening socket first and
    // drain the connections afterwards (closing the layer's scope would interrupt them at once).
    const serverScope = yield* Scope.make()
    const server = yield* NodeSocketServer.make({ host: options.host, port: options.port, allowHalfOpen: true, noDelay: true }).pipe(
      Scope.extend(serverScope),
      Effect.mapError((e) =>
        new ListenerError({ reason: "Open", detail: `cannot listen on ${options.host}:${options.port}: ${e.message}`, cause: e })),
      Effect.onError(() => Scope.close(serverScope, Exit.void))
    )
    if (server.address._tag !== "TcpAddress") {
      yield* Scope.close(serverScope, Exit.void)
      return yield* Effect.fail(new ListenerError({ reason: "Address", detail: "not a TCP address" }))
    }
    const address: ListenerAddress = { host: server.address.hostname, port: server.address.port }

    /** Admits a connection from `remote`, or says which limit refuses it. */
    const admit = (remote: string) =>
      SubscriptionRef.modify(state, (s): [Option.Option<ConnectionError>, ListenerState] => {
        const accepted = s.accepted + 1
        const fromRemote = Option.getOrElse(HashMap.get(s.byAddress, remote), () => 0)
        const refuse = (detail: string): [Option.Option<ConnectionError>, ListenerState] =>
          [Option.some(new ConnectionError({ reason: "Limit", detail })), { ...s, accepted, refused: s.refused + 1 }]
        if (s.draining) return refuse("server is shutting down")
        if (s.active >= options.maxConnections) {
          return refuse(`too many connections (limit ${options.maxConnections})`)
        }
        if (fromRemote >= options.maxConnectionsPerAddress) {
          return refuse(`too many connections from ${remote} (limit ${options.maxConnectionsPerAddress})`)
        }
        return [Option.none(), {
          ...s, accepted, active: s.active + 1, byAddress: HashMap.set(s.byAddress, remote, fromRemote + 1)
        }]
      })

    const release = (remote: string) =>
      SubscriptionRef.update(state, (s) => {
        const fromRemote = Option.getOrElse(HashMap.get(s.byAddress, remote), () => 1) - 1
        return {
          ...s,
          active: s.active - 1,
          byAddress: fromRemote <= 0 ? HashMap.remove(s.byAddress, remote) : HashMap.set(s.byAddress, remote, fromRemote)
        }
      })

    /** Reads what the peer still sends (bounded) until it closes or LINGER passes, so our last bytes reach it. */
    const linger = (pull: Pull, ended: boolean) =>
      ended ? Effect.void : Stream.repeatEffectChunkOption(pull).pipe(
        Stream.scan(0, (n, part) => n + part.length),
        Stream.takeWhile((n) => n <= LINGER_BYTES),
        Stream.runDrain,
        Effect.timeout(LINGER),
        Effect.ignore
      )

    const serve = (conn: Net.Socket, info: ConnectionInfo, refusal: Option.Option<ConnectionError>) =>
      Effect.gen(function* () {
        const pull: Pull = yield* Stream.toPull(
          NodeStream.fromReadable<ConnectionError, Uint8Array>(() => conn, toSocketError, { closeOnDone: false })
        )
        const first = yield* sniff(pull).pipe(
          Effect.timeoutFail({
            duration: firstBytesTimeout,
            onTimeout: () =>
              new ConnectionError({ reason: "Timeout", detail: `no protocol bytes within ${Duration.format(firstBytesTimeout)}` })
          })
        )
        const protocol: "sync" | "message" = isSync(first.prefix) ? "sync" : "message"
        const writeAll = (output: Stream.Stream<Uint8Array, ConnectionError>) =>
          Stream.run(
            Stream.mapChunks(output, coalesce),
            NodeSink.fromWritable(() => conn, toSocketError, { endOnDone: true })
          )

        if (Option.isSome(refusal)) {
          yield* Effect.logInfo("connection refused").pipe(
            Effect.annotateLogs({ protocol, reason: refusal.value.detail }))
          const bytes = protocol === "sync" ? syncRefusal(refusal.value.detail) : messageErrorFrame(refusal.value.detail)
          yield* writeAll(Stream.make(bytes))
          yield* linger(pull, first.ended)
          return
        }

        yield* Effect.logDebug("connection").pipe(Effect.annotateLogs({ protocol }))
        yield* Metrics.trackConnection(protocol) // upm_connections_total / _open{protocol}, for this scope
        let input: Stream.Stream<Uint8Array, ConnectionError> = first.ended ? Stream.empty : Stream.repeatEffectChunkOption(pull)
        if (first.prefix.length > 0) input = Stream.concat(Stream.make(first.prefix), input)
        const handler: Protocol = protocol === "sync" ? sync.serve : message.serve
        yield* writeAll(handler(input, info))
        yield* linger(pull, first.ended)
      }).pipe(Effect.scoped)

    const ids = yield* Ref.make(0)

    const onConnection = (_socket: Socket.Socket) =>
      Effect.gen(function* () {
        const conn = yield* Effect.serviceOption(NodeSocket.NetSocket).pipe(Effect.flatten, Effect.orDie)
        const remote = conn.remoteAddress ?? "unknown"
        const id = yield* Ref.getAndUpdate(ids, (n) => n + 1)
        const info: ConnectionInfo = { id, remoteAddress: remote }
        const refusal = yield* admit(remote)
        const limitRefusal = Option.isSome(refusal)
          ? yield* Ref.modify(refusing, (n) => [n < options.maxConnections, n + 1] as const).pipe(
            Effect.map((withReply) => ({ withReply })))
          : undefined
        const done = Effect.sync(() => conn.destroy()).pipe(
          Effect.zipRight(
            limitRefusal !== undefined ? Ref.update(refusing, (n) => n - 1) : release(remote)
          )
        )
        const work = limitRefusal !== undefined && !limitRefusal.withReply
          ? Effect.logWarning("connection dropped: too many refused connections at once")
          : serve(conn, info, refusal)
        yield* work.pipe(
          Effect.catchAll((e) =>
            e.reason === "Timeout" || e.reason === "Limit"
              ? Effect.logInfo("connection closed").pipe(Effect.annotateLogs({ reason: e.reason, detail: e.detail }))
              : Effect.logDebug("connection ended with error").pipe(Effect.annotateLogs({ reason: e.reason, detail: e.detail }))),
          Effect.catchAllDefect((defect) => Effect.logError("connection failed", defect)),
          Effect.ensuring(done),
          Effect.annotateLogs({ connection: id, remote })
        )
      })

    const running = yield* server.run(onConnection).pipe(
      Effect.tapErrorCause((cause) => Effect.logError("listener failed", cause)),
      Effect.forkScoped
    )
    yield* Effect.logInfo("listening").pipe(Effect.annotateLogs({ host: address.host, port: address.port }))

    const shutdown = Effect.gen(function* () {
      yield* SubscriptionRef.update(state, (s) => ({ ...s, draining: true }))
      // Closes the listening socket; the close completes once every connection has ended. The forked fiber
      // runs first on the (FIFO) scheduler once we yield, and calls `server.close()` in that first run.
      const closed = yield* Effect.forkDaemon(Scope.close(serverScope, Exit.void))
      yield* Effect.yieldNow()
      const before = yield* SubscriptionRef.updateAndGet(state, (s) => ({ ...s, listening: false }))
      yield* Effect.logInfo("shutting down").pipe(
        Effect.annotateLogs({ active: before.active, grace: Duration.format(shutdownGrace) }))
      const drained = yield* state.changes.pipe(
        Stream.takeUntil((s) => s.active === 0),
        Stream.runDrain,
        Effect.as(true),
        Effect.timeout(shutdownGrace),
        Effect.orElseSucceed(() => false)
      )
      if (!drained) {
        const now = yield* SubscriptionRef.get(state)
        yield* Effect.logWarning("shutdown grace expired, interrupting connections").pipe(
          Effect.annotateLogs({ active: now.active }))
      }
      yield* Fiber.interrupt(running)
      yield* Fiber.join(closed)
      yield* Effect.logInfo("stopped")
    })

    // Runs before the forkScoped finalizer above (finalizers run in reverse order). The drain runs in its own
    // fiber: the finalizer may run in a fiber that is being interrupted (SIGINT), where an interruptible region
    // would end at once. A fiber forked here inherits the finalizer's uninterruptibility, which would keep the
    // deadline from firing, hence `interruptible` inside it; the finalizer awaits it whole.
    yield* Effect.addFinalizer(() => Effect.flatMap(Effect.forkDaemon(Effect.interruptible(shutdown)), Fiber.join))

    return Listener.of({
      address,
      state: SubscriptionRef.get(state),
      changes: state.changes
    })
  })

export const layer = (options: ListenerOptions): Layer.Layer<Listener, ListenerError, SyncProtocol | MessageProtocol> =>
  Layer.scoped(Listener, make(options))
