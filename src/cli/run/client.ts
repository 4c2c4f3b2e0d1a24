/**
 * What every client subcommand shares: the common options, output helpers (text or `--json`, progress bars on
 * a TTY only), and the client's layers (config, local store, keys, known keys, the lazy server connection).
 */
import type { FileSystem, Path } from "@effect/platform"
import { Console, Effect, Layer, Option } from "effect"
import { ClientConfig, layer as configLayer } from "../../services/ClientConfig.js"
import { layerFs } from "../../services/FsStore.js"
import { Keys, layer as keysLayer } from "../../services/Keys.js"
import { KnownKeys, layer as knownKeysLayer } from "../../services/KnownKeys.js"
import type { ObjectStore, StoreError } from "../../services/ObjectStore.js"
import { layer as remoteLayer, type Remote } from "../../services/Remote.js"
import { connectTcp, layer as syncLayer } from "../../services/SyncClient.js"
import { json, key, readOptions, server, verbose } from "../options.js"

// ---------------------------------------------------------------------------------------------
// Options shared by the subcommands

// Defined once in ../options.ts (light to load for command definitions); re-exported for the implementations.
export { json, key, readOptions, server, verbose }

/** `--verbose` is read by the error reporter from argv; commands accept it so the parser does too. */
export const common = { verbose }
export const withServer = { server, verbose }

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
