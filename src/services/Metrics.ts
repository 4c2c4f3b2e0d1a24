/**
 * Operations: the server's metrics (one place, so every module counts under the same names) and the log format.
 *
 * Metrics are Effect `Metric`s in Effect's global registry; any module increments them with the helpers below, and
 * `GET /metrics` on the HTTP port renders `Metric.snapshot` as Prometheus text (`prometheusText`). We render the text
 * ourselves rather than through @effect/opentelemetry + @opentelemetry/exporter-prometheus: the format is ~60 lines
 * to write, and the OpenTelemetry SDK would add three exactly pinned packages and their start-up cost to every
 * `upm` process, for no information we do not already have in the snapshot.
 *
 * | metric | type | labels |
 * | --- | --- | --- |
 * | `upm_connections_total` | counter | `protocol` (sync, message, http) |
 * | `upm_connections_open` | gauge | `protocol` |
 * | `upm_requests_total` | counter | `protocol`, `type` (sync: want/send/query/…; message: payload.type; http: route) |
 * | `upm_http_responses_total` | counter | `status` (the HTTP status code) |
 * | `upm_http_request_duration_seconds` | histogram | — (time to the response head, not to the end of a download) |
 * | `upm_objects_served_total` | counter | `protocol` |
 * | `upm_bytes_served_total` | counter | `protocol` |
 * | `upm_objects_received_total` | counter | `protocol` (objects pushed to or pulled by this server) |
 * | `upm_bytes_received_total` | counter | `protocol` |
 * | `upm_handler_requests_total` | counter | `handler`, `outcome` (ok, failed) |
 * | `upm_handler_duration_seconds` | histogram | `handler` (a request's time through its handler) |
 * | `upm_peer_announcements_total` | counter | `direction` (sent, received) |
 * | `upm_peer_pulls_total` | counter | `outcome` (sealed, failed, …: releases pulled from peers) |
 * | `upm_pushes_sealed_total` | counter | — |
 * | `upm_pushes_rejected_total` | counter | `reason` |
 * | `upm_handler_restarts_total` | counter | `handler` |
 * | `upm_sync_lag_seconds` | gauge | `peer` (how far behind the peer this server is) |
 */
import {
  Clock, Effect, Exit, FiberRef, HashSet, Layer, Logger, Metric, MetricBoundaries, MetricKeyType, MetricLabel, type MetricPair, MetricState,
  Option, Schema
} from "effect"

// ---------------------------------------------------------------------------------------------
// The metrics

export type Protocol = "sync" | "message" | "http"

export const connectionsTotal = Metric.counter("upm_connections_total", {
  description: "Connections accepted, by protocol",
  incremental: true
})
export const connectionsOpen = Metric.gauge("upm_connections_open", { description: "Connections open now, by protocol" })
export const requestsTotal = Metric.counter("upm_requests_total", {
  description: "Requests handled, by protocol and request type",
  incremental: true
})
export const httpResponsesTotal = Metric.counter("upm_http_responses_total", {
  description: "HTTP responses sent, by status code",
  incremental: true
})
export const httpRequestDuration = Metric.histogram(
  "upm_http_request_duration_seconds",
  MetricBoundaries.fromIterable([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]),
  "Time from an HTTP request to its response head"
)
export const objectsServedTotal = Metric.counter("upm_objects_served_total", {
  description: "Objects sent to clients, by protocol",
  incremental: true
})
export const bytesServedTotal = Metric.counter("upm_bytes_served_total", {
  description: "Bytes of object or file content sent to clients, by protocol",
  incremental: true
})
export const objectsReceivedTotal = Metric.counter("upm_objects_received_total", {
  description: "Objects received (pushed by clients, pulled from peers), by protocol",
  incremental: true
})
export const bytesReceivedTotal = Metric.counter("upm_bytes_received_total", {
  description: "Bytes of objects received, by protocol",
  incremental: true
})
export const handlerRequestsTotal = Metric.counter("upm_handler_requests_total", {
  description: "Requests passed to maintainer handlers, by handler and outcome",
  incremental: true
})
export const handlerDuration = Metric.histogram(
  "upm_handler_duration_seconds",
  MetricBoundaries.fromIterable([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]),
  "Time a request spends in its maintainer handler, by handler"
)
export const peerAnnouncementsTotal = Metric.counter("upm_peer_announcements_total", {
  description: "Release announcements between peers, by direction (sent, received)",
  incremental: true
})
export const peerPullsTotal = Metric.counter("upm_peer_pulls_total", {
  description: "Releases pulled from peers, by outcome",
  incremental: true
})
export const pushesSealedTotal = Metric.counter("upm_pushes_sealed_total", {
  description: "Pushed releases sealed",
  incremental: true
})
export const pushesRejectedTotal = Metric.counter("upm_pushes_rejected_total", {
  description: "Pushed releases rejected, by reason",
  incremental: true
})
export const handlerRestartsTotal = Metric.counter("upm_handler_restarts_total", {
  description: "Maintainer handler processes restarted, by handler",
  incremental: true
})
export const syncLagSeconds = Metric.gauge("upm_sync_lag_seconds", {
  description: "Seconds between a peer's newest announced release and this server having it, by peer"
})

