/**
 * ServerConfig: what `upm serve` runs with, as a Schema.
 *
 * Sources, each overriding the one before: the defaults, a JSON config file (`--config PATH`, or
 * `./upm.server.json` when it exists), the environment (`UPM_HOST`, `UPM_PORT`, `UPM_STORE`,
 * `UPM_SHUTDOWN_GRACE`), and the `upm serve` flags. Every source is decoded on its own, so an error names the
 * source and the field (`config file ./upm.server.json: limits.maxConnections: Expected a positive integer…`).
 *
 * Other modules add their own sections (handlers, peers, upstream, http): each is an optional field here,
 * decoded by that module's Schema. Unknown fields are refused, so a typo never silently does nothing.
 * Relative paths (`fs:./data`) are resolved against the working directory.
 */
import { FileSystem } from "@effect/platform"
import { Config, ConfigError, Context, Duration, Effect, Option, ParseResult, Schema } from "effect"
import { HandlersConfig } from "./Handlers.js"
import { MessagesConfig } from "./MessageServer.js"
import { PeersConfig } from "./Peers.js"
import { UpstreamConfig } from "./Upstream.js"
import { describeStoreSpec, StoreSpecFromString } from "./StoreConfig.js"

// ---------------------------------------------------------------------------------------------
// Values

/** A duration: a number of milliseconds, `"500ms"`, `"10s"`, `"2m"`, `"1h"`, or Effect's `"10 seconds"`. */
export const DurationSetting = Schema.transformOrFail(
  Schema.Union(Schema.NonNegative, Schema.String),
  Schema.DurationFromSelf,
  {
    strict: true,
    decode: (input, _, ast) => {
      if (typeof input === "number") return ParseResult.succeed(Duration.millis(input))
      const short = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$/.exec(input)
      if (short !== null) {
        const n = Number(short[1])
        const unit = short[2]
        return ParseResult.succeed(
          unit === "ms" ? Duration.millis(n) : unit === "s" ? Duration.seconds(n) : unit === "m" ? Duration.minutes(n) : Duration.hours(n)
        )
      }
      return Option.match(Duration.decodeUnknown(input.trim()), {
        onNone: () =>
          ParseResult.fail(new ParseResult.Type(ast, input, `"${input}" is not a duration (e.g. 10s, 500ms, 2m, "10 seconds", or milliseconds)`)),
        onSome: ParseResult.succeed
      })
    },
    encode: (d) => ParseResult.succeed(Duration.toMillis(d))
  }
)

export const Port = Schema.Int.pipe(Schema.between(0, 65535, { message: () => "a port is an integer from 0 to 65535" }))
export const Host = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9.:_%-]{1,255}$/, { message: () => "a host is an IP address or a host name" })
)

/**
 * Where objects and refs live: `fs:PATH` (bare git layout, the default `fs:./data`), `sqlite:PATH`,
 * `postgres:URL`, or `memory` (lost on exit: for tests). Parsed by StoreConfig.
 */
export const StoreSetting = StoreSpecFromString

const PositiveInt = Schema.Int.pipe(Schema.positive({ message: () => "expected a positive integer" }))
const PositiveNumber = Schema.Number.pipe(Schema.positive({ message: () => "expected a positive number" }))

/** Overrides of the sync session limits (SyncLimits.defaults for the rest). */
export const SyncSection = Schema.Struct({
  maxObjectSize: Schema.optionalWith(PositiveInt, { exact: true }),
  maxTextSize: Schema.optionalWith(PositiveInt, { exact: true }),
  maxInflateRatio: Schema.optionalWith(PositiveNumber, { exact: true }),
  maxWantBatches: Schema.optionalWith(PositiveInt, { exact: true }),
  maxPushObjects: Schema.optionalWith(PositiveInt, { exact: true }),
  maxSearchResults: Schema.optionalWith(PositiveInt, { exact: true }),
  handshakeTimeout: Schema.optionalWith(DurationSetting, { exact: true }),
  idleTimeout: Schema.optionalWith(DurationSetting, { exact: true }),
  messageTimeout: Schema.optionalWith(DurationSetting, { exact: true })
})

/** Listener limits and timings. */
export const ConnectionLimits = Schema.Struct({
  /** Connections served at once, all addresses together. */
  maxConnections: Schema.optionalWith(PositiveInt, { default: () => 256, exact: true }),
  /** Connections served at once from one remote address. */
  maxConnectionsPerAddress: Schema.optionalWith(PositiveInt, { default: () => 32, exact: true }),
  /** A connection must send its first 4 bytes within this time (slowloris). */
  firstBytesTimeout: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(10), exact: true }),
  /** On SIGINT/SIGTERM, how long in-flight connections may take to finish before they are interrupted. */
  shutdownGrace: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(10), exact: true })
})

