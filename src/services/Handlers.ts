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
  Chunk, Clock, Context, Deferred, Duration, Effect, Either, Exit, Layer, Mailbox, Option, ParseResult, Ref, Schedule, Schema,
  type Scope, Stream, SubscriptionRef
} from "effect"
import * as Codec from "../protocol/MessageCodec.js"
import * as Metrics from "./Metrics.js"

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
  /**
   * `call` without a waiting fiber, for the message server's hot path: when the request can be sent at once (a
   * persistent handler that is running, a free slot), it is sent and `onDone` gets its outcome exactly once,
   * later, from the fiber reading the handler's replies (or at once if it fails at once); the result is a
   * function that abandons the request. `None`: nothing was sent (per-request mode, no free slot, the process
   * is restarting); use `call`, which waits or says why not.
   */
  readonly start: (invocation: Invocation, onDone: OnDone) => Effect.Effect<Option.Option<Cancel>>
}>() {}

/** Receives a started request's outcome. Called from another fiber: it must not block. */
export type OnDone = (result: Exit.Exit<Codec.HandlerReply, HandlerError>) => void
/** Abandons a started request: its slot is freed and `onDone` is not called. */
export type Cancel = () => void

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

interface Runner {
  readonly call: (invocation: Invocation) => Effect.Effect<Codec.HandlerReply, HandlerError>
  /** Sends at once if the process is up (see `Handlers.start`); admission is the caller's. */
  readonly start?: (invocation: Invocation, onDone: OnDone) => Effect.Effect<Option.Option<Cancel>>
}

const perRequest = (name: string, spec: HandlerSpec): Effect.Effect<Runner, never, CommandExecutor.CommandExecutor> =>
  Effect.map(Effect.context<CommandExecutor.CommandExecutor>(), (context): Runner => ({ call: (invocation: Invocation) =>
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
    ) }))

/** A request waiting for its reply from a persistent handler process. */
interface PendingEntry {
  readonly done: OnDone
  /** Epoch ms after which the request fails with Timeout. */
  readonly deadline: number
}

interface Worker {
  /**
   * Sends a request frame and calls `resume` with its reply, or with why there will be none. Synchronous: a
   * request costs a Map entry and a place in the stdin batch, no fiber, Deferred or Queue of its own.
   */
  readonly submit: (id: number, frame: Uint8Array, entry: PendingEntry) => void
  /** The request was interrupted: forget it (a late reply is then ignored). */
  readonly forget: (id: number) => void
}

/** The process is considered stable, and the restart backoff reset, after running this long. */
const STABLE_AFTER = Duration.seconds(10)

/** Waits for the next turn of the event loop, so that requests arriving in the same I/O phase share one write. */
const nextTurn = Effect.async<void>((resume) => {
  const timer = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(timer))
})