// ---------------------------------------------------------------------------------------------
// Helpers the other modules call

/** Counts a connection and keeps it in `upm_connections_open` for the life of the current Scope. */
export const trackConnection = (protocol: Protocol) => {
  const open = Metric.tagged(connectionsOpen, "protocol", protocol)
  return Effect.zipRight(
    Metric.increment(Metric.tagged(connectionsTotal, "protocol", protocol)),
    Effect.acquireRelease(Metric.increment(open), () => Metric.incrementBy(open, -1))
  )
}

/**
 * `trackConnection` for callbacks outside Effect (a Node server's `connection` event): counts the connection now
 * and returns what to call when it closes (calling it again does nothing). Synchronous and cheap.
 */
export const unsafeTrackConnection = (protocol: Protocol): (() => void) => {
  const tags = [MetricLabel.make("protocol", protocol)]
  connectionsTotal.unsafeUpdate(1, tags)
  connectionsOpen.unsafeModify(1, tags)
  let open = true
  return () => {
    if (open) {
      open = false
      connectionsOpen.unsafeModify(-1, tags)
    }
  }
}

export const countRequest = (protocol: Protocol, type: string) =>
  Metric.increment(Metric.tagged(Metric.tagged(requestsTotal, "protocol", protocol), "type", type))

// Tagged once: a hot path's count is then one increment, not a new metric key per call.
const byProtocol = <A, In, Out>(metric: Metric.Metric<A, In, Out>) => ({
  sync: Metric.tagged(metric, "protocol", "sync"),
  message: Metric.tagged(metric, "protocol", "message"),
  http: Metric.tagged(metric, "protocol", "http")
})
const objectsServed = byProtocol(objectsServedTotal)
const bytesServed = byProtocol(bytesServedTotal)
const objectsReceived = byProtocol(objectsReceivedTotal)
const bytesReceived = byProtocol(bytesReceivedTotal)

/** Objects and bytes sent to clients (count per batch or per session on hot paths, not per object). */
export const countServed = (protocol: Protocol, objects: number, bytes: number) =>
  Effect.zipRight(
    objects > 0 ? Metric.incrementBy(objectsServed[protocol], objects) : Effect.void,
    bytes > 0 ? Metric.incrementBy(bytesServed[protocol], bytes) : Effect.void
  )

/** Objects and bytes received (pushed to this server, pulled from a peer). */
export const countReceived = (protocol: Protocol, objects: number, bytes: number) =>
  Effect.zipRight(
    objects > 0 ? Metric.incrementBy(objectsReceived[protocol], objects) : Effect.void,
    bytes > 0 ? Metric.incrementBy(bytesReceived[protocol], bytes) : Effect.void
  )

const noLabels: ReadonlyArray<MetricLabel.MetricLabel> = []

/** `countServed` as a plain call, for loops outside Effect (a frame encoder, a decoder's chunk loop). */
export const unsafeCountServed = (protocol: Protocol, objects: number, bytes: number) => {
  if (objects > 0) objectsServed[protocol].unsafeUpdate(objects, noLabels)
  if (bytes > 0) bytesServed[protocol].unsafeUpdate(bytes, noLabels)
}

/** `countReceived` as a plain call. */
export const unsafeCountReceived = (protocol: Protocol, objects: number, bytes: number) => {
  if (objects > 0) objectsReceived[protocol].unsafeUpdate(objects, noLabels)
  if (bytes > 0) bytesReceived[protocol].unsafeUpdate(bytes, noLabels)
}

