/** The `upm` command: every subcommand is its own module in this folder. */
import { Command } from "@effect/cli"
import { serve } from "./serve.js"
import { store } from "./store.js"
import { queue } from "./queue.js"
import { receive, send } from "./send.js"
import { user } from "./user.js"

export const VERSION = "0.1.0"

export const upm = Command.make("upm").pipe(
  Command.withDescription("upm: a self-hostable package server and its client"),
  Command.withSubcommands([serve, store, send, receive, queue, user])
)

export const run = Command.run(upm, { name: "upm", version: VERSION })
