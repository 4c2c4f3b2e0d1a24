/**
 * `upm store …`: maintenance of a server's object store.
 *
 *   upm store copy --from fs:/var/lib/upm/store --to postgres://upm@db/upm
 *
 * copies every object and ref between any two backends (StoreCopy.ts: resumable, refs last, verified).
 */
import { Command, Options } from "@effect/cli"
import { Console, Context, Effect, Layer } from "effect"
import { ObjectStore } from "../services/ObjectStore.js"
import { copyStore, type CopyProgress } from "../services/StoreCopy.js"
import { describeStoreSpec, layerFromSpec, type StoreSpec, StoreSpecFromString } from "../services/StoreConfig.js"

const SPEC_HELP = "fs:PATH | sqlite:PATH | postgres:URL | memory"

const from = Options.text("from").pipe(
  Options.withSchema(StoreSpecFromString),
  Options.withDescription(`the store to copy from (${SPEC_HELP})`)
)
const to = Options.text("to").pipe(
  Options.withSchema(StoreSpecFromString),
  Options.withDescription(`the store to copy into, created if needed (${SPEC_HELP})`)
)

/** Opens the store a spec names for the current scope. */
const open = (spec: StoreSpec) => Effect.map(Layer.build(layerFromSpec(spec)), Context.get(ObjectStore))

const showProgress = (p: CopyProgress) => Console.error(`${p.phase}: ${p.done}/${p.total}`)

/** A failure as one line for a person: its tag, its fields, and its cause's message. */
const describeError = (e: unknown): string => {
  if (typeof e !== "object" || e === null) return String(e)
  const tag = "_tag" in e ? String(e._tag) : "Error"
  const fields = Object.entries(e).filter(([k]) => k !== "_tag" && k !== "cause")
    .map(([k, v]) => ` ${k}=${String(v)}`).join("")
  const cause = "cause" in e && e.cause instanceof Error ? `: ${e.cause.message}` : ""
  return `${tag}${fields}${cause}`
}

export const copy = Command.make("copy", { from, to }, ({ from, to }) =>
  Effect.scoped(Effect.gen(function* () {
    yield* Console.error(`copying ${describeStoreSpec(from)} → ${describeStoreSpec(to)}`)
    const source = yield* open(from)
    const target = yield* open(to)
    const report = yield* copyStore(source, target, { onProgress: showProgress })
    yield* Console.log(
      `objects: ${report.objects.total} (${report.objects.copied} copied, ${report.objects.alreadyPresent} already there)\n` +
        `refs: ${report.refs.total} (${report.refs.written} written, ${report.refs.unchanged} unchanged)\n` +
        `verified: ${report.verified.objects} objects hash-checked, ${report.verified.refs} refs identical` +
        (report.extraTargetRefs > 0 ? `\nnote: the target has ${report.extraTargetRefs} ref(s) the source does not` : "")
    )
  })).pipe(
    // The edge of the program: a failed copy is one readable line and exit code 1 (it can be run again).
    Effect.catchAll((e) =>
      Console.error(`upm store copy failed: ${describeError(e)}\nrun the same command again to resume`).pipe(
        Effect.zipRight(Effect.sync(() => {
          process.exitCode = 1
        }))
      ))
  )
).pipe(Command.withDescription("Copy every object and ref between two stores, resumably, and verify the copy"))

export const store = Command.make("store").pipe(
  Command.withDescription("Object store maintenance"),
  Command.withSubcommands([copy])
)
