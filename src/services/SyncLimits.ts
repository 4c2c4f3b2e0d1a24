/**
 * SyncLimits: every size and wait of a sync session, in one service so the server's configuration (and tests)
 * can set them. Each has a default that suits a public server; `layer({ ... })` overrides some of them.
 */
import { Config, type ConfigError, Context, Duration, Layer } from "effect"

export interface SyncLimitsShape {
  /** Largest SEND payload (a framed object) a session accepts. */
  readonly maxObjectSize: number
  /** Largest QUERY/REPLY text in bytes. */
  readonly maxTextSize: number
  /** For deflated SENDs (a possible protocol extension, not implemented): most bytes an object may inflate to per byte received. */
  readonly maxInflateRatio: number
  /** WANT frames (of up to 64 hashes each) the server keeps outstanding during a push. */
  readonly maxWantBatches: number
  /** Objects one push may add (a bound on the work a single tag can cause). */
  readonly maxPushObjects: number
  /** Results of a `search` reply. */
  readonly maxSearchResults: number
  /** From connection start until the handshake line is complete. */
  readonly handshakeTimeout: Duration.Duration
  /** Between frames while nothing is being received. */
  readonly idleTimeout: Duration.Duration
  /** From the first byte of a frame until its last. */
  readonly messageTimeout: Duration.Duration
}

export class SyncLimits extends Context.Tag("upm/SyncLimits")<SyncLimits, SyncLimitsShape>() {}

export const defaults: SyncLimitsShape = {
  maxObjectSize: 128 * 1024 * 1024,
  maxTextSize: 64 * 1024,
  maxInflateRatio: 1032, // zlib's own maximum compression ratio is about 1032:1
  maxWantBatches: 16,
  maxPushObjects: 1_000_000,
  maxSearchResults: 100,
  handshakeTimeout: Duration.seconds(10),
  idleTimeout: Duration.seconds(120),
  messageTimeout: Duration.seconds(60)
}

export const make = (overrides: Partial<SyncLimitsShape> = {}): SyncLimitsShape => ({ ...defaults, ...overrides })

export const layer = (overrides: Partial<SyncLimitsShape> = {}): Layer.Layer<SyncLimits> =>
  Layer.succeed(SyncLimits, make(overrides))

export const layerDefault: Layer.Layer<SyncLimits> = layer()

/**
 * Limits from configuration (`UPM_SYNC_MAX_OBJECT_SIZE`, `UPM_SYNC_IDLE_TIMEOUT=30 seconds`, …), each falling
 * back to its default.
 */
export const config: Config.Config<SyncLimitsShape> = Config.all({
  maxObjectSize: Config.integer("UPM_SYNC_MAX_OBJECT_SIZE").pipe(Config.withDefault(defaults.maxObjectSize)),
  maxTextSize: Config.integer("UPM_SYNC_MAX_TEXT_SIZE").pipe(Config.withDefault(defaults.maxTextSize)),
  maxInflateRatio: Config.number("UPM_SYNC_MAX_INFLATE_RATIO").pipe(Config.withDefault(defaults.maxInflateRatio)),
  maxWantBatches: Config.integer("UPM_SYNC_MAX_WANT_BATCHES").pipe(Config.withDefault(defaults.maxWantBatches)),
  maxPushObjects: Config.integer("UPM_SYNC_MAX_PUSH_OBJECTS").pipe(Config.withDefault(defaults.maxPushObjects)),
  maxSearchResults: Config.integer("UPM_SYNC_MAX_SEARCH_RESULTS").pipe(Config.withDefault(defaults.maxSearchResults)),
  handshakeTimeout: Config.duration("UPM_SYNC_HANDSHAKE_TIMEOUT").pipe(Config.withDefault(defaults.handshakeTimeout)),
  idleTimeout: Config.duration("UPM_SYNC_IDLE_TIMEOUT").pipe(Config.withDefault(defaults.idleTimeout)),
  messageTimeout: Config.duration("UPM_SYNC_MESSAGE_TIMEOUT").pipe(Config.withDefault(defaults.messageTimeout))
}).pipe(Config.validate({
  message: "sync limits must be positive (maxWantBatches at least 1)",
  validation: (l) => l.maxObjectSize > 0 && l.maxTextSize > 0 && l.maxInflateRatio > 0 && l.maxWantBatches >= 1 &&
    l.maxPushObjects > 0 && l.maxSearchResults > 0
}))

export const layerConfig: Layer.Layer<SyncLimits, ConfigError.ConfigError> = Layer.effect(SyncLimits, config)
