/**
 * The server runtime as one Layer: `layer(config)` builds the store the config names, the registry, the
 * signature verifier, the proposal policy, the sync protocol and the message protocol, and the Listener that
 * serves them on one TCP port. `upm serve` launches it (`Layer.launch`); another Effect application can build
 * it the same way, or take the parts (`services(config)`) and put its own listener in front.
 *
 * Closing the layer's scope (SIGINT/SIGTERM under `runMain`) shuts down in reverse order: the Listener stops
 * accepting and drains its connections within `limits.shutdownGrace`, then the store closes.
 */
import type { CommandExecutor, FileSystem, Path } from "@effect/platform"
import { Layer, Schema } from "effect"
import * as HttpServer from "./HttpServer.js"
import * as Listener from "./Listener.js"
import * as MessageServer from "./MessageServer.js"
import * as Network from "./Network.js"
import type { ObjectStore } from "./ObjectStore.js"
import * as Owners from "./Owners.js"
import * as Peers from "./Peers.js"
import * as ProposalPolicy from "./ProposalPolicy.js"
import * as Registry from "./Registry.js"
import { CurrentServerConfig, type ServerConfig } from "./ServerConfig.js"
import { layerFromSpec } from "./StoreConfig.js"
import * as SyncLimits from "./SyncLimits.js"
import * as SyncServer from "./SyncServer.js"
import * as Upstream from "./Upstream.js"
import * as Verifier from "./Verifier.js"

/** What the Listener is given from the config. */
export const listenerOptions = (config: ServerConfig): Listener.ListenerOptions => ({
  host: config.host,
  port: config.port,
  maxConnections: config.limits.maxConnections,
  maxConnectionsPerAddress: config.limits.maxConnectionsPerAddress,
  firstBytesTimeout: config.limits.firstBytesTimeout,
  shutdownGrace: config.limits.shutdownGrace
})

/**
 * Everything but the Listener: the store the config names, the registry and owner records, the real Verifier
 * (SSHSIG signatures, namespace ownership), the proposal policy (the maintainer's `propose` handler when one is
 * configured, else accept what the Verifier accepted), the message protocol with its handlers, accounts and
 * conversations, and the sync protocol. The config is available as `CurrentServerConfig`.
 */
export const services = (config: ServerConfig) => {
  const store = layerFromSpec(config.store)
  const verifier = Verifier.layer
  // With an upstream, the Registry is the pull-through cache around the store's registry (docs/peers.md).
  const registry: Layer.Layer<Registry.Registry, never, ObjectStore | Owners.Owners> = config.upstream === undefined
    ? Registry.layer
    : Upstream.layer(config.upstream).pipe(Layer.provide(Registry.layer), Layer.provide(verifier), Layer.provide(Network.layerTcp))
  const state = registry.pipe(Layer.provideMerge(Owners.layer), Layer.provideMerge(store))
  // Peers (announce, pull, anti-entropy); without a `peers` section the engine runs with no peers.
  const peersConfig = config.peers ?? Schema.decodeSync(Peers.PeersConfig)({ name: "upm" })
  const peers = Peers.layer(peersConfig).pipe(Layer.provide(Network.layerTcp), Layer.provide(verifier), Layer.provide(Owners.layer))
  const messages = config.messages ?? Schema.decodeSync(MessageServer.MessagesConfig)({})
  const messaging = MessageServer.layerServer({
    ...(config.handlers !== undefined ? { handlers: config.handlers } : {}),
    messages: { ...messages, peerSecrets: { ...Peers.peerSecrets(peersConfig), ...messages.peerSecrets } },
    peerLink: Peers.layerPeerLink.pipe(Layer.provide(peers)),
    syncPolicy: Peers.layerSyncPolicy.pipe(Layer.provide(peers))
  }).pipe(
    Layer.provide(ProposalPolicy.layerAcceptAll), // the default the `propose` handler falls back to
    Layer.provideMerge(verifier)
  )
  const sync = SyncServer.layer.pipe(Layer.provide(SyncLimits.layer(config.sync)))
  return Layer.merge(sync, Peers.layerRun).pipe(
    Layer.provideMerge(Layer.merge(messaging, peers)),
    Layer.provideMerge(state),
    Layer.provideMerge(Layer.succeed(CurrentServerConfig, config))
  )
}

export type ServerRequirements = FileSystem.FileSystem | Path.Path | CommandExecutor.CommandExecutor

/**
 * The whole server: the Listener on `config.host:config.port` and the HTTP server (config `http`, default port
 * 4823; see docs/http.md) in front of `services(config)`.
 */
export const layer = (config: ServerConfig) =>
  Layer.merge(Listener.layer(listenerOptions(config)), HttpServer.layerFromServerConfig).pipe(
    Layer.provideMerge(services(config))
  )
