/** `upm config get [key]`, `upm config set <key> [value]`. */
import type { Command } from "@effect/cli"
import type { getConfig, setConfig } from "../config.js"
import { Console, Effect, Option } from "effect"
import { ClientConfig, CONFIG_KEYS, isConfigKey, layer as configLayer } from "../../services/ClientConfig.js"
import { usage } from "../errors.js"
import { json, printJson, verbose } from "./client.js"


export const get = (o: Command.Command.ParseConfig<typeof getConfig>) =>
  Effect.gen(function* () {
    const config = yield* ClientConfig
    const server = yield* config.server(Option.none())
    const effective: Record<string, string | undefined> = {
      server: server.address.toString(),
      key: Option.match(config.keyPath(Option.none()), { onNone: () => undefined, onSome: (k) => k.path })
    }
    if (Option.isSome(o.key)) {
      if (!isConfigKey(o.key.value)) return yield* usage(`unknown setting "${o.key.value}"`, `the settings are: ${Object.keys(CONFIG_KEYS).join(", ")}`)
      const value = effective[o.key.value]
      if (o.json) return yield* printJson(value ?? null)
      return yield* Console.log(value ?? "")
    }
    const all = { ...effective, home: config.paths.home, configFile: config.paths.configFile }
    if (o.json) return yield* printJson(all)
    for (const [k, v] of Object.entries(all)) yield* Console.log(`${k}=${v ?? ""}`)
  }).pipe(Effect.provide(configLayer))

export const set = (o: Command.Command.ParseConfig<typeof setConfig>) =>
  Effect.gen(function* () {
    const config = yield* ClientConfig
    yield* config.set(o.key, Option.getOrUndefined(o.value))
    yield* Console.error(`${Option.isSome(o.value) ? "set" : "removed"} ${o.key} in ${config.paths.configFile}`)
  }).pipe(Effect.provide(configLayer))

