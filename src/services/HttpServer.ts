/**
 * The HTTP server: the read API (src/services/HttpApi.ts), the web page (src/web/), and the operations endpoints
 * (/healthz, /readyz, /metrics, /openapi.json), on its own port (default 4823) beside the TCP listener, sharing
 * its ObjectStore and Registry. Read-only and anonymous: every method but GET and HEAD is refused; HEAD answers
 * every GET route with the same status and headers, and no body.
 *
 * Downloads (archives, big files) are built once into a DownloadCache on disk (`cacheDir`) and streamed from there.
 *
 * Every request gets a request id (the client's `x-request-id` when it is a short token, else a fresh one),
 * returned in `x-request-id` and attached to every log line of the request (`Effect.annotateLogs`); one log
 * line per request, counted in the metrics (src/services/Metrics.ts).
 *
 * Hostile clients: URLs longer than `maxUrlBytes` get 414 (and requests whose head exceeds Node's 16 KiB get
 * 431 from Node itself); a client that is slow to send its request head is cut at `headersTimeout`; a
 * connection idle for `idleTimeout` (e.g. a client that stopped reading a download) is closed; a handler that
 * takes longer than `handlerTimeout` to produce its response head answers 503.
 */
import {
  HttpApiBuilder, HttpApp, HttpServer, HttpServerRequest, HttpServerResponse
} from "@effect/platform"
import { ServeError } from "@effect/platform/HttpServerError"
import { NodeHttpServer, NodeHttpServerRequest } from "@effect/platform-node"
import {
  Cause, Clock, Context, Duration, Effect, Layer, Metric, Option, ParseResult, Predicate, Schema
} from "effect"
import { createHash, randomUUID } from "node:crypto"
import { createServer } from "node:http"
import { join } from "node:path"
import { ObjectHash } from "../domain/ObjectHash.js"
import { appCss, appJs, indexHtml, pageCsp } from "../web/page.js"
import { type CatalogOptions, defaultCatalogOptions, layerApi, layerCatalog, openApiSpec } from "./HttpApi.js"
import * as DownloadCache from "./DownloadCache.js"
import * as Metrics from "./Metrics.js"
import { ObjectStore } from "./ObjectStore.js"
import type { Registry } from "./Registry.js"
import type { StoreSpec } from "./StoreConfig.js"
import { CurrentServerConfig, DurationSetting, Host, Port, ServerConfigError } from "./ServerConfig.js"

// ---------------------------------------------------------------------------------------------
// Configuration: the `http` section of the server config

export const DEFAULT_HTTP_PORT = 4823

const PositiveInt = Schema.Int.pipe(Schema.positive({ message: () => "expected a positive integer" }))

export const HttpConfig = Schema.Struct({
  /** `false` (or `upm serve --no-http`) runs the server without HTTP. */
  enabled: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  /** Default: the TCP listener's host. */
  host: Schema.optional(Host),
  port: Schema.optionalWith(Port, { default: () => DEFAULT_HTTP_PORT }),
  /** Longest request target (path + query) accepted; longer ones get 414. */
  maxUrlBytes: Schema.optionalWith(PositiveInt, { default: () => 4096 }),
  /** Largest file the file endpoint serves (413 beyond: download the archive). */
  maxFileBytes: Schema.optionalWith(PositiveInt, { default: () => defaultCatalogOptions.maxFileBytes }),
  /** Most entries the tree endpoint lists. */
  maxTreeEntries: Schema.optionalWith(PositiveInt, { default: () => defaultCatalogOptions.maxTreeEntries }),
  /**
   * Downloads built at once (an archive written to the cache, a big file read from the store); more wait for a
   * slot. Each holds about one file of a release in memory, so this bounds the memory downloads take.
   */
  maxConcurrentBuilds: Schema.optionalWith(PositiveInt, { default: () => defaultCatalogOptions.maxConcurrentFileReads }),
  /**
   * Where built downloads are kept. Default: `upm-http-cache` inside an fs store's directory, `<file>.http-cache`
   * beside a SQLite file, else a temp directory removed at shutdown. Must be private to the server (mode 0700).
   */
  cacheDir: Schema.optional(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(4096))),
  /** Total bytes the download cache keeps; least recently used downloads are deleted beyond it. */
  cacheMaxBytes: Schema.optionalWith(PositiveInt, { default: () => 1024 * 1024 * 1024 }),
  /** Connections open at once; Node closes further ones at once until some end. */
  maxConnections: Schema.optionalWith(PositiveInt, { default: () => 512 }),
  /** A client must send its whole request head within this time (slowloris). */
  headersTimeout: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(10) }),
  /** A connection with no traffic in either direction for this long is closed (also a stalled download). */
  idleTimeout: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(30) }),
  /** A handler must produce its response head within this time, else 503. */
  handlerTimeout: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(30) }),
  /** One log line per request at info level. */
  logRequests: Schema.optionalWith(Schema.Boolean, { default: () => true })
})
export type HttpConfig = typeof HttpConfig.Type
export type HttpConfigInput = typeof HttpConfig.Encoded