const persistent = (name: string, spec: HandlerSpec): Effect.Effect<Runner, never, CommandExecutor.CommandExecutor | Scope.Scope> =>
  Effect.gen(function* () {
    const current = yield* SubscriptionRef.make(Option.none<Worker>())
    // The running process, mirrored from `current` for the synchronous fast path, and the next request id.
    let live: Worker | undefined
    let nextId = 1
    const setCurrent = (worker: Worker | undefined) =>
      Effect.suspend(() => {
        live = worker
        return SubscriptionRef.set(current, Option.fromNullable(worker))
      })
    const lastExit = yield* Ref.make("it has not started yet")
    const annotate = Effect.annotateLogs({ handler: name })
    const decodeReply = Codec.decodeMessage(Codec.HandlerReply, { maxFrame: spec.maxFrame, maxDepth: Codec.defaultLimits.maxDepth })

    /** Runs one process until it exits, misbehaves or is stopped; its in-flight requests fail then. */
    const runOnce = Effect.scoped(Effect.gen(function* () {
      const proc = yield* spawn(name, spec, { UPM_MESSAGE_TYPE: name })
      // In-flight requests by id. A plain Map owned by this process's run (the hot path: a Ref of a HashMap and
      // a Deferred per request cost more than the rest of the request); `stopped` is set once, with the error.
      const pending = new Map<number, PendingEntry>()
      let stopped: HandlerError | undefined
      const done = yield* Deferred.make<HandlerError>()
      // When the server stops (this scope closes first), requests still waiting fail instead of hanging.
      yield* Effect.addFinalizer(() => stop(new HandlerError({ handler: name, reason: "Unavailable", detail: "the server is stopping" })))
      const stop = Effect.fnUntraced(function* (error: HandlerError) {
        if (stopped !== undefined) return
        stopped = error
        // New requests wait for the next process from now on.
        yield* setCurrent(undefined)
        const inFlight = [...pending.values()]
        pending.clear()
        for (const entry of inFlight) entry.done(Exit.fail(error))
        yield* Deferred.succeed(done, error)
      })

      // Frames waiting together go out in one write. Bounded: the admission semaphore lets at most `concurrency`
      // requests in flight, and a frame leaves the mailbox before its request can complete.
      const stdin = yield* Mailbox.make<Uint8Array>({ capacity: spec.concurrency + 1 })
      // Once a frame is there, wait for the next turn of the event loop and take what came meanwhile too.
      const batches = stdin.takeAll.pipe(
        Effect.flatMap(([first, end]) =>
          Chunk.isEmpty(first) && end
            ? Effect.fail(Option.none())
            : Effect.map(Effect.zipRight(nextTurn, stdin.clear), (more) => {
              const frames = Chunk.appendAll(first, more)
              return Chunk.of<Uint8Array>(Chunk.size(frames) === 1 ? Chunk.unsafeHead(frames) : Buffer.concat([...frames]))
            }))
      )
      yield* Stream.repeatEffectChunkOption(batches).pipe(Stream.run(proc.stdin), Effect.ignore, Effect.forkScoped)

      const worker: Worker = {
        submit: (id, frame, entry) => {
          if (stopped !== undefined) return entry.done(Exit.fail(new HandlerError({ handler: name, reason: "Restarted", detail: stopped.detail })))
          if (!stdin.unsafeOffer(frame)) {
            return entry.done(Exit.fail(new HandlerError({ handler: name, reason: "Busy", detail: "the handler's input is full" })))
          }
          pending.set(id, entry)
        },
        forget: (id) => {
          pending.delete(id)
        }
      }

      /** Replies from stdout, matched to their requests by `header.id`. Garbage stops this process. */
      const reader = Codec.frameReader(spec.maxFrame)
      const onChunk = (chunk: Chunk.Chunk<Uint8Array>) =>
        Effect.suspend(() => {
          const unknown: Array<unknown> = []
          for (const bytes of chunk) {
            const cut = reader.push(bytes)
            for (const body of cut.frames) {
              const reply = decodeReply(body)
              if (Either.isLeft(reply)) {
                return Effect.fail(new HandlerError({ handler: name, reason: "Garbage", detail: `bad reply: ${reply.left.message}` }))
              }
              const id = reply.right.header.id
              const entry = typeof id === "number" ? pending.get(id) : undefined
              if (entry === undefined || typeof id !== "number") unknown.push(id)
              else {
                pending.delete(id)
                entry.done(Exit.succeed(reply.right))
              }
            }
            if (cut.error !== undefined) {
              return Effect.fail(new HandlerError({ handler: name, reason: "TooLarge", detail: `reply frame too large: ${cut.error.message}` }))
            }
          }
          return unknown.length === 0
            ? Effect.void
            : Effect.logWarning(`reply for unknown request id ${unknown.map((id) => JSON.stringify(id)).join(", ")} ignored`)
        })
      const readReplies = proc.stdout.pipe(
        Stream.mapError((e) => new HandlerError({ handler: name, reason: "Exited", detail: `reading stdout failed: ${String(e)}` })),
        Stream.runForEachChunk(onChunk),
        Effect.zipRight(Effect.suspend(() =>
          Option.match(reader.end(), {
            onNone: () => exitDetail(proc).pipe(
              Effect.flatMap((how) => Effect.fail(new HandlerError({ handler: name, reason: "Exited", detail: `the handler ${how}` })))
            ),
            onSome: (e) => Effect.fail(new HandlerError({ handler: name, reason: "Garbage", detail: `stdout ended inside a frame (${e.length} bytes)` }))
          }))),
        Effect.catchAll(stop)
      )
      yield* Effect.forkScoped(readReplies)

      // One sweeper per process instead of a timer per request (a timer per request cost more than the rest of
      // the request): requests past their deadline fail with Timeout, and the process counts as hung.
      const tick = Duration.millis(Math.min(1000, Math.max(10, Duration.toMillis(spec.timeout) / 10)))
      const sweep = Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const expired: Array<readonly [number, PendingEntry]> = []
        for (const item of pending) if (item[1].deadline <= now) expired.push(item)
        if (expired.length === 0) return
        for (const [id] of expired) pending.delete(id)
        const timeout = new HandlerError({ handler: name, reason: "Timeout", detail: `no reply within ${Duration.format(spec.timeout)}; restarting the handler` })
        for (const [, entry] of expired) entry.done(Exit.fail(timeout))
        yield* stop(new HandlerError({
          handler: name, reason: "Restarted", detail: `restarted: request ${expired.map(([id]) => id).join(", ")} got no reply within ${Duration.format(spec.timeout)}`
        }))
      })
      yield* sweep.pipe(Effect.repeat(Schedule.spaced(tick)), Effect.forkScoped)
      yield* setCurrent(worker)
      yield* Effect.logInfo(`handler started (pid ${proc.pid})`)
      const error = yield* Deferred.await(done)
      yield* Ref.set(lastExit, error.detail)
      yield* Effect.logWarning(`handler stopped: ${error.detail}`)
    }))

    const backoff = yield* Schedule.driver(
      Schedule.exponential(spec.restartBase).pipe(Schedule.union(Schedule.spaced(spec.restartMax)))
    )
    const supervise = Effect.gen(function* () {
      for (let run = 0; ; run++) {
        if (run > 0) yield* Metrics.countHandlerRestart(name)
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
    const waitForWorker = current.changes.pipe(
      Stream.filterMap((w) => w),
      Stream.runHead,
      Effect.flatten,
      Effect.timeout(spec.timeout),
      Effect.catchAll(() => Effect.flatMap(unavailable(), Effect.fail))
    )

    /** Encodes and sends; `done` gets the outcome. Returns the request's id, or nothing if it failed at once. */
    const submit = (worker: Worker, invocation: Invocation, now: number, done: OnDone): number | undefined => {
      const id = nextId
      nextId = nextId >= Number.MAX_SAFE_INTEGER ? 1 : nextId + 1
      const request = Codec.encodeJson(frameFor(id, invocation))
      if (Either.isLeft(request)) {
        done(Exit.fail(new HandlerError({ handler: name, reason: "Garbage", detail: `cannot encode request: ${request.left.message}` })))
        return undefined
      }
      worker.submit(id, request.right, { done, deadline: now + Duration.toMillis(spec.timeout) })
      return id
    }
    const callOn = (worker: Worker, invocation: Invocation) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.async<Codec.HandlerReply, HandlerError>((resume) => {
          const id = submit(worker, invocation, now, resume)
          return Effect.sync(() => {
            if (id !== undefined) worker.forget(id)
          })
        }))

    return {
      call: (invocation) =>
        Effect.suspend(() =>
          // Fast path: the process is up. Otherwise wait for the supervisor to (re)start it, at most `timeout`.
          live !== undefined ? callOn(live, invocation) : Effect.flatMap(waitForWorker, (worker) => callOn(worker, invocation))),
      start: (invocation, onDone) =>
        Effect.suspend(() => {
          const worker = live
          if (worker === undefined) return Effect.succeed(Option.none())
          return Effect.map(Clock.currentTimeMillis, (now) => {
            const id = submit(worker, invocation, now, onDone)
            return Option.some(() => {
              if (id !== undefined) worker.forget(id)
            })
          })
        })
    } satisfies Runner
  })

