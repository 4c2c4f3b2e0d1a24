import { assert, describe, it } from "@effect/vitest"
import { Effect, Metric, MetricBoundaries } from "effect"
import * as Metrics from "../../src/services/Metrics.js"
import { makeClient, makeRelease, makeServer } from "./SyncFixtures.js"

const sampleOf = (text: string, series: string) =>
  text.split("\n").find((line) => line.startsWith(`${series} `))?.slice(series.length + 1)

describe("Metrics (Prometheus text)", () => {
  it.effect("renders counters, gauges and histograms with escaped labels", () =>
    Effect.gen(function* () {
      const counter = Metric.counter("test_render_total", { description: "A test\ncounter", incremental: true })
      yield* Metric.incrementBy(Metric.tagged(counter, "path", "a\"b\\c\nd"), 3)
      const gauge = Metric.gauge("test_render_gauge")
      yield* Metric.set(gauge, -2.5)
      const histogram = Metric.histogram("test_render_seconds", MetricBoundaries.fromIterable([0.1, 1, 10]))
      for (const v of [0.05, 0.5, 5, 50]) yield* Metric.update(histogram, v)
      const text = yield* Metrics.prometheusText
      assert.include(text, "# HELP test_render_total A test\\ncounter\n# TYPE test_render_total counter\n")
      assert.strictEqual(sampleOf(text, "test_render_total{path=\"a\\\"b\\\\c\\nd\"}"), "3")
      assert.include(text, "# TYPE test_render_gauge gauge\n")
      assert.strictEqual(sampleOf(text, "test_render_gauge"), "-2.5")
      assert.include(text, [
        "# TYPE test_render_seconds histogram",
        "test_render_seconds_bucket{le=\"0.1\"} 1",
        "test_render_seconds_bucket{le=\"1\"} 2",
        "test_render_seconds_bucket{le=\"10\"} 3",
        "test_render_seconds_bucket{le=\"+Inf\"} 4",
        "test_render_seconds_sum 55.55",
        "test_render_seconds_count 4"
      ].join("\n"))
    }))

  it.effect("the helpers count what other modules report", () =>
    Effect.gen(function* () {
      const open = () => Effect.map(Metrics.prometheusText, (t) => sampleOf(t, "upm_connections_open{protocol=\"message\"}"))
      yield* Effect.scoped(Effect.gen(function* () {
        yield* Metrics.trackConnection("message")
        yield* Metrics.trackConnection("message")
        assert.strictEqual(yield* open(), "2")
      }))
      assert.strictEqual(yield* open(), "0")
      yield* Metrics.countRequest("sync", "want")
      yield* Metrics.countServed("sync", 2, 100)
      yield* Metrics.countPushSealed
      yield* Metrics.countPushRejected("NotOwner")
      yield* Metrics.countHandlerRestart("propose")
      yield* Metrics.setSyncLag("peer-a", 1.5)
      yield* Metrics.countReceived("sync", 3, 300)
      Metrics.unsafeCountReceived("message", 2, 20)
      Metrics.unsafeCountServed("message", 1, 10)
      const countMessage = Metrics.requestCounter("message")
      countMessage("resolve")
      countMessage("resolve")
      const meter = Metrics.handlerMeter("propose")
      meter.unsafeDone(true, 0.002)
      yield* Metrics.countAnnouncement("sent")
      yield* Metrics.countAnnouncement("received")
      yield* Metrics.countAnnouncement("received")
      yield* Metrics.countPeerPull("sealed")
      yield* Metrics.measureHandler("resolve")(Effect.void)
      yield* Effect.exit(Metrics.measureHandler("resolve")(Effect.fail("no")))
      const text = yield* Metrics.prometheusText
      assert.strictEqual(sampleOf(text, "upm_connections_total{protocol=\"message\"}"), "2")
      assert.strictEqual(sampleOf(text, "upm_requests_total{protocol=\"sync\",type=\"want\"}"), "1")
      assert.strictEqual(sampleOf(text, "upm_objects_served_total{protocol=\"sync\"}"), "2")
      assert.strictEqual(sampleOf(text, "upm_bytes_served_total{protocol=\"sync\"}"), "100")
      assert.strictEqual(sampleOf(text, "upm_pushes_sealed_total"), "1")
      assert.strictEqual(sampleOf(text, "upm_pushes_rejected_total{reason=\"NotOwner\"}"), "1")
      assert.strictEqual(sampleOf(text, "upm_handler_restarts_total{handler=\"propose\"}"), "1")
      assert.strictEqual(sampleOf(text, "upm_sync_lag_seconds{peer=\"peer-a\"}"), "1.5")
      assert.strictEqual(sampleOf(text, "upm_objects_received_total{protocol=\"sync\"}"), "3")
      assert.strictEqual(sampleOf(text, "upm_bytes_received_total{protocol=\"sync\"}"), "300")
      assert.strictEqual(sampleOf(text, "upm_peer_announcements_total{direction=\"sent\"}"), "1")
      assert.strictEqual(sampleOf(text, "upm_peer_announcements_total{direction=\"received\"}"), "2")
      assert.strictEqual(sampleOf(text, "upm_peer_pulls_total{outcome=\"sealed\"}"), "1")
      assert.strictEqual(sampleOf(text, "upm_handler_requests_total{handler=\"resolve\",outcome=\"ok\"}"), "1")
      assert.strictEqual(sampleOf(text, "upm_handler_requests_total{handler=\"resolve\",outcome=\"failed\"}"), "1")
      assert.strictEqual(sampleOf(text, "upm_handler_duration_seconds_count{handler=\"resolve\"}"), "2")
      assert.strictEqual(sampleOf(text, "upm_objects_received_total{protocol=\"message\"}"), "2")
      assert.strictEqual(sampleOf(text, "upm_bytes_served_total{protocol=\"message\"}"), "10")
      assert.strictEqual(sampleOf(text, "upm_requests_total{protocol=\"message\",type=\"resolve\"}"), "2")
      assert.strictEqual(sampleOf(text, "upm_handler_requests_total{handler=\"propose\",outcome=\"ok\"}"), "1")
      assert.strictEqual(sampleOf(text, "upm_handler_duration_seconds_bucket{handler=\"propose\",le=\"0.0025\"}"), "1")
    }))

  it.scoped("the sync server counts frames, objects and bytes both ways, and seals", () =>
    Effect.gen(function* () {
      const read = (series: string) => Effect.map(Metrics.prometheusText, (t) => Number(sampleOf(t, series) ?? "0"))
      const series = [
        "upm_objects_received_total{protocol=\"sync\"}", "upm_bytes_received_total{protocol=\"sync\"}",
        "upm_objects_served_total{protocol=\"sync\"}", "upm_requests_total{protocol=\"sync\",type=\"Send\"}",
        "upm_pushes_sealed_total"
      ]
      const before = yield* Effect.forEach(series, read)
      const server = yield* makeServer()
      const client = yield* makeClient(server, { versions: [0, 2] })
      const { tag } = yield* makeRelease(client.store, "alice/metered", "1.0.0", { "a.txt": "a\n", "b.txt": "b\n" })
      yield* (yield* client.connect).push(tag)
      const other = yield* makeClient(server, { versions: [0, 2] })
      yield* (yield* other.connect).pull(tag)
      const after = yield* Effect.forEach(series, read)
      const delta = after.map((n, i) => n - before[i]!)
      // tag, tree, two blobs: received by the push, served to the pull.
      assert.strictEqual(delta[0], 4)
      assert.isAbove(delta[1]!, 0)
      assert.strictEqual(delta[2], 4)
      assert.strictEqual(delta[3], 4)
      assert.strictEqual(delta[4], 1)
    }))
})
