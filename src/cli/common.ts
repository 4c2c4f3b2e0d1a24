/**
 * Shared by client subcommands: the common options (options.ts), output helpers, and the client's layers,
 * which are imported only when a command builds them (run/client.ts loads the store, the network and crypto).
 */
import { Console, Layer, Effect, type Option } from "effect"
import type * as Client from "./run/client.js"

export * from "./options.js"

export const printJson = (value: unknown) => Console.log(JSON.stringify(value, null, 2))
export const note = (text: string) => Console.error(text)

/** The client's layers (config, local store, keys, known keys, the lazy server connection), loaded on use. */
export const clientLayer = (serverFlag: Option.Option<string>): ReturnType<typeof Client.clientLayer> =>
  Layer.unwrapEffect(Effect.map(Effect.promise(() => import("./run/client.js")), (m) => m.clientLayer(serverFlag)))