export const defaultHttpConfig: HttpConfig = Schema.decodeSync(HttpConfig)({})

/** Decodes the `http` section of the server config (absent: the defaults). */
export const decodeHttpConfig = (input: unknown, source = "config") =>
  Schema.decodeUnknown(HttpConfig, { errors: "all", onExcessProperty: "error" })(input ?? {}).pipe(
    Effect.mapError((e) =>
      new ServerConfigError({
        source,
        reason: "Invalid",
        detail: ParseResult.ArrayFormatter.formatErrorSync(e)
          .map((i) => `http${i.path.length === 0 ? "" : `.${i.path.join(".")}`}: ${i.message}`)
          .join("; ")
      }))
  )

// ---------------------------------------------------------------------------------------------
// The service: where the HTTP server listens

export class HttpListener extends Context.Tag("upm/HttpListener")<HttpListener, {
  readonly host: string
  /** The bound port (the real one when 0 was asked for). */
  readonly port: number
  /** `http://host:port`, for logs and tests. */
  readonly url: string
}>() {}

// ---------------------------------------------------------------------------------------------
// Responses shared by the middleware and the plain routes

const SECURITY_HEADERS = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "cross-origin-opener-policy": "same-origin"
}
/** Everything that is not the page: no content of ours is a document that may load anything. */
const API_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"

export const jsonError = (status: number, tag: string, message: string, headers: Record<string, string> = {}) =>
  HttpServerResponse.unsafeJson({ _tag: tag, message }, { status, headers })

const etagOf = (text: string) => `"${createHash("sha1").update(text).digest("hex").slice(0, 20)}"`

/** A static asset with a content ETag; `no-cache` so a server upgrade is seen at once (a 304 costs little). */
const asset = (body: string, contentType: string) => {
  const etag = etagOf(body)
  return Effect.map(HttpServerRequest.HttpServerRequest, (request) =>
    request.headers["if-none-match"] === etag
      ? HttpServerResponse.empty({ status: 304, headers: { etag, "cache-control": "no-cache" } })
      : HttpServerResponse.text(body, {
        contentType,
        headers: { etag, "cache-control": "no-cache", "content-security-policy": pageCsp }
      }))
}

/** A short label for a request path, for metrics (bounded cardinality, unlike paths). */
export const routeOf = (path: string): string => {
  if (path === "/") return "page"
  if (path.startsWith("/assets/")) return "asset"
  if (path === "/healthz" || path === "/readyz" || path === "/metrics" || path === "/openapi.json") return path.slice(1)
  const m = /^\/api\/v1\/packages(?:\/[^/]+\/[^/]+(?:\/[^/]+(\/.*)?)?)?$/.exec(path)
  if (m === null) return "other"
  const segments = path.split("/").length - 1
  if (segments === 3) return "list"
  if (segments === 5) return "package"
  if (segments === 6) return "release"
  const rest = m[1] ?? ""
  if (rest.startsWith("/files/")) return "file"
  if (rest === "/tree" || rest === "/readme" || rest === "/archive.tar.gz" || rest === "/archive.zip") return rest.slice(1)
  return "other"
}

