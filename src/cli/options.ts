/**
 * Options shared by the client subcommands, and `lazy`: command definitions load only @effect/cli and small
 * domain modules; a handler's implementation (src/cli/run/, with the store, the network, crypto) is imported
 * when that command runs. This keeps `upm --version` and `upm --help` fast.
 */
import { Options } from "@effect/cli"
import { Effect } from "effect"

export const server = Options.text("server").pipe(
  Options.withDescription("the server, host[:port] (default: UPM_SERVER, then the config file, then 127.0.0.1:4822)"),
  Options.optional
)
export const json = Options.boolean("json").pipe(Options.withDescription("print JSON for scripts instead of text"))
export const verbose = Options.boolean("verbose").pipe(Options.withDescription("on failure, show every detail (stack traces)"))
export const key = Options.text("key").pipe(
  Options.withDescription("the SSH private key to sign with (default: UPM_KEY, the config file, UPM_HOME/id_ed25519, ~/.ssh/id_ed25519, ~/.ssh/id_rsa)"),
  Options.optional
)

export const readOptions = { server, json, verbose }

/** A handler whose module is imported on first use. */
export const lazy = <M, A, E, R>(load: () => Promise<M>, pick: (m: M) => (a: A) => Effect.Effect<void, E, R>) =>
  (a: A): Effect.Effect<void, E, R> => Effect.flatMap(Effect.promise(load), (m) => pick(m)(a))
