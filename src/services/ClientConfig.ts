/**
 * ClientConfig: where the client keeps its data and which server it talks to.
 *
 * - Local data lives under `UPM_HOME` (default `~/.upm`): `store/` (the client's own fs object store, a bare git
 *   layout, which is also the cache), `known_keys.json` (trust on first use), `id_ed25519` (made by `upm keygen`).
 * - Settings live in `$XDG_CONFIG_HOME/upm/config.json` (default `~/.config/upm/config.json`), written by
 *   `upm config set`. Unknown keys are refused, so a typo never silently does nothing.
 * - The server address comes from, first to last: `--server`, `UPM_SERVER`, the config file's `server`, and
 *   finally `127.0.0.1:4822` (where `upm serve` listens by default).
 */
import { Config, Context, Effect, Either, Layer, Option, ParseResult, Schema } from "effect"
import { FileSystem, Path } from "@effect/platform"
import { homedir } from "node:os"

export const DEFAULT_PORT = 4822
export const DEFAULT_SERVER = `127.0.0.1:${DEFAULT_PORT}`
/** A config file is a handful of settings; anything bigger is not ours. */
const MAX_CONFIG_BYTES = 64 * 1024

// ---------------------------------------------------------------------------------------------
// Values

/** `host:port`, `host` (port 4822) or `[v6addr]:port`. */
export class ServerAddress extends Schema.Class<ServerAddress>("ServerAddress")({
  host: Schema.String,
  port: Schema.Number
}) {
  override toString() {
    return this.host.includes(":") ? `[${this.host}]:${this.port}` : `${this.host}:${this.port}`
  }
}

export const parseServerAddress = (input: string): Either.Either<ServerAddress, string> => {
  const text = input.trim().replace(/^upm:\/\//, "").replace(/\/+$/, "")
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+))(?::([0-9]{1,5}))?$/.exec(text)
  if (!match) return Either.left(`"${input}" is not a server address: expected host[:port], e.g. 127.0.0.1:4822`)
  const host = match[1] ?? match[2] ?? ""
  const port = match[3] === undefined ? DEFAULT_PORT : Number(match[3])
  if (port < 1 || port > 65535) return Either.left(`"${input}": port ${port} is out of range 1–65535`)
  return Either.right(new ServerAddress({ host, port }))
}

/** Where a setting came from, so an error can say what to change. */
export type Source = "flag" | "env" | "config" | "default"

const ServerSetting = Schema.String.pipe(
  Schema.filter((s) => Either.match(parseServerAddress(s), { onLeft: (e) => e, onRight: () => true }))
)

/** The settings `upm config get|set` knows, with what each one means. */
export const ConfigFile = Schema.Struct({
  server: Schema.optional(ServerSetting),
  key: Schema.optional(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(4096)))
})
export type ConfigFile = typeof ConfigFile.Type

export const CONFIG_KEYS = {
  server: "the server address, host[:port] (overridden by UPM_SERVER and --server)",
  key: "path of the SSH private key used to sign releases (overridden by UPM_KEY and --key)"
} as const
export type ConfigKey = keyof typeof CONFIG_KEYS
export const isConfigKey = (s: string): s is ConfigKey => Object.hasOwn(CONFIG_KEYS, s)

// ---------------------------------------------------------------------------------------------
// Errors

export class ConfigFileError extends Schema.TaggedError<ConfigFileError>()("ConfigFileError", {
  path: Schema.String,
  reason: Schema.Literal("Unreadable", "Invalid", "Unwritable", "UnknownKey", "BadValue"),
  detail: Schema.String
}) {
  override get message() {
    return `${this.path}: ${this.detail}`
  }
}

export class InvalidServerAddress extends Schema.TaggedError<InvalidServerAddress>()("InvalidServerAddress", {
  input: Schema.String,
  source: Schema.Literal("flag", "env", "config", "default"),
  detail: Schema.String
}) {}

// ---------------------------------------------------------------------------------------------
// The service

export interface Paths {
  /** `UPM_HOME`. */
  readonly home: string
  /** The client's object store (and cache): `UPM_HOME/store`. */
  readonly store: string
  /** Trusted keys per owner namespace: `UPM_HOME/known_keys.json`. */
  readonly knownKeys: string
  /** The key `upm keygen` writes by default: `UPM_HOME/id_ed25519`. */
  readonly defaultKey: string
  /** `$XDG_CONFIG_HOME/upm/config.json`. */
  readonly configFile: string
}

export class ClientConfig extends Context.Tag("upm/ClientConfig")<ClientConfig, {
  readonly paths: Paths
  /** The config file as read at start-up (empty when it does not exist). */
  readonly file: ConfigFile
  /** The server to talk to, given `--server` if any, with where that setting came from. */
  readonly server: (
    flag: Option.Option<string>
  ) => Effect.Effect<{ readonly address: ServerAddress; readonly source: Source }, InvalidServerAddress>
  /** The signing key path from `--key`, `UPM_KEY` or the config file, if any was named. */
  readonly keyPath: (flag: Option.Option<string>) => Option.Option<{ readonly path: string; readonly source: Source }>
  /** Changes one setting in the config file (`undefined` removes it); writes atomically. */
  readonly set: (key: string, value: string | undefined) => Effect.Effect<void, ConfigFileError>
}>() {}

