/**
 * Handlers: the maintainer's executables that answer message types (seed 001's "message handler", seed 000's
 * scripts). The server config names, per message type, a command with args, a mode, a timeout and a concurrency
 * limit:
 *
 * ```json
 * "handlers": {
 *   "propose": { "command": "python3", "args": ["examples/moderation-queue.py"], "mode": "per-request", "timeout": "30s" },
 *   "hello":   { "command": "node", "args": ["hello.mjs"], "mode": "persistent", "concurrency": 16 }
 * }
 * ```
 *
 * - `per-request`: a process per message. It gets one request frame on stdin (then EOF), writes one reply frame on
 *   stdout, and is killed if it is still running when the reply is in or the timeout passes.
 * - `persistent`: one long-lived process, started with the server, handling many requests at once; every request
 *   frame carries `header.id` and the reply must echo it. When it exits it is restarted with exponential backoff
 *   (reset after it stayed up a while); a request it leaves unanswered past the timeout is taken as a hang: that
 *   request fails with `Timeout` and the process is restarted (its other in-flight requests fail with `Restarted`).
 *   Garbage or an oversized frame on its stdout also restarts it.
 * - Admission: at most `concurrency` requests run at once per type, at most `queue` more wait (each for at most
 *   `timeout`); beyond that a request is refused at once with `Busy`.
 * - Every process is a scoped resource: on release it gets SIGTERM (its whole process group), then SIGKILL after
 *   `killGrace`. Its stderr goes to the server log line by line, annotated with the handler's name.
 *
 * Environment of a handler process: `UPM_MESSAGE_TYPE`, and for per-request handlers `UPM_HANDLE` and
 * `UPM_HANDLE_SOCKET` (the conversation handle of this request, when there is one; persistent handlers find them
 * in each frame's header).
 */
import { Command, type CommandExecutor } from "@effect/platform"
import {
  Chunk, Clock, Context, Deferred, Duration, Effect, Either, HashMap, Layer, Option, ParseResult, Queue, Ref, Schedule, Schema,
  type Scope, Stream, SubscriptionRef
} from "effect"
import * as Codec from "../protocol/MessageCodec.js"

// ---------------------------------------------------------------------------------------------
// Config

/** A duration: milliseconds, or a string Effect reads (`"10 seconds"`, `"500 millis"`) or `10s` / `500ms` / `2m`. */
export const HandlerDuration = Schema.transformOrFail(Schema.Union(Schema.NonNegative, Schema.String), Schema.DurationFromSelf, {
  strict: true,
  decode: (input, _, ast) => {
    if (typeof input === "number") return ParseResult.succeed(Duration.millis(input))
    const short = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)\s*$/.exec(input)
    if (short !== null) {
      const n = Number(short[1])
      return ParseResult.succeed(short[2] === "ms" ? Duration.millis(n) : short[2] === "s" ? Duration.seconds(n) : Duration.minutes(n))
    }
    return Option.match(Duration.decodeUnknown(input.trim()), {
      onNone: () => ParseResult.fail(new ParseResult.Type(ast, input, `"${input}" is not a duration (e.g. 10s, 500ms, 2m)`)),
      onSome: ParseResult.succeed
    })
  },
  encode: (d) => ParseResult.succeed(Duration.toMillis(d))
})

const PositiveInt = Schema.Int.pipe(Schema.positive())

