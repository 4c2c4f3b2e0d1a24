/**
 * `upm peers status [--server HOST:PORT] [--json]`: the server's view of its peers — reachability, the last
 * completed anti-entropy round, lag (releases the peer lacked then), behind (releases we lacked, being pulled),
 * and release conflicts (one release, two contents; the first sealed stays). Asked with the sync query
 * `?peers` (anonymous, like every read; it names no secret). See docs/peers.md.
 */
import { Command } from "@effect/cli"
import { lazy, readOptions } from "./options.js"

export const status = Command.make("status", readOptions, lazy(() => import("./run/peers.js"), (m) => m.status)
).pipe(Command.withDescription("Each peer's reachability, last sync, lag, and release conflicts"))

export const peers = Command.make("peers").pipe(
  Command.withDescription("The server's peers (docs/peers.md)"),
  Command.withSubcommands([status])
)
