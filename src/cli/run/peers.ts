/** `upm peers status`, loaded when it runs (src/cli/options.ts `lazy`). */
import { Console, Effect, Option } from "effect"
import { parsePeersReply } from "../../services/AntiEntropy.js"
import { Remote } from "../../services/Remote.js"
import { clientLayer, printJson } from "../common.js"

const ago = (now: number, at: Option.Option<number>) =>
  Option.match(at, {
    onNone: () => "never",
    onSome: (t) => {
      const s = Math.max(0, Math.round((now - t) / 1000))
      return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`
    }
  })
const n = (o: Option.Option<number>) => Option.match(o, { onNone: () => "?", onSome: String })

export const status = (o: { readonly server: Option.Option<string>; readonly json: boolean }) =>
  Effect.gen(function* () {
    const session = yield* (yield* Remote).session
    const report = parsePeersReply(yield* session.query("peers"))
    if (o.json) {
      return yield* printJson({
        self: report.self,
        peers: report.peers.map((p) => ({
          name: p.name, address: p.address, state: p.state, lastSync: Option.getOrNull(p.lastSync), lag: Option.getOrNull(p.lag),
          behind: Option.getOrNull(p.behind), lastError: Option.getOrNull(p.lastError)
        })),
        conflicts: report.conflicts
      })
    }
    const now = Date.now() // display only: how long ago, in the user's wall-clock time
    if (report.self === "") return yield* Console.log("this server does not report peers")
    yield* Console.log(`server ${report.self}: ${report.peers.length} peer${report.peers.length === 1 ? "" : "s"}`)
    for (const p of report.peers) {
      yield* Console.log(
        `  ${p.name.padEnd(16)} ${p.address.padEnd(22)} ${(p.state === "up" ? "reachable" : p.state === "down" ? "UNREACHABLE" : "not tried yet").padEnd(13)} ` +
          `last sync ${ago(now, p.lastSync).padEnd(9)} lag ${n(p.lag)} behind ${n(p.behind)}` +
          Option.match(p.lastError, { onNone: () => "", onSome: (e) => `\n    last error: ${e}` })
      )
    }
    if (report.conflicts.length === 0) return yield* Console.log("no conflicts")
    yield* Console.log(`${report.conflicts.length} conflict${report.conflicts.length === 1 ? "" : "s"} (what this server holds stays):`)
    for (const c of report.conflicts) {
      // `@owners/<owner>`: the namespace's ownership chain forks (docs/peers.md); else a release with two contents.
      const what = c.release.startsWith("@owners/") ? `ownership of ${c.release.slice("@owners/".length)}` : c.release
      yield* Console.log(`  ${what}: here ${c.kept}, at ${c.peer} ${c.other}`)
    }
  }).pipe(Effect.provide(clientLayer(o.server)))
