import { assert, describe, it, layer } from "@effect/vitest"
import { Effect, HashMap, Layer, Logger } from "effect"
import { connect } from "node:net"
import { makeMemory, ObjectStore, StoreError } from "../../src/services/ObjectStore.js"
import * as Registry from "../../src/services/Registry.js"
import * as HttpServer from "../../src/services/HttpServer.js"
import * as ServerConfig from "../../src/services/ServerConfig.js"
import { HttpListener, routeOf } from "../../src/services/HttpServer.js"
import { pageCsp } from "../../src/web/page.js"
import { layerHttp, layerStore, publish } from "./HttpFixture.js"

const fetchPath = (path: string, init?: RequestInit) =>
  Effect.flatMap(HttpListener, (l) => Effect.promise(() => fetch(`${l.url}${path}`, init)))

const text = (res: Response) => Effect.promise(() => res.text())

/** Sends `head` on a raw socket and collects what comes back until the server closes the connection. */
const rawExchange = (head: string, options: { readonly stallMs?: number } = {}) =>
  Effect.flatMap(HttpListener, ({ port }) =>
    Effect.async<{ readonly received: string; readonly bytes: number; readonly closedBy: "server" | "error" }>((resume) => {
      const socket = connect(port, "127.0.0.1")
      const chunks: Array<Buffer> = []
      let bytes = 0
      let stalled = false
      socket.on("data", (chunk: Buffer) => {
        bytes += chunk.length
        if (chunks.length < 4) chunks.push(chunk)
        // A client that stops reading a download for a while. (A paused socket cannot see the server close it,
        // so it reads on afterwards and counts what had reached it before the cut.)
        if (options.stallMs !== undefined && !stalled) {
          stalled = true
          socket.pause()
          setTimeout(() => socket.resume(), options.stallMs)
        }
      })
      socket.on("close", (hadError) =>
        resume(Effect.succeed({ received: Buffer.concat(chunks).toString("latin1"), bytes, closedBy: hadError ? "error" : "server" })))
      socket.on("error", () => {})
      socket.write(head)
      return Effect.sync(() => socket.destroy())
    }))

const statusOf = (response: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(response)?.[1] ?? "0")

