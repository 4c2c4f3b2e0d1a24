import { Command } from "@effect/cli"
import { Console } from "effect"

/** `upm serve`: the package server. (The sync-protocol issue replaces this placeholder.) */
export const serve = Command.make("serve", {}, () =>
  Console.log("upm: the server arrives with the sync protocol; nothing to serve yet")
).pipe(Command.withDescription("Run the upm server (sync and message protocols on one TCP port)"))
