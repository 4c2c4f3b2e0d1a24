/** `upm keygen`, `upm whoami` (alias `upm key`), `upm trust <owner>`. */
import type { Command } from "@effect/cli"
import type { keygenConfig, trustConfig, whoamiConfig } from "../keys.js"
import { Console, Effect, Option, Redacted } from "effect"
import { PackageName } from "../../domain/Package.js"
import { fingerprint, formatPublicKey } from "../../domain/SshKey.js"
import { getDecoded, ObjectStore } from "../../services/ObjectStore.js"
import { verifySignature } from "../../services/Verifier.js"
import { ClientConfig } from "../../services/ClientConfig.js"
import { Keys } from "../../services/Keys.js"
import { KnownKeys } from "../../services/KnownKeys.js"
import { findKeyPath, loadKey } from "../../services/Publish.js"
import { Remote } from "../../services/Remote.js"
import { CliError, ExitCode } from "../errors.js"
import { clientLayer, json, key, noServer, note, printJson, server, verbose } from "./client.js"

export const keygen = (o: Command.Command.ParseConfig<typeof keygenConfig>) =>
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

export const whoami = (o: Command.Command.ParseConfig<typeof whoamiConfig>) =>
  Effect.gen(function* () {
    const file = yield* findKeyPath(o.key)
    const signing = yield* loadKey(o.key)
    const { formatPublicKey } = yield* Effect.promise(() => import("../../domain/SshKey.js"))
    const info = {
      fingerprint: signing.fingerprint,
      publicKey: formatPublicKey(signing.publicKey, signing.comment),
      file,
      via: signing.source._tag === "Agent" ? "ssh-agent" : "file"
    }
    if (o.json) return yield* printJson(info)
    yield* Console.log(`${info.fingerprint}\n${info.publicKey}\n${info.file}${info.via === "ssh-agent" ? " (signing through ssh-agent)" : ""}`)
  }).pipe(Effect.provide(clientLayer(noServer)))

export const trust = (o: Command.Command.ParseConfig<typeof trustConfig>) =>
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