const requestIdOf = (header: string | undefined) =>
  header !== undefined && /^[A-Za-z0-9._:-]{1,64}$/.test(header) ? Effect.succeed(header) : Effect.sync(() => randomUUID())

// ---------------------------------------------------------------------------------------------
// Plain routes: the page, its assets, operations

/** The plain routes, on the router the API's endpoints are attached to. */
const layerRoutes = HttpApiBuilder.Router.use((router) =>
  Effect.gen(function* () {
    const store = yield* ObjectStore
    const openApi = JSON.stringify(openApiSpec)
    const openApiEtag = etagOf(openApi)
    yield* router.get("/", asset(indexHtml, "text/html; charset=utf-8"))
    yield* router.get("/assets/app.js", asset(appJs, "text/javascript; charset=utf-8"))
    yield* router.get("/assets/app.css", asset(appCss, "text/css; charset=utf-8"))
    yield* router.get("/healthz", Effect.succeed(HttpServerResponse.unsafeJson({ status: "ok" }, { headers: { "cache-control": "no-store" } })))
    yield* router.get("/readyz",
      // Reachable: a cheap read that touches the backend (a lookup of the empty blob).
      store.has(EMPTY_BLOB).pipe(
        Effect.timeout("2 seconds"),
        Effect.as(HttpServerResponse.unsafeJson({ status: "ready" }, { headers: { "cache-control": "no-store" } })),
        Effect.catchAll((e) =>
          Effect.as(
            Effect.logWarning("readiness check failed", e),
            jsonError(503, "Unavailable", "the package store is not reachable", { "cache-control": "no-store" })
          ))
      ))
    yield* router.get("/metrics",
      Effect.map(Metrics.prometheusText, (text) =>
        HttpServerResponse.text(text, { contentType: Metrics.PROMETHEUS_CONTENT_TYPE, headers: { "cache-control": "no-store" } })))
    yield* router.get("/openapi.json",
      Effect.succeed(HttpServerResponse.text(openApi, {
        contentType: "application/json",
        headers: { etag: openApiEtag, "cache-control": "no-cache", "access-control-allow-origin": "*" }
      })))
  }))

/** `git hash-object -t blob /dev/null`. */
const EMPTY_BLOB = ObjectHash.make("e69de29bb2d1d6434b8b29ae775ad8c2e48c5391")

// ---------------------------------------------------------------------------------------------
// The middleware around everything

const handle = <E, R>(
  config: HttpConfig,
  app: HttpApp.Default<E, R>,
  request: HttpServerRequest.HttpServerRequest,
  requestId: string
) =>
  Effect.gen(function* () {
    const start = yield* Clock.currentTimeNanos
    const path = request.url.split("?")[0] ?? "/"
    const route = routeOf(path)
    const response: HttpServerResponse.HttpServerResponse =
      Buffer.byteLength(request.url) > config.maxUrlBytes
        ? jsonError(414, "UriTooLong", `the request URL is longer than ${config.maxUrlBytes} bytes`)
        : request.method !== "GET" && request.method !== "HEAD"
        ? jsonError(405, "MethodNotAllowed", "this server is read-only: only GET and HEAD are accepted", { allow: "GET, HEAD" })
        : yield* asGet(request, app).pipe(
          Effect.timeoutFail({ duration: config.handlerTimeout, onTimeout: () => "HandlerTimeout" as const }),
          Effect.catchAllCause((cause) => {
            const failure = Cause.failureOption(cause)
            if (Option.isSome(failure) && failure.value === "HandlerTimeout") {
              return Effect.as(Effect.logWarning("handler timed out"), jsonError(503, "Timeout", "the server took too long to answer"))
            }
            if (Option.isSome(failure) && Predicate.isTagged(failure.value, "RouteNotFound")) {
              return Effect.succeed(jsonError(404, "NotFound", `no such resource: ${path.slice(0, 200)}`))
            }
            if (Cause.isInterruptedOnly(cause)) return Effect.interrupt
            return Effect.as(Effect.logError("request failed", cause), jsonError(500, "ServerError", "internal error"))
          })
        )
    const status = response.status
    const headers: Record<string, string> = { ...SECURITY_HEADERS, "x-request-id": requestId }
    if (response.headers["content-security-policy"] === undefined) headers["content-security-policy"] = API_CSP
    if (path.startsWith("/api/")) headers["access-control-allow-origin"] = "*"
    const elapsed = Number((yield* Clock.currentTimeNanos) - start) / 1e9
    yield* Metrics.countRequest("http", route)
    yield* Metric.increment(Metric.tagged(Metrics.httpResponsesTotal, "status", String(status)))
    yield* Metric.update(Metrics.httpRequestDuration, elapsed)
    if (config.logRequests) {
      yield* Effect.logInfo("http request").pipe(
        Effect.annotateLogs({ method: request.method, path: path.slice(0, 256), route, status, ms: Math.round(elapsed * 10_000) / 10 })
      )
    }
    return HttpServerResponse.setHeaders(response, headers)
  })