/** The environment the client reads, as `Config` so tests can provide a ConfigProvider. */
const Env = Config.all({
  home: Config.option(Config.string("UPM_HOME")),
  server: Config.option(Config.string("UPM_SERVER")),
  key: Config.option(Config.string("UPM_KEY")),
  xdg: Config.option(Config.string("XDG_CONFIG_HOME")),
  userHome: Config.option(Config.string("HOME"))
})

const nonEmpty = (o: Option.Option<string>) => Option.filter(o, (s) => s.trim().length > 0)

const readConfigFile = (fs: FileSystem.FileSystem, file: string) =>
  Effect.gen(function* () {
    const info = yield* fs.stat(file).pipe(Effect.option)
    if (Option.isNone(info)) return {} as ConfigFile
    if (info.value.size > BigInt(MAX_CONFIG_BYTES)) {
      return yield* new ConfigFileError({ path: file, reason: "Invalid", detail: `larger than ${MAX_CONFIG_BYTES} bytes` })
    }
    const text = yield* fs.readFileString(file).pipe(
      Effect.mapError((e) => new ConfigFileError({ path: file, reason: "Unreadable", detail: e.message }))
    )
    return yield* Schema.decodeUnknown(Schema.parseJson(ConfigFile), { errors: "all", onExcessProperty: "error" })(text)
      .pipe(Effect.mapError((e) =>
        new ConfigFileError({
          path: file,
          reason: "Invalid",
          detail: `${ParseResult.TreeFormatter.formatErrorSync(e)}\n(fix it with \`upm config set\` or delete the file)`
        })))
  })

export const make = Effect.gen(function* () {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const env = yield* Env.pipe(Effect.orDie)
  const userHome = Option.getOrElse(nonEmpty(env.userHome), () => homedir())
  const home = path.resolve(Option.getOrElse(nonEmpty(env.home), () => path.join(userHome, ".upm")))
  const configDir = Option.getOrElse(nonEmpty(env.xdg), () => path.join(userHome, ".config"))
  const paths: Paths = {
    home,
    store: path.join(home, "store"),
    knownKeys: path.join(home, "known_keys.json"),
    defaultKey: path.join(home, "id_ed25519"),
    configFile: path.resolve(configDir, "upm", "config.json")
  }
  const file = yield* readConfigFile(fs, paths.configFile)

  const server = (flag: Option.Option<string>) => {
    const [input, source]: readonly [string, Source] = Option.isSome(nonEmpty(flag))
      ? [Option.getOrThrow(flag), "flag"]
      : Option.isSome(nonEmpty(env.server))
      ? [Option.getOrThrow(env.server), "env"]
      : file.server !== undefined
      ? [file.server, "config"]
      : [DEFAULT_SERVER, "default"]
    return Either.match(parseServerAddress(input), {
      onLeft: (detail) => Effect.fail(new InvalidServerAddress({ input, source, detail })),
      onRight: (address) => Effect.succeed({ address, source })
    })
  }

  const keyPath = (flag: Option.Option<string>) => {
    const pick = (o: Option.Option<string>, source: Source) =>
      Option.map(nonEmpty(o), (p) => ({ path: path.resolve(p), source }))
    return pick(flag, "flag").pipe(
      Option.orElse(() => pick(env.key, "env")),
      Option.orElse(() => pick(Option.fromNullable(file.key), "config"))
    )
  }

  const set = (key: string, value: string | undefined) =>
    Effect.gen(function* () {
      if (!isConfigKey(key)) {
        return yield* new ConfigFileError({
          path: paths.configFile,
          reason: "UnknownKey",
          detail: `unknown setting "${key}"; the settings are: ${Object.keys(CONFIG_KEYS).join(", ")}`
        })
      }
      const current = yield* readConfigFile(fs, paths.configFile)
      const next: Record<string, string> = {}
      for (const [k, v] of Object.entries(current)) if (v !== undefined && k !== key) next[k] = v
      if (value !== undefined) next[key] = key === "key" ? path.resolve(value) : value
      const checked = yield* Schema.decodeUnknown(ConfigFile, { errors: "all" })(next).pipe(
        Effect.mapError((e) =>
          new ConfigFileError({
            path: paths.configFile,
            reason: "BadValue",
            detail: ParseResult.TreeFormatter.formatErrorSync(e)
          }))
      )
      const sorted = Object.fromEntries(Object.entries(checked).sort(([a], [b]) => (a < b ? -1 : 1)))
      const unwritable = (e: { readonly message: string }) =>
        new ConfigFileError({ path: paths.configFile, reason: "Unwritable", detail: e.message })
      const dir = path.dirname(paths.configFile)
      yield* fs.makeDirectory(dir, { recursive: true }).pipe(Effect.mapError(unwritable))
      const tmp = `${paths.configFile}.tmp-${process.pid}`
      yield* fs.writeFileString(tmp, `${JSON.stringify(sorted, null, 2)}\n`).pipe(Effect.mapError(unwritable))
      yield* fs.rename(tmp, paths.configFile).pipe(Effect.mapError(unwritable))
    })

  return ClientConfig.of({ paths, file, server, keyPath, set })
})

export const layer: Layer.Layer<ClientConfig, ConfigFileError, FileSystem.FileSystem | Path.Path> = Layer.effect(
  ClientConfig,
  make
)
