/** `upm publish [dir]` and `upm propose [dir]`. */
import { type Command, Prompt } from "@effect/cli"
import type { publishConfig } from "../publish.js"
import { type FileSystem, type Path, Terminal } from "@effect/platform"
import { Clock, Console, Effect, Option, Redacted } from "effect"
import type { PassphrasePrompt } from "../../services/Keys.js"
import type { ConversationCallbacks } from "../../services/MessageClient.js"
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
    const conversation = yield* conversationCallbacks
    const progress = yield* bar("publishing {bar} {value}/{total} objects | {bytes} | {rate}", transferPayload(0, 0))
    const start = yield* Clock.currentTimeMillis
    const result = yield* runPublish({
      dir: o.dir,
      keyFlag: o.key,
      passphrase,
      conversation,
      onConversationUnavailable: (e) => note(`(the server's policy cannot talk with you: ${e.message})`),
      onProgress: (p) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) => progress.update(p.objects, p.known, transferPayload(p.bytes, now - start)))
    })
    return result
  })).pipe(
    Effect.flatMap((r) => show(r, o.json)),
    Effect.provide(clientLayer(o.server))
  )

/**
 * How the server's propose policy talks with the user during a publish (Publish opens the message session
 * beside the sync connection): what the maintainer's handler sends (`upm send`) is printed; what it asks
 * (`upm receive`) is read from the terminal (or a line of stdin; end of input answers "").
 */
const conversationCallbacks = Effect.map(Terminal.Terminal, (terminal): ConversationCallbacks => ({
  onSend: (message) => note(`server: ${message}`),
  onReceive: (prompt) =>
    Console.error(`server asks: ${prompt}`).pipe(
      Effect.zipRight(terminal.readLine),
      Effect.orElseSucceed(() => "")
    )
}))

/** `upm publish` and `upm propose` are one flow: the server's propose policy decides, and may talk with the user. */
export const publish = (o: Command.Command.ParseConfig<typeof publishConfig>) => run(o)

export const propose = (o: Command.Command.ParseConfig<typeof publishConfig>) =>
  Effect.gen(function* () {
    if (isTty()) yield* note("proposing: the server's policy decides (it may accept, queue, refuse, or ask you something)")
    yield* run(o)
  })