/**
 * Runs `app` for a GET or HEAD request. The router knows GET routes only, so a HEAD request is routed as a GET
 * (its Node request's method reads GET while the app runs) and gets the GET's status and headers; the platform
 * then writes no body for it, since the method reads HEAD again by then (a streamed body is never started).
 */
const asGet = <E, R>(request: HttpServerRequest.HttpServerRequest, app: HttpApp.Default<E, R>): HttpApp.Default<E, R> => {
  if (request.method !== "HEAD") return app
  const source = NodeHttpServerRequest.toIncomingMessage(request)
  return Effect.acquireUseRelease(
    Effect.sync(() => {
      source.method = "GET"
    }),
    () => app,
    () =>
      Effect.sync(() => {
        source.method = "HEAD"
      })
  )
}

/** Request id, limits, errors as JSON, security headers, metrics and the request's log line, around `app`. */
const withRequestHandling = (config: HttpConfig) => <E, R>(app: HttpApp.Default<E, R>) =>
  Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
    Effect.flatMap(requestIdOf(request.headers["x-request-id"]), (requestId) =>
      // Every log line of the request carries its id, the handlers' own included.
      Effect.annotateLogs(handle(config, app, request, requestId), "requestId", requestId)))

// ---------------------------------------------------------------------------------------------
// Layers

const nodeServer = (config: HttpConfig, host: string) =>
  NodeHttpServer.layer(() => {
    const headersMs = Duration.toMillis(config.headersTimeout)
    const server = createServer({
      headersTimeout: headersMs,
      requestTimeout: Math.max(headersMs, Duration.toMillis(config.idleTimeout)),
      keepAliveTimeout: 5_000,
      // How often Node checks the two timeouts above (its default, 30 s, would let a slow client stay longer).
      connectionsCheckingInterval: Math.max(10, Math.min(1_000, Math.floor(headersMs / 4))),
      maxHeaderSize: 16 * 1024
    })
    server.setTimeout(Duration.toMillis(config.idleTimeout))
    server.maxConnections = config.maxConnections
    server.on("connection", (socket) => {
      socket.once("close", Metrics.unsafeTrackConnection("http"))
    })
    return server
  }, { port: config.port, host })

export interface LayerOptions {
  /** The host when `config.host` is not set (default 127.0.0.1). */
  readonly defaultHost?: string
  /** The download cache's directory when `config.cacheDir` is not set (default: a temp directory). */
  readonly defaultCacheDir?: string
}

/**
 * Where the download cache goes by default: inside an fs store's directory (git ignores unknown entries of a bare
 * repository), beside a SQLite file; none (a temp directory) for memory and PostgreSQL stores.
 */
export const defaultCacheDirFor = (store: StoreSpec): string | undefined => {
  switch (store._tag) {
    case "fs":
      return join(store.path, "upm-http-cache")
    case "sqlite":
      return store.path === ":memory:" ? undefined : `${store.path}.http-cache`
    default:
      return undefined
  }
}

