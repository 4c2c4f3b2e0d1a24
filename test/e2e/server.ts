/**
 * Runs `node bin/upm.js serve` as a real process for end-to-end tests: port 0, the bound address read from the
 * `message=listening … port=N` log line on stderr. Scoped: the process gets SIGTERM when the scope closes,
 * SIGKILL if it is still there 5 s later. Reusable by any e2e test (CLI tests point `--server` at `address`).
 *
 *   const server = yield* spawnServer({ store: `fs:${dir}` })
 *   // … talk to 127.0.0.1:server.port …
 *   yield* server.kill("SIGKILL") // crash it
 *   const code = yield* server.exitCode
 */
import { Command, type CommandExecutor } from "@effect/platform"
import { Data, Duration, Effect, Option, type Scope, Stream, SubscriptionRef } from "effect"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

/** The repository root, and the CLI entry point the tests run (built into dist/ by test/globalSetup.ts). */
export const ROOT = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "..", "..")
export const BIN = Path.join(ROOT, "bin", "upm.js")

export class ServerStartError extends Data.TaggedError("ServerStartError")<{
  readonly detail: string
  readonly log: string
}> {
  override get message() {
    return `${this.detail}\n--- server log ---\n${this.log}`
  }
}

export interface ServerProcess {
  readonly host: string
  readonly port: number
  /** `host:port`, as the client's `--server` takes it. */
  readonly address: string
  readonly pid: number
  /** Sends a signal (SIGTERM, SIGINT, SIGKILL…). */
  readonly kill: (signal: NodeJS.Signals) => Effect.Effect<void>
  /** Waits for the process to exit; its code (a signal death is 128 + signal number). */
  readonly exitCode: Effect.Effect<number>
  /** Everything the server logged on stderr so far. */
  readonly log: Effect.Effect<string>
  /** Waits until a log line contains `text` (and returns it), or fails when the server exits or `timeout` passes. */
  readonly waitForLog: (text: string, timeout?: Duration.DurationInput) => Effect.Effect<string, ServerStartError>
}

export interface SpawnOptions {
  /** `--store` (e.g. `fs:/tmp/x`); none: the default `fs:./data` in `cwd`. */
  readonly store?: string
  /** `--port` (default 0: any free port, read from the log). */
  readonly port?: number
  /** More arguments after `serve`. */
  readonly args?: ReadonlyArray<string>
  /** Extra environment (UPM_HOST, …); the parent's environment is inherited. */
  readonly env?: Record<string, string>
  readonly cwd?: string
  /** How long to wait for the `listening` line (default 30 s: a loaded CI machine starts node slowly). */
  readonly startTimeout?: Duration.DurationInput
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 }

export const spawnServer = (
  options: SpawnOptions = {}
): Effect.Effect<ServerProcess, ServerStartError, Scope.Scope | CommandExecutor.CommandExecutor> =>
  Effect.gen(function* () {
    const args = [
      BIN, "serve", "--port", String(options.port ?? 0),
      ...(options.store !== undefined ? ["--store", options.store] : []),
      ...(options.args ?? [])
    ]
    let command = Command.make(process.execPath, ...args).pipe(Command.env({ ...options.env }))
    if (options.cwd !== undefined) command = Command.workingDirectory(command, options.cwd)
    const proc = yield* Command.start(command).pipe(
      Effect.catchAll((e) => Effect.fail(new ServerStartError({ detail: `cannot start the server: ${e.message}`, log: "" })))
    )
    yield* Effect.addFinalizer(() =>
      proc.kill("SIGTERM").pipe(
        Effect.interruptible, // finalizers are uninterruptible: the timeout needs this
        Effect.timeout("5 seconds"),
        Effect.orElse(() => proc.kill("SIGKILL")),
        Effect.ignore
      ))
    // What the server said on stderr, and its exit code once it exited.
    const output = yield* SubscriptionRef.make<{ readonly lines: ReadonlyArray<string>; readonly exit: Option.Option<number> }>(
      { lines: [], exit: Option.none() }
    )
    const exitCode = proc.exitCode.pipe(
      Effect.map(Number),
      Effect.catchAll((e) => {
        const signal = /signal: (SIG[A-Z]+)/.exec(e.message)?.[1]
        return Effect.succeed(signal !== undefined && signal in SIGNALS ? 128 + (SIGNALS[signal] ?? 0) : -1)
      })
    )
    yield* proc.stderr.pipe(
      Stream.decodeText(),
      Stream.splitLines,
      Stream.runForEach((line) => SubscriptionRef.update(output, (o) => ({ ...o, lines: [...o.lines, line] }))),
      Effect.ignore,
      Effect.zipRight(Effect.flatMap(exitCode, (code) => SubscriptionRef.update(output, (o) => ({ ...o, exit: Option.some(code) })))),
      Effect.forkScoped
    )
    yield* proc.stdout.pipe(Stream.runDrain, Effect.ignore, Effect.forkScoped)
    const log = Effect.map(SubscriptionRef.get(output), (o) => o.lines.join("\n"))

    const waitForLog = (text: string, timeout: Duration.DurationInput = "30 seconds") =>
      output.changes.pipe(
        Stream.filter((o) => Option.isSome(o.exit) || o.lines.some((l) => l.includes(text))),
        Stream.runHead,
        Effect.flatMap(Option.match({
          onNone: () => Effect.fail("ended"),
          onSome: (o) => {
            const found = o.lines.find((l) => l.includes(text))
            return found !== undefined ? Effect.succeed(found) : Effect.fail(`the server exited (code ${Option.getOrElse(o.exit, () => -1)}) before logging "${text}"`)
          }
        })),
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () => `no "${text}" in the server log within ${Duration.format(Duration.decode(timeout))}`
        }),
        Effect.catchAll((detail) => Effect.flatMap(log, (l) => Effect.fail(new ServerStartError({ detail, log: l }))))
      )

    const listening = yield* waitForLog("message=listening", options.startTimeout ?? "30 seconds")
    const port = Number(/\bport=(\d+)/.exec(listening)?.[1] ?? NaN)
    const host = /\bhost=(\S+)/.exec(listening)?.[1] ?? "127.0.0.1"
    if (!Number.isInteger(port) || port <= 0) {
      return yield* Effect.fail(new ServerStartError({ detail: `cannot read the port from: ${listening}`, log: yield* log }))
    }
    return {
      host,
      port,
      address: `${host}:${port}`,
      pid: proc.pid,
      // proc.kill would also wait for the exit; a test often wants to watch the shutdown instead
      kill: (signal) => Effect.sync(() => { process.kill(proc.pid, signal) }).pipe(Effect.ignore),
      exitCode: output.changes.pipe(
        Stream.filterMap((o) => o.exit),
        Stream.runHead,
        Effect.map(Option.getOrElse(() => -1))
      ),
      log,
      waitForLog
    }
  })
