/**
 * The only runMain: parses the command line and runs the chosen command with the Node platform.
 * Logs are logfmt lines on stderr (stdout stays for command output); `upm --log-level debug serve` filters them.
 * A failure is reported once, on stderr, as `upm: <message>`.
 */
import { ValidationError } from "@effect/cli"
// Subpaths, not the package index: the index loads every Node module of the platform (HTTP, workers…).
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Console, Effect, Exit, Logger, Option } from "effect"
import { exitCodeOf, main } from "./cli/index.js"
import { Reported } from "./cli/errors.js"

const logfmtToStderr = Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))

const report = (cause: Cause.Cause<unknown>) => {
  if (Cause.isInterruptedOnly(cause)) return Effect.void
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) {
    const e = failure.value
    if (ValidationError.isValidationError(e)) return Effect.void // @effect/cli printed it already
    if (e instanceof Reported) return Effect.void // src/cli/errors.ts printed it already
    return Console.error(`upm: ${e instanceof Error ? e.message : String(e)}`)
  }
  return Console.error(`upm: internal error\n${Cause.pretty(cause)}`)
}

/** The subcommand named on the command line (skipping @effect/cli's global options and their values). */
const subcommand = (argv: ReadonlyArray<string>): string | undefined => {
  const args = argv.slice(2)
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? ""
    if (a === "--log-level" || a === "--completions") i++
    else if (!a.startsWith("-")) return a
  }
  return undefined
}

/**
 * `upm serve` stops on SIGINT/SIGTERM by design: after its graceful shutdown it exits 0 (what systemd and
 * container runtimes expect), where an interrupted client command exits 130.
 */
const exitCode = (exit: Exit.Exit<unknown, unknown>) =>
  Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause) && subcommand(process.argv) === "serve" ? 0 : exitCodeOf(exit)

// Failures are reported once by the CLI itself (src/cli/errors.ts), which also picks the exit code.
main(process.argv).pipe(
  Effect.tapErrorCause(report),
  Effect.provide(NodeContext.layer),
  Effect.provide(logfmtToStderr),
  NodeRuntime.runMain({
    disablePrettyLogger: true,
    disableErrorReporting: true,
    // The exit code documented in docs/cli.md (src/cli/errors.ts).
    teardown: (exit, onExit) => onExit(exitCode(exit))
  })
)