export const HandlerSpec = Schema.Struct({
  /** The executable (a path, or a name looked up in PATH). */
  command: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(4096)),
  args: Schema.optionalWith(Schema.Array(Schema.String.pipe(Schema.maxLength(4096))).pipe(Schema.maxItems(256)), { default: () => [] }),
  mode: Schema.optionalWith(Schema.Literal("persistent", "per-request"), { default: () => "per-request" as const }),
  /** How long a request may wait for a slot, and then how long the handler has to answer. */
  timeout: Schema.optionalWith(HandlerDuration, { default: () => Duration.seconds(30) }),
  /** Requests running at once for this type. */
  concurrency: Schema.optionalWith(PositiveInt, { default: () => 8 }),
  /** Requests waiting for a slot beyond `concurrency`; more are refused with `busy`. */
  queue: Schema.optionalWith(Schema.Int.pipe(Schema.nonNegative()), { default: () => 64 }),
  /** Extra environment variables. */
  env: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.String })),
  cwd: Schema.optional(Schema.String),
  /** Largest reply frame accepted from the handler. */
  maxFrame: Schema.optionalWith(PositiveInt, { default: () => 1024 * 1024 }),
  /** Whether sessions that did not authenticate may send this type. */
  anonymous: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  /** After SIGTERM, how long before SIGKILL. */
  killGrace: Schema.optionalWith(HandlerDuration, { default: () => Duration.seconds(2) }),
  /** Persistent mode: first restart delay (doubles up to `restartMax`). */
  restartBase: Schema.optionalWith(HandlerDuration, { default: () => Duration.millis(100) }),
  restartMax: Schema.optionalWith(HandlerDuration, { default: () => Duration.seconds(30) })
})
export type HandlerSpec = typeof HandlerSpec.Type
export type HandlerSpecInput = typeof HandlerSpec.Encoded

/** The server config's `handlers` section: message type → handler. */
export const HandlersConfig = Schema.Record({ key: Codec.MessageType, value: HandlerSpec })
export type HandlersConfig = typeof HandlersConfig.Type

// ---------------------------------------------------------------------------------------------
// Errors

export class HandlerError extends Schema.TaggedError<HandlerError>()("HandlerError", {
  handler: Schema.String,
  reason: Schema.Literal("NoHandler", "Spawn", "Exited", "Timeout", "Busy", "Garbage", "TooLarge", "Unavailable", "Restarted"),
  detail: Schema.String
}) {
  override get message() {
    return `handler ${this.handler}: ${this.detail}`
  }
}

// ---------------------------------------------------------------------------------------------
// The service

/** One request for a handler. */
export interface Invocation {
  readonly type: string
  readonly scope: Codec.Scope
  readonly data: unknown
  readonly user?: string | undefined
  readonly peer?: string | undefined
  /** The conversation handle of this request, if the requester can be talked to. */
  readonly handle?: { readonly token: string; readonly socket: string } | undefined
}

export class Handlers extends Context.Tag("upm/Handlers")<Handlers, {
  /** The configured handler for a type. */
  readonly spec: (type: string) => Option.Option<HandlerSpec>
  /** Sends a request to the type's handler and waits for its reply. */
  readonly call: (invocation: Invocation) => Effect.Effect<Codec.HandlerReply, HandlerError>
}>() {}

// ---------------------------------------------------------------------------------------------
// Processes

/** A handler's stderr, line by line into the log (lines cut at 4 KiB, so no line buffers without bound). */
const logStderr = (name: string, stderr: Stream.Stream<Uint8Array, unknown>) =>
  stderr.pipe(
    Stream.decodeText(),
    Stream.concat(Stream.make("\n")), // flushes a last line without newline
    Stream.mapAccum("", (carry, text) => {
      const lines: Array<string> = []
      let rest = carry + text
      let nl: number
      while ((nl = rest.indexOf("\n")) >= 0) {
        lines.push(rest.slice(0, nl))
        rest = rest.slice(nl + 1)
      }
      while (rest.length > 4096) {
        lines.push(rest.slice(0, 4096))
        rest = rest.slice(4096)
      }
      return [rest, lines] as const
    }),
    Stream.mapConcat((lines) => lines),
    Stream.filter((line) => line.length > 0),
    Stream.runForEach((line) => Effect.logWarning(line)),
    Effect.annotateLogs({ handler: name, stream: "stderr" }),
    Effect.ignore
  )

