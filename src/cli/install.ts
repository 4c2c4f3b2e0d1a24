/** `upm install [owner/name@range …] [--into DIR] [--frozen]` (implementation: run/install.ts). */
import { Args, Command, HelpDoc, Options } from "@effect/cli"
import { Effect, Either } from "effect"
import { parseIdentifier } from "../domain/Package.js"
import { json, lazy, server, verbose } from "./options.js"

export const installConfig = {
  packages: Args.text({ name: "owner/name[@range]" }).pipe(
    Args.mapEffect((text) =>
      Either.match(parseIdentifier(text), {
        onLeft: (e) => Effect.fail(HelpDoc.p(`"${text}": ${e.detail} (write owner/name or owner/name@range, e.g. alice/hello@^1.0.0)`)),
        onRight: Effect.succeed
      })),
    Args.repeated,
    Args.withDescription("packages to add (or update); none: install what upm.json (or upm.lock) asks for")
  ),
  into: Options.directory("into").pipe(Options.optional, Options.withDescription("install into this directory instead of ./upm_modules")),
  frozen: Options.boolean("frozen").pipe(Options.withDescription("install exactly what upm.lock pins; fail instead of changing it (for CI)")),
  server,
  json,
  verbose
}

export const install = Command.make("install", installConfig, lazy(() => import("./run/install.js"), (m) => m.install)).pipe(
  Command.withDescription("Install packages and their dependencies into upm_modules/, verified, and write upm.lock")
)
