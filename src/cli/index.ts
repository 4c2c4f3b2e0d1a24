/**
 * The `upm` command: every subcommand is its own module in this folder. `main` is what src/main.ts runs:
 * the parsed command with failures reported once (src/cli/errors.ts) and turned into the exit code.
 */
import { Command } from "@effect/cli"
import type { Effect } from "effect"
import { config } from "./config.js"
import { reportFailures } from "./errors.js"
import { install } from "./install.js"
import { keyCommand, keygen, trust, whoami } from "./keys.js"
import { exportCommand, fsck, gc } from "./local.js"
import { propose, publish } from "./publish.js"
import { info, match, search, versions } from "./query.js"
import { serve } from "./serve.js"
import { store } from "./store.js"
import { queue } from "./queue.js"
import { receive, send } from "./send.js"
import { user } from "./user.js"
import { peers } from "./peers.js"
import { ownerCommand } from "./owner.js"

export const VERSION = "0.1.0"

export const upm = Command.make("upm").pipe(
  Command.withDescription("upm: a self-hostable package server and its client"),
  Command.withSubcommands([
    serve, keygen, whoami, keyCommand, publish, install, match, versions, search, info, propose, trust, ownerCommand,
    fsck, exportCommand, gc, config,
    store, send, receive, queue, user, peers
  ])
)

export const run = Command.run(upm, { name: "upm", version: VERSION })

/** `--verbose` anywhere on the command line, or UPM_VERBOSE=1: failures show their full cause. */
export const isVerbose = (argv: ReadonlyArray<string>): boolean =>
  argv.includes("--verbose") || process.env["UPM_VERBOSE"] === "1"

/** The program for `argv`: runs the command; a failure is printed once and becomes `Reported` (its exit code). */
export const main = (argv: ReadonlyArray<string>) => {
  const program = run(argv)
  return reportFailures(isVerbose(argv))(program) as Effect.Effect<void, import("./errors.js").Reported, Effect.Effect.Context<typeof program>>
}

export { exitCodeOf } from "./errors.js"
