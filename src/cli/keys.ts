/** `upm keygen`, `upm whoami` (alias `upm key`), `upm trust` (implementations: run/keys.ts). */
import { Args, Command, Options } from "@effect/cli"
import { json, key, lazy, server, verbose } from "./options.js"

const load = () => import("./run/keys.js")

export const keygenConfig = {
  type: Options.choice("type", ["ed25519", "rsa"]).pipe(Options.withDefault("ed25519" as const), Options.withDescription("key type")),
  bits: Options.integer("bits").pipe(Options.withDefault(3072), Options.withDescription("RSA key size")),
  comment: Options.text("comment").pipe(Options.optional, Options.withDescription("comment stored with the key (e.g. you@example.com)")),
  out: Options.file("out").pipe(Options.optional, Options.withDescription("where to write the key (default UPM_HOME/id_ed25519)")),
  json,
  verbose
}
export const keygen = Command.make("keygen", keygenConfig, lazy(load, (m) => m.keygen)).pipe(
  Command.withDescription("Create a new SSH signing key (ed25519 by default) under UPM_HOME; UPM_KEY_PASSPHRASE protects it")
)

export const whoamiConfig = { key, json, verbose }
export const whoami = Command.make("whoami", whoamiConfig, lazy(load, (m) => m.whoami)).pipe(
  Command.withDescription("Show your signing key: fingerprint, public key, file")
)
export const keyCommand = Command.make("key", whoamiConfig, lazy(load, (m) => m.whoami)).pipe(
  Command.withDescription("Same as whoami: show your signing key and its fingerprint")
)

export const trustConfig = {
  target: Args.text({ name: "owner[/name]" }).pipe(
    Args.withDescription("the owner namespace (e.g. alice), or one of its packages (alice/hello) whose newest release shows the key")
  ),
  server,
  json,
  verbose
}
export const trust = Command.make("trust", trustConfig, lazy(load, (m) => m.trust)).pipe(
  Command.withDescription("Trust the key that now signs an owner's releases (after a key change you confirmed with the owner)")
)
