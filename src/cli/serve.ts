/**
 * `upm serve`: runs the server (Server.layer) until SIGINT/SIGTERM, then shuts down gracefully.
 *
 *   upm serve [--host H] [--port P] [--store SPEC] [--config FILE] [--shutdown-grace 10s]
 *             [--http-port P | --no-http] [--log-format logfmt|json]
 *
 * Settings: flags > UPM_HOST / UPM_PORT / UPM_STORE / UPM_SHUTDOWN_GRACE > the config file (--config, or
 * ./upm.server.json when present) > defaults (127.0.0.1:4822, fs:./data). See docs/operations.md.
 */
import { Command, Options } from "@effect/cli"
import { Effect, Layer, Option } from "effect"

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

const httpPort = Options.integer("http-port").pipe(
  Options.withDescription("HTTP port for the read API and web page (default 4823; 0 picks a free port)"),
  Options.optional
)
const noHttp = Options.boolean("no-http").pipe(Options.withDescription("do not start the HTTP server"))
const logFormat = Options.choice("log-format", ["logfmt", "json"]).pipe(
  Options.withDescription("structured log lines: logfmt (default) or one JSON object per line"),
  Options.withDefault("logfmt" as const)
)

const given = <K extends string, A>(key: K, value: Option.Option<A>): { [P in K]?: A } =>
  Option.match(value, { onNone: () => ({}), onSome: (v) => ({ [key]: v }) as { [P in K]?: A } })

// The server runtime is imported when `serve` runs, so the client's commands never load it (start-up time).
const runtime = () =>
  Promise.all([
    import("../services/HttpServer.js"), import("../services/Metrics.js"), import("../services/Server.js"),
    import("../services/ServerConfig.js")
  ])

export const serve = Command.make("serve", { host, port, store, config, shutdownGrace, httpPort, noHttp, logFormat }, (flags) =>
  Effect.flatMap(Effect.promise(runtime), ([HttpServer, Metrics, Server, ServerConfig]) => Effect.gen(function* () {
    const loaded = yield* ServerConfig.load({
      configPath: flags.config,
      flags: {
        ...given("host", flags.host),
        ...given("port", flags.port),
        ...given("store", flags.store),
        ...given("shutdownGrace", flags.shutdownGrace)
      }
    })
    const config = HttpServer.withHttpFlags(loaded.config, {
      ...given("port", flags.httpPort),
      ...(flags.noHttp ? { enabled: false } : {})
    })
    yield* Effect.logInfo("starting").pipe(
      Effect.annotateLogs({
        ...ServerConfig.describe(config),
        config: Option.getOrElse(loaded.file, () => "(none)"),
        pid: process.pid
      })
    )
    return yield* Layer.launch(Server.layer(config))
  }).pipe(Effect.provide(Metrics.layerLogger(flags.logFormat))))
).pipe(Command.withDescription("Run the upm server (sync and message protocols on one TCP port)"))