/** Starts a process in the current scope; releasing it sends SIGTERM to its group, then SIGKILL after `grace`. */
const spawn = (name: string, spec: HandlerSpec, env: Record<string, string>) =>
  Effect.gen(function* () {
    let command = Command.make(spec.command, ...spec.args).pipe(Command.env({ ...spec.env, ...env }))
    if (spec.cwd !== undefined) command = Command.workingDirectory(command, spec.cwd)
    const proc = yield* Command.start(command).pipe(
      Effect.mapError((e) => new HandlerError({ handler: name, reason: "Spawn", detail: `cannot start ${spec.command}: ${e.message}` }))
    )
    yield* Effect.addFinalizer(() =>
      proc.isRunning.pipe(
        Effect.flatMap((running) =>
          running
            ? proc.kill("SIGTERM").pipe(
              Effect.interruptible, // finalizers are uninterruptible; the timeout needs this
              Effect.timeout(spec.killGrace),
              Effect.orElse(() => proc.kill("SIGKILL").pipe(Effect.interruptible, Effect.timeout("5 seconds"))),
              Effect.ignore
            )
            : Effect.void),
        Effect.ignore
      ))
    yield* Effect.forkScoped(logStderr(name, proc.stderr))
    return proc
  })

const exitDetail = (proc: CommandExecutor.Process) =>
  proc.exitCode.pipe(
    Effect.timeout("1 second"),
    Effect.match({
      onFailure: (e) => (e._tag === "TimeoutException" ? "closed its stdout" : `was killed (${e.message.replace(/^.*signal: /, "")})`),
      onSuccess: (code) => `exited with code ${code}`
    })
  )

const frameFor = (id: Codec.CorrelationId, invocation: Invocation): Codec.HandlerRequest => ({
  header: {
    id,
    scope: invocation.scope,
    ...(invocation.user !== undefined ? { user: invocation.user } : {}),
    ...(invocation.peer !== undefined ? { peer: invocation.peer } : {}),
    ...(invocation.handle !== undefined ? { handle: invocation.handle.token, handleSocket: invocation.handle.socket } : {})
  },
  payload: { type: invocation.type, data: invocation.data }
})

/** Frames from a handler's stdout, as typed results; framing violations become HandlerErrors. */
const replies = (name: string, spec: HandlerSpec, stdout: Stream.Stream<Uint8Array, unknown>) => {
  const limits = { maxFrame: spec.maxFrame, maxDepth: Codec.defaultLimits.maxDepth }
  return stdout.pipe(
    Codec.decodeAll(Codec.HandlerReply, limits),
    Stream.mapError((e) =>
      typeof e === "object" && e !== null && "_tag" in e && e._tag === "FrameError" && e instanceof Codec.FrameError
        ? e.reason === "TooLarge"
          ? new HandlerError({ handler: name, reason: "TooLarge", detail: `reply frame too large: ${e.message}` })
          : new HandlerError({ handler: name, reason: "Garbage", detail: `stdout ended inside a frame (${e.length} bytes)` })
        : new HandlerError({ handler: name, reason: "Exited", detail: `reading stdout failed: ${String(e)}` })),
    Stream.mapEffect((reply) =>
      Either.match(reply, {
        onLeft: (e) => Effect.fail(new HandlerError({ handler: name, reason: "Garbage", detail: `bad reply: ${e.message}` })),
        onRight: Effect.succeed
      }))
  )
}

// ---------------------------------------------------------------------------------------------
// Runners

type Runner = (invocation: Invocation) => Effect.Effect<Codec.HandlerReply, HandlerError>

const perRequest = (name: string, spec: HandlerSpec): Effect.Effect<Runner, never, CommandExecutor.CommandExecutor> =>
  Effect.map(Effect.context<CommandExecutor.CommandExecutor>(), (context) => (invocation: Invocation) =>
    Effect.scoped(Effect.gen(function* () {
      const env: Record<string, string> = { UPM_MESSAGE_TYPE: invocation.type }
      if (invocation.handle !== undefined) {
        env.UPM_HANDLE = invocation.handle.token
        env.UPM_HANDLE_SOCKET = invocation.handle.socket
      }
      const proc = yield* spawn(name, spec, env)
      const request = yield* Codec.encodeOne(Codec.HandlerRequest)(frameFor(1, invocation)).pipe(
        Effect.mapError((e) => new HandlerError({ handler: name, reason: "Garbage", detail: `cannot encode request: ${e.message}` }))
      )
      // One frame, then EOF. A handler that exits without reading makes this fail (EPIPE): that is its business.
      yield* Stream.make(request).pipe(Stream.run(proc.stdin), Effect.ignore, Effect.forkScoped)
      const first = yield* replies(name, spec, proc.stdout).pipe(Stream.runHead)
      if (Option.isNone(first)) {
        const how = yield* exitDetail(proc)
        return yield* Effect.fail(new HandlerError({ handler: name, reason: "Exited", detail: `${how} without replying` }))
      }
      return first.value
    })).pipe(
      Effect.timeoutFail({
        duration: spec.timeout,
        onTimeout: () => new HandlerError({ handler: name, reason: "Timeout", detail: `no reply within ${Duration.format(spec.timeout)}; killed` })
      }),
      Effect.provide(context)
    ))

