/**
 * `upm serve`: runs the server (Server.layer) until SIGINT/SIGTERM, then shuts down gracefully.
 *
 *   upm serve [--host H] [--port P] [--store SPEC] [--config FILE] [--shutdown-grace 10s]
 *
 * Settings: flags > UPM_HOST / UPM_PORT / UPM_STORE / UPM_SHUTDOWN_GRACE > the config file (--config, or
 * ./upm.server.json when present) > defaults (127.0.0.1:4822, fs:./data). See docs/operations.md.
 */
import { Command, Options } from "@effect/cli"
import { Effect, Layer, Option } from "effect"
import * as Server from "../services/Server.js"
import * as ServerConfig from "../services/ServerConfig.js"

const host = Options.text("host").pipe(
  Options.withDescription("interface to listen on (default 127.0.0.1; 0.0.0.0 for every interface)"),
  Options.optional
)
const port = Options.integer("port").pipe(
  Options.withDescription("TCP port (default 4822; 0 picks a free port, logged at start)"),
  Options.optional
)
const store = Options.text("store").pipe(
  Options.withDescription("object store: fs:PATH (default fs:./data), sqlite:PATH, postgres:URL or memory"),
  Options.optional
)
const config = Options.text("config").pipe(
  Options.withDescription("JSON config file (default ./upm.server.json when it exists)"),
  Options.optional
)
const shutdownGrace = Options.text("shutdown-grace").pipe(
  Options.withDescription("on SIGINT/SIGTERM, how long open connections may take to finish (default 10s)"),
  Options.optional
)

const given = <K extends string, A>(key: K, value: Option.Option<A>): { [P in K]?: A } =>
  Option.match(value, { onNone: () => ({}), onSome: (v) => ({ [key]: v }) as { [P in K]?: A } })

export const serve = Command.make("serve", { host, port, store, config, shutdownGrace }, (flags) =>
  Effect.gen(function* () {
    const loaded = yield* ServerConfig.load({
      configPath: flags.config,
      flags: {
        ...given("host", flags.host),
        ...given("port", flags.port),
        ...given("store", flags.store),
        ...given("shutdownGrace", flags.shutdownGrace)
      }
    })
    yield* Effect.logInfo("starting").pipe(
      Effect.annotateLogs({
        ...ServerConfig.describe(loaded.config),
        config: Option.getOrElse(loaded.file, () => "(none)"),
        pid: process.pid
      })
    )
    return yield* Layer.launch(Server.layer(loaded.config))
  })
).pipe(Command.withDescription("Run the upm server (sync and message protocols on one TCP port)"))