describe("HTTP server: operations", () => {
  it.layer(layerHttp().pipe(Layer.provideMerge(layerStore)))((it) => {
    it.effect("answers /healthz and /readyz", () =>
      Effect.gen(function* () {
        const health = yield* fetchPath("/healthz")
        assert.strictEqual(health.status, 200)
        assert.deepStrictEqual(JSON.parse(yield* text(health)), { status: "ok" })
        const ready = yield* fetchPath("/readyz")
        assert.strictEqual(ready.status, 200)
        assert.deepStrictEqual(JSON.parse(yield* text(ready)), { status: "ready" })
        assert.strictEqual(ready.headers.get("cache-control"), "no-store")
      }))

    it.effect("exposes Prometheus metrics that count requests", () =>
      Effect.gen(function* () {
        yield* fetchPath("/api/v1/packages")
        yield* fetchPath("/api/v1/packages/nobody/nothing")
        const res = yield* fetchPath("/metrics")
        assert.strictEqual(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8")
        const body = yield* text(res)
        assert.match(body, /# TYPE upm_requests_total counter/)
        assert.match(body, /^upm_requests_total\{protocol="http",type="list"\} [1-9]\d*$/m)
        assert.match(body, /^upm_requests_total\{protocol="http",type="package"\} [1-9]\d*$/m)
        assert.match(body, /^upm_http_responses_total\{status="404"\} [1-9]\d*$/m)
        assert.match(body, /# TYPE upm_http_request_duration_seconds histogram/)
        assert.match(body, /^upm_http_request_duration_seconds_bucket\{le="\+Inf"\} [1-9]\d*$/m)
        // Every sample line is `name{labels} value`.
        for (const line of body.split("\n")) {
          if (line === "" || line.startsWith("#")) continue
          assert.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? (-?[0-9.e+-]+|\+Inf|-Inf|NaN)$/, line)
        }
      }))

    it.effect("serves the web page with a strict CSP and no inline script", () =>
      Effect.gen(function* () {
        const page = yield* fetchPath("/")
        assert.strictEqual(page.status, 200)
        assert.strictEqual(page.headers.get("content-type"), "text/html; charset=utf-8")
        assert.strictEqual(page.headers.get("content-security-policy"), pageCsp)
        assert.include(pageCsp, "script-src 'self'")
        assert.notInclude(pageCsp, "unsafe-inline")
        assert.notInclude(pageCsp, "unsafe-eval")
        const html = yield* text(page)
        for (const tag of html.match(/<script[^>]*>/g) ?? []) assert.match(tag, /src="\/assets\/app\.js"/)
        assert.notMatch(html, /<script[^>]*>[^<]/)
        const js = yield* fetchPath("/assets/app.js")
        assert.strictEqual(js.headers.get("content-type"), "text/javascript; charset=utf-8")
        const etag = js.headers.get("etag") ?? ""
        yield* text(js)
        assert.strictEqual((yield* fetchPath("/assets/app.js", { headers: { "if-none-match": etag } })).status, 304)
        assert.strictEqual((yield* fetchPath("/assets/app.css")).headers.get("content-type"), "text/css; charset=utf-8")
      }))

    it.effect("returns a request id, keeping a sane one from the client", () =>
      Effect.gen(function* () {
        const mine = yield* fetchPath("/healthz", { headers: { "x-request-id": "abc-123" } })
        assert.strictEqual(mine.headers.get("x-request-id"), "abc-123")
        const hostile = yield* fetchPath("/healthz", { headers: { "x-request-id": "<script>alert(1)</script>" } })
        assert.match(hostile.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/)
        const fresh = yield* fetchPath("/healthz")
        assert.match(fresh.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/)
      }))

    it.effect("is read-only: other methods get a JSON 405", () =>
      Effect.gen(function* () {
        for (const method of ["POST", "PUT", "DELETE", "PATCH"]) {
          const res = yield* fetchPath("/api/v1/packages", { method, body: "x" })
          assert.strictEqual(res.status, 405, method)
          assert.strictEqual(res.headers.get("allow"), "GET, HEAD")
          assert.strictEqual(JSON.parse(yield* text(res))._tag, "MethodNotAllowed")
        }
      }))

    it.effect("counts HTTP connections: opened in total, open now until they close", () =>
      Effect.gen(function* () {
        const sample = (series: string) =>
          Effect.map(Effect.flatMap(fetchPath("/metrics", { headers: { connection: "close" } }), text), (body) =>
            Number(body.split("\n").find((l) => l.startsWith(`${series} `))?.split(" ")[1] ?? "0"))
        const total = "upm_connections_total{protocol=\"http\"}"
        const open = "upm_connections_open{protocol=\"http\"}"
        const before = yield* sample(total)
        const { port } = yield* HttpListener
        // Two idle connections of our own, then closed.
        const sockets = yield* Effect.promise(() =>
          Promise.all([0, 1].map(() => new Promise<ReturnType<typeof connect>>((resolve) => {
            const socket = connect(port, "127.0.0.1", () => resolve(socket))
          }))))
        const during = yield* sample(open)
        assert.isAtLeast(yield* sample(total), before + 2)
        for (const socket of sockets) socket.destroy()
        // (it.effect runs on the TestClock: wait on a real timer for the server to see the closes.)
        yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 200)))
        assert.isAtMost(yield* sample(open), during - 2)
      }))

    it.effect("answers HEAD on every GET route: the GET's status and headers, no body", () =>
      Effect.gen(function* () {
        yield* publish("alice/head", "1.0.0", { "a.txt": "hello\n", "big.bin": new Uint8Array(300 * 1024).fill(7) })
        const base = "/api/v1/packages/alice/head/1.0.0"
        for (const path of [
          "/", "/assets/app.js", "/healthz", "/readyz", "/metrics", "/openapi.json", "/api/v1/packages",
          "/api/v1/packages/alice/head", base, `${base}/tree`, `${base}/files/a.txt`, `${base}/files/big.bin`,
          `${base}/archive.tar.gz`, `${base}/archive.zip`, "/api/v1/packages/alice/nope"
        ]) {
          const get = yield* fetchPath(path)
          const getBody = new Uint8Array(yield* Effect.promise(() => get.arrayBuffer()))
          const head = yield* rawExchange(`HEAD ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
          assert.strictEqual(statusOf(head.received), get.status, path)
          // Nothing after the head.
          assert.isTrue(head.received.endsWith("\r\n\r\n"), path)
          const headers = new Map(head.received.split("\r\n").slice(1).filter((l) => l.includes(":")).map((l) =>
            [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()] as const))
          assert.strictEqual(headers.get("content-type"), get.headers.get("content-type") ?? undefined, path)
          if (get.headers.get("etag") !== null) assert.strictEqual(headers.get("etag"), get.headers.get("etag"), path)
          // Downloads and files say their length up front, GET and HEAD alike.
          if (path.startsWith(`${base}/`) && !path.endsWith("/tree")) {
            assert.strictEqual(headers.get("content-length"), String(getBody.length), path)
            assert.strictEqual(get.headers.get("content-length"), String(getBody.length), path)
          }
        }
      }))

    it.effect("refuses huge query strings: 414 from us, 431 from Node past 16 KiB", () =>
      Effect.gen(function* () {
        const long = yield* fetchPath(`/api/v1/packages?q=${"a".repeat(10_000)}`)
        assert.strictEqual(long.status, 414)
        assert.deepStrictEqual(JSON.parse(yield* text(long)), { _tag: "UriTooLong", message: "the request URL is longer than 4096 bytes" })
        const huge = yield* rawExchange(`GET /api/v1/packages?q=${"a".repeat(100_000)} HTTP/1.1\r\nHost: x\r\n\r\n`)
        assert.strictEqual(statusOf(huge.received), 431)
        // Still serving.
        assert.strictEqual((yield* fetchPath("/healthz")).status, 200)
      }))

    it.effect("labels metrics by route, not by path", () =>
      Effect.sync(() => {
        assert.strictEqual(routeOf("/api/v1/packages"), "list")
        assert.strictEqual(routeOf("/api/v1/packages/a/b"), "package")
        assert.strictEqual(routeOf("/api/v1/packages/a/b/1.0.0"), "release")
        assert.strictEqual(routeOf("/api/v1/packages/a/b/1.0.0/files/x/y.js"), "file")
        assert.strictEqual(routeOf("/api/v1/packages/a/b/1.0.0/archive.zip"), "archive.zip")
        assert.strictEqual(routeOf("/assets/app.js"), "asset")
        assert.strictEqual(routeOf("/random/thing"), "other")
      }))
  })
})

describe("HTTP server: slow clients", () => {
  const big = new Uint8Array(16 * 1024 * 1024).fill(97)
  // Short, but not so short that a loaded machine (client and server share this process) trips it while reading.
  const slow = layerHttp({ headersTimeout: 300, idleTimeout: 1000, maxFileBytes: 32 * 1024 * 1024 }).pipe(
    Layer.provideMerge(Layer.effectDiscard(publish("alice/big", "1.0.0", { "big.txt": big }))),
    Layer.provideMerge(layerStore)
  )
  // Real time is the point here: Node's own timers cut the connections.
  layer(slow, { timeout: 30_000, excludeTestServices: true })((it) => {
    it.effect("cuts a client that never finishes its request head (slowloris)", () =>
      Effect.gen(function* () {
        const result = yield* rawExchange("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").pipe(Effect.timeout("10 seconds"))
        // Node answers 408 Request Timeout and closes, or just closes.
        assert.include([0, 408], statusOf(result.received))
      }))

    it.effect("closes a connection whose client stops reading a download", () =>
      Effect.gen(function* () {
        const result = yield* rawExchange(
          "GET /api/v1/packages/alice/big/1.0.0/files/big.txt HTTP/1.1\r\nHost: x\r\n\r\n",
          { stallMs: 3_000 } // well past the 1 s idle timeout
        ).pipe(Effect.timeout("10 seconds"))
        assert.strictEqual(statusOf(result.received), 200)
        assert.isBelow(result.bytes, big.length)
      }))

    it.effect("serves the same download in full to a client that reads", () =>
      Effect.gen(function* () {
        const res = yield* fetchPath("/api/v1/packages/alice/big/1.0.0/files/big.txt")
        const body = yield* Effect.promise(() => res.arrayBuffer())
        assert.strictEqual(body.byteLength, big.length)
      }))
  })
})

describe("HTTP server: store failures and logs", () => {
  it.scoped("answers /readyz with 503 and store-backed endpoints with a JSON 503 when the store fails", () =>
    Effect.gen(function* () {
      const ready = yield* fetchPath("/readyz")
      assert.strictEqual(ready.status, 503)
      assert.strictEqual(JSON.parse(yield* text(ready))._tag, "Unavailable")
      const list = yield* fetchPath("/api/v1/packages")
      assert.strictEqual(list.status, 503)
      assert.deepStrictEqual(JSON.parse(yield* text(list)), { _tag: "Unavailable", message: "the package store is unavailable; try again" })
      assert.strictEqual((yield* fetchPath("/healthz")).status, 200)
    }).pipe(Effect.provide(layerHttp().pipe(
      Layer.provideMerge(Registry.layer),
      Layer.provideMerge(Layer.effect(ObjectStore, Effect.map(makeMemory, (store) => {
        const down = (op: "has" | "listRefs") => Effect.fail(new StoreError({ op, detail: "disk on fire", cause: null }))
        return ObjectStore.of({ ...store, has: () => down("has"), listRefs: () => down("listRefs") })
      })))
    ))))

  it.scoped("logs one line per request, annotated with its request id", () => {
    const lines: Array<{ message: unknown; annotations: Record<string, unknown> }> = []
    const capture = Logger.replace(Logger.defaultLogger, Logger.make(({ annotations, message }) => {
      lines.push({ message, annotations: Object.fromEntries(HashMap.toEntries(annotations)) })
    }))
    return Effect.gen(function* () {
      yield* fetchPath("/api/v1/packages/nobody/nothing", { headers: { "x-request-id": "req-42" } })
      const line = lines.find((l) => l.annotations["requestId"] === "req-42")
      assert.isDefined(line)
      assert.deepInclude(line?.annotations, { method: "GET", path: "/api/v1/packages/nobody/nothing", route: "package", status: 404 })
    }).pipe(Effect.provide(layerHttp({ logRequests: true }).pipe(Layer.provideMerge(layerStore), Layer.provide(capture))))
  })

  it.scoped("starts from the server config beside the listener (free port when the TCP port is 0), or not at all", () => {
    const urls: Array<string> = []
    const capture = Logger.replace(Logger.defaultLogger, Logger.make(({ annotations, message }) => {
      const url = HashMap.get(annotations, "url")
      if (String(message) === "http listening" && url._tag === "Some") urls.push(String(url.value))
    }))
    const start = (config: ServerConfig.ServerConfig) =>
      Layer.build(HttpServer.layerFromServerConfig.pipe(
        Layer.provide(layerStore),
        Layer.provide(Layer.succeed(ServerConfig.CurrentServerConfig, config)),
        Layer.provide(capture)
      ))
    return Effect.gen(function* () {
      const base = ServerConfig.defaults
      yield* start({ ...base, port: 0 })
      assert.strictEqual(urls.length, 1)
      assert.notMatch(urls[0] ?? "", /:4823$/)
      const health = yield* Effect.promise(() => fetch(`${urls[0]}/healthz`))
      assert.strictEqual(health.status, 200)
      yield* start(HttpServer.withHttpFlags({ ...base, port: 0 }, { enabled: false }))
      assert.strictEqual(urls.length, 1)
      const bad = yield* Effect.flip(start({ ...base, port: 0, http: { port: "x" } }))
      assert.strictEqual(bad._tag, "ServerConfigError")
      assert.deepStrictEqual(HttpServer.withHttpFlags({ ...base, http: { host: "::1", port: 1 } }, { port: 2 }).http, { host: "::1", port: 2 })
    })
  })

  it.effect("decodes the http config section, refusing unknown fields", () =>
    Effect.gen(function* () {
      const config = yield* HttpServer.decodeHttpConfig({ port: 8080, headersTimeout: "2s" })
      assert.strictEqual(config.port, 8080)
      assert.strictEqual(config.enabled, true)
      const defaults = yield* HttpServer.decodeHttpConfig(undefined)
      assert.strictEqual(defaults.port, 4823)
      const bad = yield* Effect.flip(HttpServer.decodeHttpConfig({ prot: 1 }))
      assert.include(bad.detail, "http.prot")
      const port = yield* Effect.flip(HttpServer.decodeHttpConfig({ port: 70000 }))
      assert.include(port.detail, "http.port")
    }))
})