interface Worker {
  readonly send: (frame: Uint8Array) => Effect.Effect<void>
  /** Registers a request due by `deadline` (epoch ms); fails when this process is already gone. */
  readonly register: (id: number, entry: PendingEntry) => Effect.Effect<void, HandlerError>
  readonly unregister: (id: number) => Effect.Effect<void>
  /** Ends this process (it is then restarted); its in-flight requests fail with `error`. */
  readonly stop: (error: HandlerError) => Effect.Effect<void>
}

interface PendingEntry {
  readonly deferred: Deferred.Deferred<Codec.HandlerReply, HandlerError>
  readonly deadline: number
}

type Pending = Option.Option<HashMap.HashMap<number, PendingEntry>>

/** The process is considered stable, and the restart backoff reset, after running this long. */
const STABLE_AFTER = Duration.seconds(10)

const persistent = (name: string, spec: HandlerSpec): Effect.Effect<Runner, never, CommandExecutor.CommandExecutor | Scope.Scope> =>
  Effect.gen(function* () {
    const current = yield* SubscriptionRef.make(Option.none<Worker>())
    const lastExit = yield* Ref.make("it has not started yet")
    const nextId = yield* Ref.make(1)
    const annotate = Effect.annotateLogs({ handler: name })

    /** Runs one process until it exits, misbehaves or is stopped; its in-flight requests fail then. */
    const runOnce = Effect.scoped(Effect.gen(function* () {
      const proc = yield* spawn(name, spec, { UPM_MESSAGE_TYPE: name })
      // Bounded: never more frames waiting than requests allowed in flight.
      const stdin = yield* Queue.bounded<Uint8Array>(spec.concurrency + 1)
      // Frames waiting together go out in one write.
      yield* Stream.fromQueue(stdin).pipe(
        Stream.mapChunks((frames) => Chunk.of<Uint8Array>(Chunk.size(frames) === 1 ? Chunk.unsafeHead(frames) : Buffer.concat([...frames]))),
        Stream.run(proc.stdin),
        Effect.ignore,
        Effect.forkScoped
      )
      const pending = yield* Ref.make<Pending>(Option.some(HashMap.empty()))
      const stopped = yield* Deferred.make<never, HandlerError>()
      const worker: Worker = {
        send: (frame) => Queue.offer(stdin, frame).pipe(Effect.asVoid),
        register: (id, entry) =>
          Ref.modify(pending, (p): readonly [boolean, Pending] =>
            Option.isNone(p) ? [false, p] : [true, Option.some(HashMap.set(p.value, id, entry))]).pipe(
            Effect.flatMap((ok) =>
              ok ? Effect.void : Effect.fail(new HandlerError({ handler: name, reason: "Restarted", detail: "the handler process stopped" })))
          ),
        unregister: (id) => Ref.update(pending, Option.map(HashMap.remove(id))),
        // New requests wait for the next process from now on.
        stop: (error) => SubscriptionRef.set(current, Option.none()).pipe(Effect.zipRight(Deferred.fail(stopped, error)), Effect.asVoid)
      }
      const complete = (reply: Codec.HandlerReply) => {
        const id = reply.header.id
        return Ref.modify(pending, (p) => {
          if (typeof id !== "number" || Option.isNone(p)) return [Option.none(), p] as const
          return [HashMap.get(p.value, id), Option.some(HashMap.remove(p.value, id))] as const
        }).pipe(Effect.flatMap(Option.match({
          onNone: () => Effect.logWarning(`reply for unknown request id ${JSON.stringify(id)} ignored`),
          onSome: (entry) => Deferred.succeed(entry.deferred, reply)
        })))
      }
      // One sweeper per process instead of a timer per request (a timer per request cost more than the rest of
      // the request): requests past their deadline fail with Timeout, and the process counts as hung.
      const tick = Duration.millis(Math.min(1000, Math.max(10, Duration.toMillis(spec.timeout) / 10)))
      const sweep = Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const expired = yield* Ref.modify(pending, (p): readonly [ReadonlyArray<readonly [number, PendingEntry]>, Pending] => {
          if (Option.isNone(p)) return [[], p]
          const late = [...HashMap.filter(p.value, (e) => e.deadline <= now)]
          return [late, late.length === 0 ? p : Option.some(HashMap.removeMany(p.value, late.map(([id]) => id)))]
        })
        if (expired.length === 0) return
        const timeout = new HandlerError({ handler: name, reason: "Timeout", detail: `no reply within ${Duration.format(spec.timeout)}; restarting the handler` })
        yield* worker.stop(new HandlerError({
          handler: name, reason: "Restarted", detail: `restarted: request ${expired.map(([id]) => id).join(", ")} got no reply within ${Duration.format(spec.timeout)}`
        }))
        yield* Effect.forEach(expired, ([, e]) => Deferred.fail(e.deferred, timeout), { discard: true })
      })
      yield* sweep.pipe(Effect.repeat(Schedule.spaced(tick)), Effect.forkScoped)
      yield* SubscriptionRef.set(current, Option.some(worker))
      yield* Effect.logInfo(`handler started (pid ${proc.pid})`)
      const reader = replies(name, spec, proc.stdout).pipe(
        Stream.runForEach(complete),
        Effect.zipRight(Effect.flatMap(exitDetail(proc), (how) =>
          Effect.fail(new HandlerError({ handler: name, reason: "Exited", detail: `the handler ${how}` }))))
      )
      const error = yield* Effect.raceFirst(reader, Deferred.await(stopped)).pipe(Effect.flip)
      yield* SubscriptionRef.set(current, Option.none())
      yield* Ref.set(lastExit, error.detail)
      const inFlight = yield* Ref.getAndSet(pending, Option.none())
      if (Option.isSome(inFlight)) {
        yield* Effect.forEach(HashMap.values(inFlight.value), (e) => Deferred.fail(e.deferred, error), { discard: true })
      }
      yield* Effect.logWarning(`handler stopped: ${error.detail}`)
    }))

    const backoff = yield* Schedule.driver(
      Schedule.exponential(spec.restartBase).pipe(Schedule.union(Schedule.spaced(spec.restartMax)))
    )
    const supervise = Effect.gen(function* () {
      while (true) {
        const started = yield* Clock.currentTimeMillis
        yield* runOnce.pipe(Effect.catchAll((e) =>
          Ref.set(lastExit, e.detail).pipe(Effect.zipRight(Effect.logWarning(`handler failed: ${e.detail}`)))))
        if ((yield* Clock.currentTimeMillis) - started >= Duration.toMillis(STABLE_AFTER)) yield* backoff.reset
        yield* backoff.next(undefined).pipe(Effect.ignore)
      }
    }).pipe(annotate)
    yield* Effect.forkScoped(supervise)

    const unavailable = () =>
      Effect.map(Ref.get(lastExit), (why) =>
        new HandlerError({ handler: name, reason: "Unavailable", detail: `not running within ${Duration.format(spec.timeout)} (${why})` }))

    return (invocation: Invocation) =>
      Effect.gen(function* () {
        // Fast path: the process is up. Otherwise wait for the supervisor to (re)start it, at most `timeout`.
        const up = yield* SubscriptionRef.get(current)
        const worker = Option.isSome(up) ? up.value : yield* current.changes.pipe(
          Stream.filterMap((w) => w),
          Stream.runHead,
          Effect.flatten,
          Effect.timeout(spec.timeout),
          Effect.catchAll(() => Effect.flatMap(unavailable(), Effect.fail))
        )
        const id = yield* Ref.getAndUpdate(nextId, (n) => (n >= Number.MAX_SAFE_INTEGER ? 1 : n + 1))
        const request = yield* Codec.encodeOne(Codec.HandlerRequest)(frameFor(id, invocation)).pipe(
          Effect.mapError((e) => new HandlerError({ handler: name, reason: "Garbage", detail: `cannot encode request: ${e.message}` }))
        )
        const deferred = yield* Deferred.make<Codec.HandlerReply, HandlerError>()
        const now = yield* Clock.currentTimeMillis
        yield* worker.register(id, { deferred, deadline: now + Duration.toMillis(spec.timeout) })
        return yield* worker.send(request).pipe(
          Effect.zipRight(Deferred.await(deferred)),
          Effect.ensuring(worker.unregister(id))
        )
      })
  })

