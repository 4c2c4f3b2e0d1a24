/** Commands on the local store (UPM_HOME/store): `fsck`, `export`, `gc` (implementations: run/local.ts). */
import { Args, Command, HelpDoc, Options } from "@effect/cli"
import { Effect, Either } from "effect"
import { ObjectHash } from "../domain/ObjectHash.js"
import { type PackageName, parseIdentifier, type Range } from "../domain/Package.js"
import { json, lazy, server, verbose } from "./options.js"

const load = () => import("./run/local.js")

export const fsckConfig = { json, verbose }
export const fsck = Command.make("fsck", fsckConfig, lazy(load, (m) => m.fsck)).pipe(
  Command.withDescription("Check the local store: every object's hash and structure, every release's graph and signature")
)

export const gcConfig = { dryRun: Options.boolean("dry-run").pipe(Options.withDescription("only say what would be removed")), json, verbose }
export const gc = Command.make("gc", gcConfig, lazy(load, (m) => m.gc)).pipe(
  Command.withDescription("Remove objects of the local store that no release or ref reaches")
)

export type RefArg =
  | { readonly _tag: "Hash"; readonly hash: ObjectHash }
  | { readonly _tag: "Name"; readonly name: PackageName; readonly range: Range | undefined }

export const exportConfig = {
  ref: Args.text({ name: "ref" }).pipe(
    Args.mapEffect((text): Effect.Effect<RefArg, HelpDoc.HelpDoc> => {
      if (/^[0-9a-f]{40}$/i.test(text)) return Effect.succeed({ _tag: "Hash", hash: ObjectHash.make(text.toLowerCase()) })
      return Either.match(parseIdentifier(text), {
        onLeft: (e) => Effect.fail(HelpDoc.p(`"${text}": ${e.detail} (give owner/name[@range] or a release hash)`)),
        onRight: (id): Effect.Effect<RefArg, HelpDoc.HelpDoc> => Effect.succeed({ _tag: "Name", name: id.name, range: id.range })
      })
    }),
    Args.withDescription("owner/name[@range] or a release (tag) hash")
  ),
  format: Options.choice("format", ["tar.gz", "zip", "dir"]).pipe(Options.withDefault("dir" as const), Options.withDescription("tar.gz, zip or dir")),
  out: Options.text("out").pipe(Options.optional, Options.withDescription("output path (default ./<owner>-<name>-<version>[.tar.gz|.zip]); - for stdout")),
  server,
  verbose
}
export const exportCommand = Command.make("export", exportConfig, lazy(load, (m) => m.exportRelease)).pipe(
  Command.withDescription("Write a release's files as a directory, a .tar.gz or a .zip (from the local store, else the server)")
)