/**
 * `countRequest` for one protocol as a plain call, each type's series tagged once. The caller bounds the types
 * (e.g. known message types, else "other"): every distinct type is a series kept for the life of the process.
 */
export const requestCounter = (protocol: Protocol): ((type: string) => void) => {
  const byType = new Map<string, Metric.Metric.Counter<number>>()
  const base = Metric.tagged(requestsTotal, "protocol", protocol)
  return (type) => {
    let counter = byType.get(type)
    if (counter === undefined) {
      counter = Metric.tagged(base, "type", type)
      byType.set(type, counter)
    }
    counter.unsafeUpdate(1, noLabels)
  }
}

/**
 * A handler's meters, tagged once (at handler start): `measure` wraps one request as an Effect; `unsafeDone`
 * records one that completes through a callback (`ok` or `failed` — any failure, timeout or interruption — and
 * its time in seconds). Both count `upm_handler_requests_total` and `upm_handler_duration_seconds`.
 */
export const handlerMeter = (handler: string) => {
  const byHandler = Metric.tagged(handlerRequestsTotal, "handler", handler)
  const ok = Metric.tagged(byHandler, "outcome", "ok")
  const failed = Metric.tagged(byHandler, "outcome", "failed")
  const duration = Metric.tagged(handlerDuration, "handler", handler)
  const none: ReadonlyArray<MetricLabel.MetricLabel> = []
  const unsafeDone = (succeeded: boolean, seconds: number) => {
    const outcome = succeeded ? ok : failed
    outcome.unsafeUpdate(1, none)
    duration.unsafeUpdate(seconds, none)
  }
  const measure = <A, E, R>(request: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.flatMap(Clock.currentTimeNanos, (start) =>
      Effect.onExit(request, (exit) =>
        Effect.map(Clock.currentTimeNanos, (end) => unsafeDone(Exit.isSuccess(exit), Number(end - start) / 1e9))))
  return { measure, unsafeDone }
}

/** Runs one request through a maintainer handler, counted and timed (see `handlerMeter`). */
export const measureHandler = (handler: string) => handlerMeter(handler).measure

const announcementsSent = Metric.tagged(peerAnnouncementsTotal, "direction", "sent")
const announcementsReceived = Metric.tagged(peerAnnouncementsTotal, "direction", "received")

/** Release announcements sent to peers (`count` of them), or received from one. */
export const countAnnouncement = (direction: "sent" | "received", count = 1) =>
  count > 0 ? Metric.incrementBy(direction === "sent" ? announcementsSent : announcementsReceived, count) : Effect.void

/** A release pulled from a peer: `sealed`, `failed`, or another short reason. */
export const countPeerPull = (outcome: string) => Metric.increment(Metric.tagged(peerPullsTotal, "outcome", outcome))

export const countPushSealed = Metric.increment(pushesSealedTotal)

export const countPushRejected = (reason: string) => Metric.increment(Metric.tagged(pushesRejectedTotal, "reason", reason))

export const countHandlerRestart = (handler: string) =>
  Metric.increment(Metric.tagged(handlerRestartsTotal, "handler", handler))

export const setSyncLag = (peer: string, seconds: number) => Metric.set(Metric.tagged(syncLagSeconds, "peer", peer), seconds)

// ---------------------------------------------------------------------------------------------
// Prometheus text exposition format 0.0.4

export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

const escapeLabel = (value: string) => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, "\\\"")
const escapeHelp = (value: string) => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")
/** Prometheus metric and label names: `[a-zA-Z_:][a-zA-Z0-9_:]*`; anything else becomes `_`. */
const sanitizeName = (name: string) => name.replace(/[^a-zA-Z0-9_:]/g, "_").replace(/^([0-9])/, "_$1")

const formatValue = (n: number | bigint): string =>
  typeof n === "bigint" ? n.toString() :
  Number.isNaN(n) ? "NaN" : n === Infinity ? "+Inf" : n === -Infinity ? "-Inf" : String(n)