/** Bounds a runner: `concurrency` at once, `queue` more waiting at most `timeout`, the rest refused. */
const admit = (name: string, spec: HandlerSpec, run: Runner) =>
  Effect.gen(function* () {
    const slots = yield* Effect.makeSemaphore(spec.concurrency)
    const admitted = yield* Ref.make(0)
    const busy = (detail: string) => new HandlerError({ handler: name, reason: "Busy", detail })
    return (invocation: Invocation): Effect.Effect<Codec.HandlerReply, HandlerError> =>
      Effect.acquireUseRelease(
        Ref.modify(admitted, (n): readonly [boolean, number] => (n >= spec.concurrency + spec.queue ? [false, n] : [true, n + 1])),
        (ok) =>
          ok
            // Fast path: a free slot now; otherwise wait for one, at most `timeout`.
            ? slots.withPermitsIfAvailable(1)(run(invocation)).pipe(
              Effect.flatMap(Option.match({
                onSome: Effect.succeed,
                onNone: () =>
                  Effect.uninterruptibleMask((restore) =>
                    restore(slots.take(1).pipe(Effect.timeoutOption(spec.timeout))).pipe(
                      Effect.flatMap(Option.match({
                        onNone: () => Effect.fail(busy(`no free slot within ${Duration.format(spec.timeout)} (${spec.concurrency} running)`)),
                        onSome: () => restore(run(invocation)).pipe(Effect.ensuring(slots.release(1)))
                      }))
                    ))
              }))
            )
            : Effect.fail(busy(`too many requests (${spec.concurrency} running, ${spec.queue} waiting); try again later`)),
        (ok) => (ok ? Ref.update(admitted, (n) => n - 1) : Effect.void)
      )
  })

