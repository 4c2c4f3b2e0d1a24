/** `upm keygen`, `upm whoami` (alias `upm key`), `upm trust <owner>`. */
import { Args, Command, Options } from "@effect/cli"
import { Console, Effect, Option, Redacted } from "effect"
import { PackageName } from "../domain/Package.js"
import { fingerprint, formatPublicKey } from "../domain/SshKey.js"
import { getDecoded, ObjectStore } from "../services/ObjectStore.js"
import { verifySignature } from "../services/Verifier.js"
import { ClientConfig } from "../services/ClientConfig.js"
import { Keys } from "../services/Keys.js"
import { KnownKeys } from "../services/KnownKeys.js"
import { findKeyPath, loadKey } from "../services/Publish.js"
import { Remote } from "../services/Remote.js"
import { CliError, ExitCode } from "./errors.js"
import { clientLayer, json, key, noServer, note, printJson, server, verbose } from "./common.js"

const type = Options.choice("type", ["ed25519", "rsa"]).pipe(Options.withDefault("ed25519" as const), Options.withDescription("key type"))
const bits = Options.integer("bits").pipe(Options.withDefault(3072), Options.withDescription("RSA key size"))
const comment = Options.text("comment").pipe(Options.optional, Options.withDescription("comment stored with the key (e.g. you@example.com)"))
const out = Options.file("out").pipe(Options.optional, Options.withDescription("where to write the key (default UPM_HOME/id_ed25519)"))

export const keygen = Command.make("keygen", { type, bits, comment, out, json, verbose }, (o) =>
  Effect.gen(function* () {
    const config = yield* ClientConfig
    const keys = yield* Keys
    const file = Option.getOrElse(o.out, () => config.paths.defaultKey)
    const passphrase = process.env["UPM_KEY_PASSPHRASE"]
    const made = yield* keys.keygen(file, {
      type: o.type,
      bits: o.bits,
      ...(Option.isSome(o.comment) ? { comment: o.comment.value } : {}),
      ...(passphrase !== undefined && passphrase !== "" ? { passphrase: Redacted.make(passphrase) } : {})
    })
    if (o.json) return yield* printJson(made)
    yield* Console.log(`${made.fingerprint}\n${made.publicLine}`)
    yield* note(`wrote ${made.privatePath} and ${made.publicPath}` +
      (Option.isSome(o.out) ? `\nsign with it: upm config set key ${made.privatePath}` : ""))
  }).pipe(Effect.provide(clientLayer(noServer)))
).pipe(Command.withDescription("Create a new SSH signing key (ed25519 by default) under UPM_HOME"))

const whoamiHandler = (o: { readonly key: Option.Option<string>; readonly json: boolean }) =>
  Effect.gen(function* () {
    const file = yield* findKeyPath(o.key)
    const signing = yield* loadKey(o.key)
    const { formatPublicKey } = yield* Effect.promise(() => import("../domain/SshKey.js"))
    const info = {
      fingerprint: signing.fingerprint,
      publicKey: formatPublicKey(signing.publicKey, signing.comment),
      file,
      via: signing.source._tag === "Agent" ? "ssh-agent" : "file"
    }
    if (o.json) return yield* printJson(info)
    yield* Console.log(`${info.fingerprint}\n${info.publicKey}\n${info.file}${info.via === "ssh-agent" ? " (signing through ssh-agent)" : ""}`)
  }).pipe(Effect.provide(clientLayer(noServer)))

export const whoami = Command.make("whoami", { key, json, verbose }, whoamiHandler).pipe(
  Command.withDescription("Show your signing key: fingerprint, public key, file")
)
export const keyCommand = Command.make("key", { key, json, verbose }, whoamiHandler).pipe(
  Command.withDescription("Same as whoami: show your signing key and its fingerprint")
)

const target = Args.text({ name: "owner[/name]" }).pipe(
  Args.withDescription("the owner namespace (e.g. alice), or one of its packages (alice/hello) whose newest release shows the key")
)

/**
 * After a KeyChanged: looks up the newest release of the package (or of the owner's first package), checks its
 * signature, shows the key and pins it for the owner, replacing the old pins. Confirm the fingerprint with the
 * owner first.
 */
export const trust = Command.make("trust", { target, server, json, verbose }, (o) =>
  Effect.gen(function* () {
    const known = yield* KnownKeys
    const store = yield* ObjectStore
    const session = yield* (yield* Remote).session
    const [owner = "", pkg] = o.target.split("/")
    const name = pkg !== undefined ? o.target : (yield* session.packages(owner))[0]
    if (name === undefined) return yield* new CliError({ code: ExitCode.NotFound, detail: `the server has no packages of ${owner}` })
    const newest = yield* session.match(PackageName.make(name))
    if (Option.isNone(newest)) return yield* new CliError({ code: ExitCode.NotFound, detail: `${name} has no release` })
    if (!(yield* store.has(newest.value.hash))) yield* session.pull(newest.value.hash)
    const object = yield* getDecoded(newest.value.hash)
    if (object.type !== "tag") return yield* new CliError({ code: ExitCode.Verification, detail: `${newest.value.hash} is not a release tag` })
    const { publicKey } = yield* verifySignature(newest.value.hash, object.tag)
    const before = yield* known.get(owner)
    yield* known.accept(owner, [formatPublicKey(publicKey)])
    const result = { owner, fingerprint: fingerprint(publicKey), from: `${name}@${newest.value.version}`, replaced: Option.getOrElse(before, () => []).length }
    if (o.json) return yield* printJson(result)
    yield* Console.log(`now trusting ${result.fingerprint} for ${owner} (the signer of ${result.from})` +
      (result.replaced > 0 ? `, replacing ${result.replaced} key(s)` : ""))
  }).pipe(Effect.provide(clientLayer(o.server)))
).pipe(Command.withDescription("Trust the key that now signs an owner's releases (after a key change you confirmed with the owner)"))
