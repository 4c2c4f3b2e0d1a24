/** The read commands: `match`, `versions`, `search`, `info` (implementations: run/query.ts). */
import { Args, Command, HelpDoc } from "@effect/cli"
import { Effect, Either } from "effect"
import { parseIdentifier } from "../domain/Package.js"
import { lazy, readOptions } from "./options.js"

/** `owner/name[@range]`, checked while parsing. */
export const identifier = (name: string, description: string) =>
  Args.text({ name }).pipe(
    Args.withDescription(description),
    Args.mapEffect((text) =>
      Either.match(parseIdentifier(text), {
        onLeft: (e) => Effect.fail(HelpDoc.p(`"${text}": ${e.detail} (write owner/name or owner/name@range, e.g. alice/hello@^1.0.0)`)),
        onRight: Effect.succeed
      }))
  )

const load = () => import("./run/query.js")

export const matchConfig = { ...readOptions, package: identifier("owner/name[@range]", "the package and an optional semver range") }
export const match = Command.make("match", matchConfig, lazy(load, (m) => m.match)).pipe(
  Command.withDescription("The highest version of a package matching a range, and its release hash")
)

export const versionsConfig = { ...readOptions, package: identifier("owner/name", "the package") }
export const versions = Command.make("versions", versionsConfig, lazy(load, (m) => m.versions)).pipe(
  Command.withDescription("Every published version of a package, lowest first")
)

export const searchConfig = { ...readOptions, text: Args.text({ name: "text" }).pipe(Args.withDescription("part of a package name")) }
export const search = Command.make("search", searchConfig, lazy(load, (m) => m.search)).pipe(
  Command.withDescription("Packages whose name contains the text")
)

export const infoConfig = { ...readOptions, package: identifier("owner/name[@version]", "the package, and a version or range (default: the newest)") }
export const info = Command.make("info", infoConfig, lazy(load, (m) => m.info)).pipe(
  Command.withDescription("A release's manifest, signer, hashes and files (verifies its signature)")
)