// ---------------------------------------------------------------------------------------------
// Layers

export const make = (config: HandlersConfig) =>
  Effect.gen(function* () {
    const runners = new Map<string, Runner>()
    for (const [type, spec] of Object.entries(config)) {
      const run = spec.mode === "persistent" ? yield* persistent(type, spec) : yield* perRequest(type, spec)
      runners.set(type, yield* admit(type, spec, run))
    }
    return Handlers.of({
      spec: (type) => Option.fromNullable(config[type]),
      call: (invocation) => {
        const run = runners.get(invocation.type)
        return run === undefined
          ? Effect.fail(new HandlerError({ handler: invocation.type, reason: "NoHandler", detail: `no handler for type ${invocation.type}` }))
          : run(invocation)
      }
    })
  })

/** Handlers from the server config; persistent ones start now and stop with the layer. */
export const layer = (config: HandlersConfig): Layer.Layer<Handlers, never, CommandExecutor.CommandExecutor> =>
  Layer.scoped(Handlers, make(config))

/** No handlers: every type is answered by the built-ins or "no handler for type X". */
export const layerNone: Layer.Layer<Handlers> = Layer.succeed(Handlers, Handlers.of({
  spec: () => Option.none(),
  call: (invocation) =>
    Effect.fail(new HandlerError({ handler: invocation.type, reason: "NoHandler", detail: `no handler for type ${invocation.type}` }))
}))