export const DEFAULT_HOST = "127.0.0.1"
export const DEFAULT_PORT = 4822
export const DEFAULT_STORE = "fs:./data"
export const DEFAULT_CONFIG_FILE = "./upm.server.json"
/** A server config is a page of settings; anything bigger is not ours. */
const MAX_CONFIG_BYTES = 1024 * 1024

export const ServerConfig = Schema.Struct({
  host: Schema.optionalWith(Host, { default: () => DEFAULT_HOST, exact: true }),
  port: Schema.optionalWith(Port, { default: () => DEFAULT_PORT, exact: true }),
  store: Schema.optionalWith(StoreSetting, { default: () => Schema.decodeSync(StoreSetting)(DEFAULT_STORE), exact: true }),
  limits: Schema.optionalWith(ConnectionLimits, { default: () => ConnectionLimits.make({}), exact: true }),
  /** Sync protocol limits (src/services/SyncLimits.ts); what is left out keeps its default. */
  sync: Schema.optionalWith(SyncSection, { default: () => ({}), exact: true }),
  /** Maintainer handlers by message type (src/services/Handlers.ts, docs/handlers.md). */
  handlers: Schema.optionalWith(HandlersConfig, { exact: true }),
  /** Message protocol settings (src/services/MessageServer.ts). */
  messages: Schema.optionalWith(MessagesConfig, { exact: true }),
  // Sections owned by modules still being written; each replaces `Schema.Unknown` with its own Schema.
  /** This server's name and its peers (src/services/Peers.ts, docs/peers.md). */
  peers: Schema.optionalWith(PeersConfig, { exact: true }),
  /** An upstream to pull what this server lacks from (src/services/Upstream.ts, docs/peers.md). */
  upstream: Schema.optionalWith(UpstreamConfig, { exact: true }),
  http: Schema.optionalWith(Schema.Unknown, { exact: true })
})
export type ServerConfig = typeof ServerConfig.Type
export type ServerConfigInput = typeof ServerConfig.Encoded

/** Every default. */
export const defaults: ServerConfig = Schema.decodeSync(ServerConfig)({})

/** The config the server runs with, for layers that read their own section. */
export class CurrentServerConfig extends Context.Tag("upm/ServerConfig")<CurrentServerConfig, ServerConfig>() {}

// ---------------------------------------------------------------------------------------------
// Errors

export class ServerConfigError extends Schema.TaggedError<ServerConfigError>()("ServerConfigError", {
  /** `config file PATH`, `environment`, `flags`. */
  source: Schema.String,
  reason: Schema.Literal("Unreadable", "NotJson", "Invalid"),
  detail: Schema.String
}) {
  override get message() {
    return `${this.source}: ${this.detail}`
  }
}

const formatIssues = (e: ParseResult.ParseError, name: (path: string) => string = (p) => p) =>
  ParseResult.ArrayFormatter.formatErrorSync(e)
    .map((issue) => issue.path.length === 0 ? issue.message : `${name(issue.path.join("."))}: ${issue.message}`)
    .join("; ")

const FLAG_NAMES: Record<string, string> = {
  host: "--host", port: "--port", store: "--store", shutdownGrace: "--shutdown-grace"
}

const decodeOptions = { errors: "all", onExcessProperty: "error" } as const

/** Decodes a config object (the JSON file's content); `source` names it in errors. */
export const decode = (input: unknown, source = "config") =>
  Schema.decodeUnknown(ServerConfig, decodeOptions)(input).pipe(
    Effect.mapError((e) => new ServerConfigError({ source, reason: "Invalid", detail: formatIssues(e) }))
  )

// ---------------------------------------------------------------------------------------------
// Overrides: environment and flags

/** The settings the environment and the flags may set. */
export const Overrides = Schema.Struct({
  host: Schema.optionalWith(Host, { exact: true }),
  port: Schema.optionalWith(Port, { exact: true }),
  store: Schema.optionalWith(StoreSetting, { exact: true }),
  shutdownGrace: Schema.optionalWith(DurationSetting, { exact: true })
})
export type Overrides = typeof Overrides.Type
export type OverridesInput = typeof Overrides.Encoded

/** The innermost message of a ConfigError (Schema.Config puts a whole parse tree in it). */
const lastLine = (e: ConfigError.ConfigError) => {
  const lines = (ConfigError.isInvalidData(e) ? e.message : String(e)).split("\n")
    .map((l) => l.replace(/^[\s│├└─]+/, "").trim()).filter((l) => l.length > 0)
  return lines[lines.length - 1] ?? "invalid"
}

