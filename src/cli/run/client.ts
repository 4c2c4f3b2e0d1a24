/**
 * What every client subcommand shares: the common options, output helpers (text or `--json`, progress bars on
 * a TTY only), and the client's layers (config, local store, keys, known keys, the lazy server connection).
 */
import { Options } from "@effect/cli"
import type { FileSystem, Path } from "@effect/platform"
import { Console, Effect, Layer, Option } from "effect"
import { ClientConfig, layer as configLayer } from "../../services/ClientConfig.js"
import { layerFs } from "../../services/FsStore.js"
import { Keys, layer as keysLayer } from "../../services/Keys.js"
import { KnownKeys, layer as knownKeysLayer } from "../../services/KnownKeys.js"
import type { ObjectStore, StoreError } from "../../services/ObjectStore.js"
import { layer as remoteLayer, type Remote } from "../../services/Remote.js"
import { connectTcp, layer as syncLayer } from "../../services/SyncClient.js"

// ---------------------------------------------------------------------------------------------
// Options shared by the subcommands

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

/** `--verbose` is read by the error reporter from argv; commands accept it so the parser does too. */
export const common = { verbose }
export const withServer = { server, verbose }
export const readOptions = { server, json, verbose }

// ---------------------------------------------------------------------------------------------
// Output

export const printJson = (value: unknown) => Console.log(JSON.stringify(value, null, 2))

/** Informational lines go to stderr, so stdout stays the command's answer. */
export const note = (text: string) => Console.error(text)

export const isTty = (): boolean => process.stderr.isTTY === true && process.env["CI"] === undefined

export const formatBytes = (n: number): string =>
  n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} kB` : `${(n / 1024 / 1024).toFixed(1)} MB`

// ---------------------------------------------------------------------------------------------
// Layers

/** The client's object store under UPM_HOME/store: the cache of everything fetched or published. */
export const localStoreLayer: Layer.Layer<ObjectStore, StoreError, ClientConfig | FileSystem.FileSystem | Path.Path> =
  Layer.unwrapEffect(Effect.map(ClientConfig, (c) => layerFs(c.paths.store)))

const knownKeys: Layer.Layer<KnownKeys, never, ClientConfig | FileSystem.FileSystem | Path.Path> =
  Layer.unwrapEffect(Effect.map(ClientConfig, (c) => knownKeysLayer(c.paths.knownKeys)))

/** Everything a client command may use; the server connection opens only if the command asks for it. */
export const clientLayer = (serverFlag: Option.Option<string>) => {
  const base = Layer.mergeAll(localStoreLayer, knownKeys, keysLayer).pipe(Layer.provideMerge(configLayer))
  return remoteLayer(serverFlag).pipe(
    Layer.provideMerge(syncLayer(connectTcp)),
    Layer.provideMerge(base)
  )
}

export type ClientServices = ClientConfig | ObjectStore | KnownKeys | Keys | Remote

export const noServer = Option.none<string>()