/**
 * The HTTP server, listening as `config` says (its `enabled` is not looked at: use `layerIfEnabled` or leave the
 * layer out). Provides where it listens.
 */
export const layer = (
  config: HttpConfig,
  options: LayerOptions = {}
): Layer.Layer<HttpListener, ServeError, ObjectStore | Registry> => {
  const host = config.host ?? options.defaultHost ?? "127.0.0.1"
  const catalogOptions: CatalogOptions = {
    ...defaultCatalogOptions,
    maxFileBytes: config.maxFileBytes,
    maxTreeEntries: config.maxTreeEntries,
    maxConcurrentFileReads: config.maxConcurrentBuilds
  }
  const cacheDir = config.cacheDir ?? options.defaultCacheDir
  const cacheOptions = { maxBytes: config.cacheMaxBytes, maxConcurrentBuilds: config.maxConcurrentBuilds }
  const downloadCache = (cacheDir === undefined
    ? DownloadCache.layerTemp(cacheOptions)
    : DownloadCache.layer({ ...cacheOptions, dir: cacheDir })
  ).pipe(Layer.catchAll((e) => Layer.fail(new ServeError({ cause: e }))))
  const serve = HttpApiBuilder.httpApp.pipe(
    Effect.map((app) => HttpServer.serve(withRequestHandling(config)(app))),
    Layer.unwrapEffect,
    Layer.provide(layerRoutes),
    Layer.provide([HttpApiBuilder.Router.Live, HttpApiBuilder.Middleware.layer]),
    Layer.provide(layerApi),
    Layer.provide(layerCatalog(catalogOptions)),
    Layer.provide(downloadCache)
  )
  const listener = Layer.effect(HttpListener, Effect.gen(function* () {
    const server = yield* HttpServer.HttpServer
    const address = server.address
    const port = address._tag === "TcpAddress" ? address.port : 0
    const shown = address._tag === "TcpAddress" ? address.hostname : host
    const url = `http://${shown.includes(":") ? `[${shown}]` : shown}:${port}`
    yield* Effect.logInfo("http listening").pipe(Effect.annotateLogs({ url }))
    return { host: shown, port, url }
  }))
  return Layer.merge(serve, listener).pipe(Layer.provide(nodeServer(config, host)))
}

/** The server as `config` says, or nothing when `enabled` is false. */
export const layerIfEnabled = (
  config: HttpConfig,
  options: LayerOptions = {}
): Layer.Layer<never, ServeError, ObjectStore | Registry> =>
  config.enabled ? Layer.discard(layer(config, options)) : Layer.empty

/**
 * The server from the `http` section of the running server's config (CurrentServerConfig), on the TCP
 * listener's host unless the section names one. When the TCP port is 0 (tests) and the section names no port,
 * HTTP takes a free port too, so several test servers never fight over 4823.
 */
export const layerFromServerConfig: Layer.Layer<
  never,
  ServeError | ServerConfigError,
  CurrentServerConfig | ObjectStore | Registry
> = Layer.unwrapEffect(Effect.gen(function* () {
  const server = yield* CurrentServerConfig
  const section = server.http
  const portGiven = Predicate.isRecord(section) && section["port"] !== undefined
  const config = yield* decodeHttpConfig(section, "http config")
  const defaultCacheDir = defaultCacheDirFor(server.store)
  return layerIfEnabled(server.port === 0 && !portGiven ? { ...config, port: 0 } : config, {
    defaultHost: server.host,
    ...(defaultCacheDir === undefined ? {} : { defaultCacheDir })
  })
}))

/** `upm serve --http-port P` / `--no-http`: the flags override the config file's `http` section. */
export const withHttpFlags = <C extends { readonly http?: unknown }>(
  config: C,
  flags: { readonly port?: number; readonly enabled?: boolean }
): C =>
  flags.port === undefined && flags.enabled === undefined
    ? config
    : { ...config, http: { ...(Predicate.isRecord(config.http) ? config.http : {}), ...flags } }