/**
 * A counting limit that callbacks can release: `tryTake` and `release` are synchronous (a started request
 * gives its slot back from the fiber that reads its reply), `take` waits. Waiters are woken on release and take
 * the slot when they run, so an interrupted waiter never holds one.
 */
const makeSlots = (permits: number) => {
  let taken = 0
  const waiters = new Set<() => void>()
  const tryTake = () => {
    if (taken >= permits) return false
    taken++
    return true
  }
  const take: Effect.Effect<void> = Effect.async<void>((resume) => {
    if (tryTake()) return resume(Effect.void)
    const observer = () => {
      if (taken >= permits) return
      waiters.delete(observer)
      resume(Effect.suspend(() => (tryTake() ? Effect.void : take)))
    }
    waiters.add(observer)
    return Effect.sync(() => {
      waiters.delete(observer)
    })
  })
  const release = () => {
    taken--
    // Wake as many waiters as there are free slots (each takes its slot when it runs).
    let free = permits - taken
    for (const wake of waiters) {
      if (free-- <= 0) break
      wake()
    }
  }
  return { tryTake, take, release }
}

/** Bounds a runner: `concurrency` at once, `queue` more waiting at most `timeout`, the rest refused. */
const admit = (name: string, spec: HandlerSpec, runner: Runner) =>
  Effect.sync(() => {
    const slots = makeSlots(spec.concurrency)
    // Requests admitted (running or waiting): a plain counter of this runner, changed only synchronously.
    let admitted = 0
    const leave = Effect.sync(() => {
      admitted--
    })
    const release = Effect.sync(slots.release)
    const busy = (detail: string) => new HandlerError({ handler: name, reason: "Busy", detail })
    const waitForSlot = (invocation: Invocation) =>
      Effect.uninterruptibleMask((restore) =>
        restore(slots.take.pipe(Effect.timeoutOption(spec.timeout))).pipe(
          Effect.flatMap(Option.match({
            onNone: () => Effect.fail(busy(`no free slot within ${Duration.format(spec.timeout)} (${spec.concurrency} running)`)),
            onSome: () => restore(runner.call(invocation)).pipe(Effect.ensuring(release))
          }))
        ))
    const call = (invocation: Invocation): Effect.Effect<Codec.HandlerReply, HandlerError> =>
      Effect.suspend(() => {
        if (admitted >= spec.concurrency + spec.queue) {
          return Effect.fail(busy(`too many requests (${spec.concurrency} running, ${spec.queue} waiting); try again later`))
        }
        admitted++
        // Fast path: a free slot now; otherwise wait for one, at most `timeout`.
        return (slots.tryTake() ? Effect.ensuring(runner.call(invocation), release) : waitForSlot(invocation)).pipe(Effect.ensuring(leave))
      })
    const startWith = runner.start
    const start = startWith === undefined
      ? () => Effect.succeed(Option.none<Cancel>())
      : (invocation: Invocation, onDone: OnDone): Effect.Effect<Option.Option<Cancel>> =>
        Effect.suspend(() => {
          if (admitted >= spec.concurrency + spec.queue || !slots.tryTake()) return Effect.succeed(Option.none())
          admitted++
          let finished = false
          const finish = () => {
            if (finished) return false
            finished = true
            admitted--
            slots.release()
            return true
          }
          return Effect.map(
            startWith(invocation, (result) => {
              if (finish()) onDone(result)
            }),
            Option.match({
              onNone: () => {
                finish()
                return Option.none()
              },
              onSome: (cancel) =>
                Option.some(() => {
                  if (finish()) cancel()
                })
            })
          )
        })
    return { call, start }
  })

