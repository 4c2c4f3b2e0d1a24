/** `upm publish [dir]` and `upm propose [dir]`. */
import { type Command, Prompt } from "@effect/cli"
import type { publishConfig } from "../publish.js"
import type { FileSystem, Path, Terminal } from "@effect/platform"
import { Clock, Console, Effect, Option, Redacted } from "effect"
import type { PassphrasePrompt } from "../../services/Keys.js"
import { publish as runPublish, type PublishResult } from "../../services/Publish.js"
import { clientLayer, formatBytes, isTty, note, printJson } from "./client.js"
import { bar, transferPayload } from "./progress.js"


/** Asks for a key's passphrase on the terminal; without a terminal there is no one to ask. */
export const passphrasePrompt = Effect.gen(function* () {
  const context = yield* Effect.context<Terminal.Terminal | FileSystem.FileSystem | Path.Path>()
  const prompt: PassphrasePrompt = (file, attempt) =>
    process.stdin.isTTY !== true
      ? Effect.succeed(Option.none())
      : Prompt.run(Prompt.password({ message: `passphrase for ${file}${attempt > 1 ? " (try again)" : ""}` })).pipe(
        Effect.map((r) => Option.some(Redacted.make(Redacted.value(r)))),
        Effect.provide(context),
        Effect.orElseSucceed(() => Option.none())
      )
  return prompt
})

const show = (r: PublishResult, asJson: boolean) =>
  asJson
    ? printJson(r)
    : Effect.gen(function* () {
      const what = `${r.name}@${r.version}`
      if (r.status === "Unchanged") return yield* Console.log(`${what} is already published with this content (${r.tag}); nothing to do`)
      yield* Console.log(`${r.status === "Queued" ? "proposed" : "published"} ${what} ${r.tag}`)
      yield* note(
        `  ${r.files} files, ${formatBytes(r.bytes)}; sent ${r.sent.objects} objects (${formatBytes(r.sent.bytes)}); signed by ${r.signer}` +
          (r.status === "Queued" ? `\n  the server queued it for review: ${r.message}` : "")
      )
    })

const run = (o: { readonly dir: string; readonly key: Option.Option<string>; readonly server: Option.Option<string>; readonly json: boolean }) =>
  Effect.scoped(Effect.gen(function* () {
    const passphrase = yield* passphrasePrompt
    const progress = yield* bar("publishing {bar} {value}/{total} objects | {bytes} | {rate}")
    const start = yield* Clock.currentTimeMillis
    const result = yield* runPublish({
      dir: o.dir,
      keyFlag: o.key,
      passphrase,
      onProgress: (p) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) => progress.update(p.objects, p.known, transferPayload(p.bytes, now - start)))
    })
    return result
  })).pipe(
    Effect.flatMap((r) => show(r, o.json)),
    Effect.provide(clientLayer(o.server))
  )

export const publish = (o: Command.Command.ParseConfig<typeof publishConfig>) => run(o)

export const propose = (o: Command.Command.ParseConfig<typeof publishConfig>) =>
  Effect.gen(function* () {
    // A conversation needs the message protocol's client; without one the proposal goes through the same push
    // flow, and a policy that queues it says so in the result.
    if (isTty()) yield* note("proposing: the server's policy decides (it may accept, queue or refuse the release)")
    yield* run(o)
  })
