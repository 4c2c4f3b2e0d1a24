/** `upm config get [key]`, `upm config set <key> [value]` (implementations: run/config.ts). */
import { Args, Command } from "@effect/cli"
import { json, lazy, verbose } from "./options.js"

/** The settings, as in ClientConfig.CONFIG_KEYS (kept here so `--help` loads nothing else). */
const KEYS = "server (host[:port]), key (path of the SSH signing key)"
const keyArg = Args.text({ name: "key" }).pipe(Args.withDescription(`one of: ${KEYS}`))
const load = () => import("./run/config.js")

export const getConfig = { key: Args.optional(keyArg), json, verbose }
const get = Command.make("get", getConfig, lazy(load, (m) => m.get)).pipe(
  Command.withDescription("Show the effective settings (or one of them), wherever they come from")
)
export const setConfig = { key: keyArg, value: Args.optional(Args.text({ name: "value" })), verbose }
const set = Command.make("set", setConfig, lazy(load, (m) => m.set)).pipe(
  Command.withDescription("Change a setting in the config file (no value: remove it)")
)

export const config = Command.make("config").pipe(
  Command.withDescription(`Read and change settings in $XDG_CONFIG_HOME/upm/config.json: ${KEYS}`),
  Command.withSubcommands([get, set])
)