/** Counts each request by outcome and times it (upm_handler_requests_total, upm_handler_duration_seconds). */
const metered = (type: string, runner: Required<Runner>): Required<Runner> => {
  const meter = Metrics.handlerMeter(type)
  return {
    call: (invocation) => meter.measure(runner.call(invocation)),
    start: (invocation, onDone) => {
      const started = performance.now()
      return runner.start(invocation, (result) => {
        meter.unsafeDone(Exit.isSuccess(result), (performance.now() - started) / 1000)
        onDone(result)
      })
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Layers

export const make = (config: HandlersConfig) =>
  Effect.gen(function* () {
    const runners = new Map<string, Required<Runner>>()
    for (const [type, spec] of Object.entries(config)) {
      const runner = spec.mode === "persistent" ? yield* persistent(type, spec) : yield* perRequest(type, spec)
      runners.set(type, metered(type, yield* admit(type, spec, runner)))
    }
    return Handlers.of({
      spec: (type) => Option.fromNullable(config[type]),
      call: (invocation) => {
        const runner = runners.get(invocation.type)
        return runner === undefined
          ? Effect.fail(new HandlerError({ handler: invocation.type, reason: "NoHandler", detail: `no handler for type ${invocation.type}` }))
          : runner.call(invocation)
      },
      start: (invocation, onDone) => {
        const runner = runners.get(invocation.type)
        return runner === undefined ? Effect.succeed(Option.none()) : runner.start(invocation, onDone)
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
    Effect.fail(new HandlerError({ handler: invocation.type, reason: "NoHandler", detail: `no handler for type ${invocation.type}` })),
  start: () => Effect.succeed(Option.none())
}))
