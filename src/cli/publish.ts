/** `upm publish [dir]` and `upm propose [dir]` (implementations: run/publish.ts). */
import { Args, Command } from "@effect/cli"
import { json, key, lazy, server, verbose } from "./options.js"

const load = () => import("./run/publish.js")

export const publishConfig = {
  dir: Args.directory({ name: "dir", exists: "yes" }).pipe(Args.withDefault("."), Args.withDescription("the package directory (default: .)")),
  key,
  server,
  json,
  verbose
}
export const publish = Command.make("publish", publishConfig, lazy(load, (m) => m.publish)).pipe(
  Command.withDescription("Sign the package in a directory (upm.json at its root) and publish it to the server")
)
export const propose = Command.make("propose", publishConfig, lazy(load, (m) => m.propose)).pipe(
  Command.withDescription("Propose a package to the server's maintainer (publish through the server's propose policy)")
)
