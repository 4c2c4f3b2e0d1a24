/** `upm install [owner/name@range …] [--into DIR] [--frozen]`. */
import type { Command } from "@effect/cli"
import type { installConfig } from "../install.js"
import { Clock, Console, Effect, Either, Option } from "effect"
import { parseIdentifier } from "../../domain/Package.js"
import { install as runInstall, type InstallEvent } from "../../services/Install.js"
import { Remote } from "../../services/Remote.js"
import { formatPath, PackageNotFound } from "../../services/Resolver.js"
import { suggestions } from "./query.js"
import { clientLayer, note, printJson } from "./client.js"
import { bar, transferPayload } from "./progress.js"

export const install = (o: Command.Command.ParseConfig<typeof installConfig>) =>
  Effect.scoped(Effect.gen(function* () {
    const progress = yield* bar("installing {bar} {value}/{total} packages | {bytes} | {rate}", transferPayload(0, 0))
    const start = yield* Clock.currentTimeMillis
    const onEvent = (e: InstallEvent): Effect.Effect<void> => {
      switch (e._tag) {
        case "Fetching":
          return Effect.flatMap(Clock.currentTimeMillis, (now) => progress.update(e.done, e.total, transferPayload(e.bytes, now - start)))
        case "Offline":
          return note(`upm: ${e.reason}; resolving from the local cache`)
        case "Trusted":
          return note(`upm: trusting ${e.keys.length} key(s) for ${e.owner} from now on (first use)`)
        case "KeysFollowed":
          return note(`upm: ${e.owner}'s keys changed through records signed by a key you trusted; now trusting its ${e.keys.length} current key(s)`)
        default:
          return Effect.void
      }
    }
    const result = yield* runInstall({
      dir: ".",
      ...(Option.isSome(o.into) ? { into: o.into.value } : {}),
      requests: o.packages,
      frozen: o.frozen,
      onEvent
    })
    const elapsed = (yield* Clock.currentTimeMillis) - start
    return { result, elapsed }
  })).pipe(
    // A name that does not exist: the closest names the server knows.
    Effect.catchTag("PackageNotFound", (e) =>
      Effect.gen(function* () {
        const remote = yield* Remote
        const found = (yield* remote.connected)
          ? yield* remote.session.pipe(Effect.flatMap((s) => suggestions(s, e.name)), Effect.orElseSucceed(() => []))
          : []
        return yield* new PackageNotFound({ name: e.name, path: e.path, suggestions: found })
      })),
    Effect.flatMap(({ result, elapsed }) =>
      Effect.gen(function* () {
        if (o.json) return yield* printJson(result)
        const fetched = result.packages.filter((p) => p.fetched).length
        for (const p of result.packages) yield* Console.log(`${p.name}@${p.version} → ${p.path}`)
        for (const cycle of result.cycles) yield* note(`note: dependency cycle ${formatPath(cycle.map((c) => ({ name: c })))}`)
        yield* note(
          `installed ${result.packages.length} package(s) in ${(elapsed / 1000).toFixed(2)} s` +
            (fetched > 0 ? `, ${fetched} fetched` : ", all from the local cache") +
            (result.lockfile === "written" ? "; wrote upm.lock" : "")
        )
      })),
    Effect.provide(clientLayer(o.server))
  )