/** `UPM_HOST`, `UPM_PORT`, `UPM_STORE`, `UPM_SHUTDOWN_GRACE`, from the current ConfigProvider. */
export const fromEnv = Effect.gen(function* () {
  const read = <A>(name: string, schema: Schema.Schema<A, string>) =>
    Config.option(Schema.Config(name, schema)).pipe(
      Effect.mapError((e) => new ServerConfigError({ source: "environment", reason: "Invalid", detail: `${name}: ${lastLine(e)}` }))
    )
  const host = yield* read("UPM_HOST", Host)
  const port = yield* read("UPM_PORT", Schema.compose(Schema.NumberFromString, Port))
  const store = yield* read("UPM_STORE", StoreSetting)
  const shutdownGrace = yield* read("UPM_SHUTDOWN_GRACE", Schema.compose(Schema.String, DurationSetting))
  const overrides: Overrides = {
    ...Option.match(host, { onNone: () => ({}), onSome: (host) => ({ host }) }),
    ...Option.match(port, { onNone: () => ({}), onSome: (port) => ({ port }) }),
    ...Option.match(store, { onNone: () => ({}), onSome: (store) => ({ store }) }),
    ...Option.match(shutdownGrace, { onNone: () => ({}), onSome: (shutdownGrace) => ({ shutdownGrace }) })
  }
  return overrides
})

/** Decodes flag values (strings and numbers as the CLI parsed them). */
export const fromFlags = (input: OverridesInput) =>
  Schema.decodeUnknown(Overrides, decodeOptions)(input).pipe(
    Effect.mapError((e) =>
      new ServerConfigError({
        source: "flags",
        reason: "Invalid",
        detail: formatIssues(e, (path) => FLAG_NAMES[path] ?? path)
      }))
  )

const apply = (config: ServerConfig, o: Overrides): ServerConfig => ({
  ...config,
  ...(o.host !== undefined ? { host: o.host } : {}),
  ...(o.port !== undefined ? { port: o.port } : {}),
  ...(o.store !== undefined ? { store: o.store } : {}),
  ...(o.shutdownGrace !== undefined ? { limits: { ...config.limits, shutdownGrace: o.shutdownGrace } } : {})
})

// ---------------------------------------------------------------------------------------------
// Loading

/** Reads and decodes a config file. */
export const readFile = (path: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const source = `config file ${path}`
    const unreadable = (e: { readonly message: string }) =>
      new ServerConfigError({ source, reason: "Unreadable", detail: e.message })
    const info = yield* fs.stat(path).pipe(Effect.mapError(unreadable))
    if (info.size > BigInt(MAX_CONFIG_BYTES)) {
      return yield* new ServerConfigError({
        source, reason: "Unreadable", detail: `${info.size} bytes is over the ${MAX_CONFIG_BYTES}-byte limit for a config file`
      })
    }
    const text = yield* fs.readFileString(path).pipe(Effect.mapError(unreadable))
    const json = yield* Effect.try({
      try: (): unknown => JSON.parse(text),
      catch: (e) => new ServerConfigError({ source, reason: "NotJson", detail: e instanceof Error ? e.message : String(e) })
    })
    return yield* decode(json, source)
  })

export interface LoadOptions {
  /** `--config PATH`: must exist. None: `./upm.server.json` if it exists, else the defaults. */
  readonly configPath: Option.Option<string>
  /** The `upm serve` flags that were given. */
  readonly flags: OverridesInput
  /** Where to look when no `--config` is given (default `./upm.server.json`). */
  readonly defaultConfigFile?: string
}

/** The config from every source: defaults < config file < environment < flags. */
export const load = (options: LoadOptions) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const fallback = options.defaultConfigFile ?? DEFAULT_CONFIG_FILE
    const path = Option.isSome(options.configPath)
      ? Option.some(options.configPath.value)
      : (yield* fs.exists(fallback).pipe(Effect.orElseSucceed(() => false)))
      ? Option.some(fallback)
      : Option.none()
    const file = Option.isSome(path) ? yield* readFile(path.value) : defaults
    const env = yield* fromEnv
    const flags = yield* fromFlags(options.flags)
    return { config: apply(apply(file, env), flags), file: path }
  })

/** A one-line summary for the start-up log (no secrets: a postgres URL's password is masked). */
export const describe = (config: ServerConfig) => ({
  host: config.host,
  port: config.port,
  store: describeStoreSpec(config.store),
  maxConnections: config.limits.maxConnections,
  maxConnectionsPerAddress: config.limits.maxConnectionsPerAddress,
  firstBytesTimeout: Duration.format(config.limits.firstBytesTimeout),
  shutdownGrace: Duration.format(config.limits.shutdownGrace)
})