const labels = (tags: ReadonlyArray<{ readonly key: string; readonly value: string }>, extra?: readonly [string, string]) => {
  const all = extra === undefined ? tags.map((t) => [t.key, t.value] as const) : [...tags.map((t) => [t.key, t.value] as const), extra]
  return all.length === 0 ? "" : `{${all.map(([k, v]) => `${sanitizeName(k)}="${escapeLabel(v)}"`).join(",")}}`
}

/** Renders a metric snapshot as Prometheus text: one HELP/TYPE block per metric name, series sorted for stable output. */
export const renderPrometheus = (pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>): string => {
  const families = new Map<string, { type: string; help: string; series: Array<{ key: string; lines: Array<string> }> }>()
  const family = (name: string, type: string, help: Option.Option<string>, tags: ReadonlyArray<{ readonly key: string; readonly value: string }>) => {
    let f = families.get(name)
    if (f === undefined) {
      f = { type, help: Option.getOrElse(help, () => name), series: [] }
      families.set(name, f)
    }
    const lines: Array<string> = []
    f.series.push({ key: labels(tags), lines })
    return lines
  }
  for (const { metricKey: key, metricState: state } of pairs) {
    const name = sanitizeName(key.name)
    if (MetricState.isCounterState(state)) {
      const monotonic = MetricKeyType.isCounterKey(key.keyType) && key.keyType.incremental
      family(name, monotonic ? "counter" : "gauge", key.description, key.tags).push(`${name}${labels(key.tags)} ${formatValue(state.count)}`)
    } else if (MetricState.isGaugeState(state)) {
      family(name, "gauge", key.description, key.tags).push(`${name}${labels(key.tags)} ${formatValue(state.value)}`)
    } else if (MetricState.isHistogramState(state)) {
      const f = family(name, "histogram", key.description, key.tags)
      // Effect's buckets are cumulative already, and end with the +Inf bucket.
      for (const [bound, count] of state.buckets) {
        f.push(`${name}_bucket${labels(key.tags, ["le", formatValue(bound)])} ${count}`)
      }
      if (!state.buckets.some(([bound]) => bound === Infinity)) {
        f.push(`${name}_bucket${labels(key.tags, ["le", "+Inf"])} ${state.count}`)
      }
      f.push(`${name}_sum${labels(key.tags)} ${formatValue(state.sum)}`, `${name}_count${labels(key.tags)} ${state.count}`)
    } else if (MetricState.isFrequencyState(state)) {
      const f = family(name, "counter", key.description, key.tags)
      for (const [value, count] of state.occurrences) f.push(`${name}${labels(key.tags, ["value", value])} ${count}`)
    } else if (MetricState.isSummaryState(state)) {
      const f = family(name, "summary", key.description, key.tags)
      for (const [q, value] of state.quantiles) {
        if (Option.isSome(value)) f.push(`${name}${labels(key.tags, ["quantile", String(q)])} ${formatValue(value.value)}`)
      }
      f.push(`${name}_sum${labels(key.tags)} ${formatValue(state.sum)}`, `${name}_count${labels(key.tags)} ${state.count}`)
    }
  }
  const out: Array<string> = []
  for (const name of [...families.keys()].sort()) {
    const f = families.get(name)
    if (f === undefined) continue
    out.push(`# HELP ${name} ${escapeHelp(f.help)}`, `# TYPE ${name} ${f.type}`)
    // Series sorted by their labels for a stable output; a histogram's lines keep their bucket order.
    for (const s of [...f.series].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))) out.push(...s.lines)
  }
  return out.length === 0 ? "" : `${out.join("\n")}\n`
}

/** Every metric of this process, as Prometheus text. */
export const prometheusText: Effect.Effect<string> = Effect.map(Metric.snapshot, renderPrometheus)

// ---------------------------------------------------------------------------------------------
// Log format (chosen by `upm serve --log-format`)

export const LogFormat = Schema.Literal("logfmt", "json")
export type LogFormat = typeof LogFormat.Type

/**
 * Replaces every logger with a structured one writing to stderr (stdout stays for command output): logfmt lines
 * or one JSON object per line. Annotations (`requestId`, `connection`, …) appear as fields.
 */
export const layerLogger = (format: LogFormat): Layer.Layer<never> =>
  Layer.locallyScoped(
    FiberRef.currentLoggers,
    HashSet.make(Logger.withConsoleError(format === "json" ? Logger.jsonLogger : Logger.logfmtLogger))
  )
