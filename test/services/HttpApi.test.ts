import { assert, describe, it, layer } from "@effect/vitest"
import { Context, Effect, Layer, Ref } from "effect"
import { mkdtemp, readdir, rm } from "node:fs/promises"
import { request } from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { gunzipSync } from "node:zlib"
import tar from "tar-stream"
import yauzl from "yauzl"
import { HttpListener } from "../../src/services/HttpServer.js"
import * as Registry from "../../src/services/Registry.js"
import { layerHttp, layerStore, publish } from "./HttpFixture.js"

// ---------------------------------------------------------------------------------------------
// Helpers

const fetchPath = (path: string, init?: RequestInit) =>
  Effect.flatMap(HttpListener, (l) => Effect.promise(() => fetch(`${l.url}${path}`, init)))

const getJson = (path: string, init?: RequestInit) =>
  Effect.flatMap(fetchPath(path, init), (res) =>
    Effect.map(Effect.promise(() => res.text()), (text) => ({ res, status: res.status, body: JSON.parse(text) as Record<string, any> })))

const getBytes = (path: string, init?: RequestInit) =>
  Effect.flatMap(fetchPath(path, init), (res) =>
    Effect.map(Effect.promise(() => res.arrayBuffer()), (buf) => ({ res, status: res.status, bytes: new Uint8Array(buf) })))

/** A request with the path sent exactly as given (fetch would normalize `..` away). */
const raw = (path: string) =>
  Effect.flatMap(HttpListener, ({ port }) =>
    Effect.async<{ status: number; type: string; body: string }>((resume) => {
      const req = request({ host: "127.0.0.1", port, path, method: "GET" }, (res) => {
        const chunks: Array<Buffer> = []
        res.on("data", (c: Buffer) => chunks.push(c))
        res.on("end", () =>
          resume(Effect.succeed({ status: res.statusCode ?? 0, type: String(res.headers["content-type"]), body: Buffer.concat(chunks).toString("utf8") })))
      })
      req.on("error", (e) => resume(Effect.die(e)))
      req.end()
    }))

const untar = (gz: Uint8Array) =>
  Effect.async<Map<string, { type: string; body: string; mode: number; linkname: string | null }>>((resume) => {
    const out = new Map<string, { type: string; body: string; mode: number; linkname: string | null }>()
    const extract = tar.extract()
    extract.on("entry", (header, stream, next) => {
      const chunks: Array<Buffer> = []
      stream.on("data", (c: unknown) => {
        if (c instanceof Uint8Array) chunks.push(Buffer.from(c))
      })
      stream.on("end", () => {
        out.set(header.name, { type: header.type ?? "file", body: Buffer.concat(chunks).toString("utf8"), mode: header.mode ?? 0, linkname: header.linkname ?? null })
        next()
      })
    })
    extract.on("finish", () => resume(Effect.succeed(out)))
    extract.on("error", (e) => resume(Effect.die(e)))
    extract.end(gunzipSync(gz))
  })

const unzip = (bytes: Uint8Array) =>
  Effect.async<Map<string, string>>((resume) => {
    const out = new Map<string, string>()
    yauzl.fromBuffer(Buffer.from(bytes), { lazyEntries: true }, (err, zip) => {
      if (err || zip === undefined) return resume(Effect.die(err))
      zip.on("entry", (entry: yauzl.Entry) => {
        if (entry.fileName.endsWith("/")) {
          out.set(entry.fileName, "")
          return zip.readEntry()
        }
        zip.openReadStream(entry, (e, stream) => {
          if (e || stream === undefined) return resume(Effect.die(e))
          const chunks: Array<Buffer> = []
          stream.on("data", (c: Buffer) => chunks.push(c))
          stream.on("end", () => {
            out.set(entry.fileName, Buffer.concat(chunks).toString("utf8"))
            zip.readEntry()
          })
        })
      })
      zip.on("end", () => resume(Effect.succeed(out)))
      zip.readEntry()
    })
  })

// ---------------------------------------------------------------------------------------------
// Fixture: a few packages published into the memory store

const BIG_PART = 3 * 1024 * 1024
const PNG = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d])
const README = [
  "# Greetings", "", "Says *hello*. See [the guide](docs/guide.md).", "",
  "<script>alert('readme')</script>", "<img src=x onerror=alert(1)>", "[click](javascript:alert(1))"
].join("\n")

const greetingsFiles = {
  "README.md": README,
  "lib/index.js": "export const hello = () => 'hello'\n",
  "docs/guide.md": "# Guide\n",
  "bin/run": { executable: "#!/bin/sh\necho hi\n" },
  "link": { symlink: "lib/index.js" },
  "page.html": "<html><script>alert(1)</script></html>",
  "logo.png": PNG,
  "data.bin": Uint8Array.from([1, 2, 0, 3, 255]),
  "notes": "plain text without extension\n",
  "100%.txt": "percent\n",
  "big.txt": "x".repeat(5000)
}

class SignerOf extends Context.Tag("test/SignerOf")<SignerOf, Ref.Ref<string | undefined>>() {}

const fixture = Layer.effectDiscard(Effect.gen(function* () {
  const signerOf = yield* SignerOf
  yield* publish("alice/greetings", "1.0.0", { "README.md": "# Old\n" }, { description: "Says hello", time: 1_600_000_000 })
  const signed = yield* publish("alice/greetings", "1.1.0", greetingsFiles, {
    description: "Says hello",
    dependencies: { "bob/colors": "^2.0.0" },
    time: 1_700_000_000,
    sign: true
  })
  yield* Ref.set(signerOf, signed.signer)
  yield* publish("alice/greetings", "2.0.0-beta.1", { "README.md": "# Beta\n" }, { description: "Says hello (beta)", time: 1_700_000_100 })
  yield* publish("bob/colors", "2.1.0", { "index.js": "1" }, {
    description: "<img src=x onerror=alert('desc')> colors",
    manifestOnly: true
  })
  yield* publish("alice/big", "1.0.0", { "a.bin": "a".repeat(BIG_PART), "b.bin": "b".repeat(BIG_PART) })
  for (let i = 1; i <= 23; i++) yield* publish(`carol/pkg-${String(i).padStart(2, "0")}`, "0.1.0", { "a.txt": `${i}` })
}))

// One archive at a time: the download tests then also show that a slot comes back however a download ends.
const TestLayer = layerHttp({ maxFileBytes: 1024, maxConcurrentBuilds: 1 }).pipe(
  Layer.provideMerge(fixture),
  Layer.provideMerge(layerStore),
  Layer.provideMerge(Layer.effect(SignerOf, Ref.make<string | undefined>(undefined)))
)

const v = "/api/v1/packages/alice/greetings/1.1.0"

// ---------------------------------------------------------------------------------------------

describe("HTTP API", () => {
  it.layer(TestLayer, { timeout: 30_000 })((it) => {
    it.effect("lists packages, paginated, with search", () =>
      Effect.gen(function* () {
        const first = yield* getJson("/api/v1/packages")
        assert.strictEqual(first.status, 200)
        assert.strictEqual(first.body.total, 26)
        assert.strictEqual(first.body.packages.length, 20)
        assert.strictEqual(first.body.packages[1].name, "alice/greetings")
        assert.strictEqual(first.body.packages[1].latest, "1.1.0")
        assert.strictEqual(first.body.packages[1].versions, 3)
        assert.strictEqual(first.body.packages[1].description, "Says hello")
        assert.strictEqual(first.res.headers.get("cache-control"), "public, max-age=10, must-revalidate")
        const third = yield* getJson("/api/v1/packages?page=3&perPage=10")
        assert.deepStrictEqual(third.body.packages.map((p: any) => p.name), [
          "carol/pkg-18", "carol/pkg-19", "carol/pkg-20", "carol/pkg-21", "carol/pkg-22", "carol/pkg-23"
        ])
        const search = yield* getJson("/api/v1/packages?q=GREET")
        assert.strictEqual(search.body.total, 1)
        assert.strictEqual(search.body.packages[0].name, "alice/greetings")
        const none = yield* getJson("/api/v1/packages?q=nothing-like-this")
        assert.strictEqual(none.body.total, 0)
        assert.deepStrictEqual(none.body.packages, [])
        const beyond = yield* getJson("/api/v1/packages?page=99")
        assert.deepStrictEqual(beyond.body.packages, [])
      }))

    it.effect("refuses bad list parameters with a JSON 400", () =>
      Effect.gen(function* () {
        for (const query of ["perPage=0", "perPage=101", "page=abc", "page=0", `q=${"x".repeat(300)}`]) {
          const res = yield* getJson(`/api/v1/packages?${query}`)
          assert.strictEqual(res.status, 400, query)
          assert.strictEqual(res.res.headers.get("content-type"), "application/json")
          assert.strictEqual(res.body._tag, "HttpApiDecodeError")
        }
      }))

    it.effect("gives a package's versions with release metadata, newest first", () =>
      Effect.gen(function* () {
        const { status, body, res } = yield* getJson("/api/v1/packages/alice/greetings")
        assert.strictEqual(status, 200)
        assert.strictEqual(body.latest, "1.1.0")
        assert.deepStrictEqual(body.versions.map((r: any) => r.version), ["2.0.0-beta.1", "1.1.0", "1.0.0"])
        const release = body.versions[1]
        assert.match(release.hash, /^[0-9a-f]{40}$/)
        assert.match(release.tree, /^[0-9a-f]{40}$/)
        assert.strictEqual(release.date, "2023-11-14T22:13:20.000Z")
        assert.strictEqual(release.description, "Says hello")
        assert.deepStrictEqual(release.dependencies, { "bob/colors": "^2.0.0" })
        assert.strictEqual(release.metadataSource, "tag")
        // Signed with an ed25519 key: verified, with the key's fingerprint.
        assert.strictEqual(release.verified, true)
        assert.strictEqual(release.signer, yield* Effect.flatMap(SignerOf, Ref.get))
        assert.match(release.signer, /^SHA256:[A-Za-z0-9+/]{43}$/)
        assert.isNull(release.verification)
        // Unsigned: not verified, and why.
        const unsigned = body.versions[2]
        assert.strictEqual(unsigned.verified, false)
        assert.strictEqual(unsigned.signer, null)
        assert.match(unsigned.verification, /^Unsigned: /)
        assert.isNotNull(res.headers.get("etag"))
        // The ETag changes when the version list does, and a matching one gives 304.
        const again = yield* fetchPath("/api/v1/packages/alice/greetings", { headers: { "if-none-match": res.headers.get("etag") ?? "" } })
        assert.strictEqual(again.status, 304)
      }))

    it.effect("reads metadata from upm.json when the tag message has none; HTML stays data", () =>
      Effect.gen(function* () {
        const { body, res } = yield* getJson("/api/v1/packages/bob/colors")
        assert.strictEqual(res.headers.get("content-type"), "application/json")
        assert.strictEqual(res.headers.get("x-content-type-options"), "nosniff")
        assert.strictEqual(body.versions[0].metadataSource, "manifest")
        assert.strictEqual(body.versions[0].description, "<img src=x onerror=alert('desc')> colors")
      }))

    it.effect("serves a release with an immutable cache and a strong ETag; latest is not immutable", () =>
      Effect.gen(function* () {
        const { body, res } = yield* getJson(v)
        assert.strictEqual(body.version, "1.1.0")
        assert.strictEqual(res.headers.get("cache-control"), "public, max-age=31536000, immutable")
        const etag = res.headers.get("etag") ?? ""
        assert.match(etag, new RegExp(`^"${body.hash}-release"$`))
        const cached = yield* fetchPath(v, { headers: { "if-none-match": etag } })
        assert.strictEqual(cached.status, 304)
        assert.strictEqual((yield* Effect.promise(() => cached.text())), "")
        const latest = yield* getJson("/api/v1/packages/alice/greetings/latest")
        assert.strictEqual(latest.body.version, "1.1.0")
        assert.strictEqual(latest.res.headers.get("cache-control"), "public, max-age=10, must-revalidate")
      }))

    it.effect("answers unknown packages and versions with a JSON 404, bad names with a JSON 400", () =>
      Effect.gen(function* () {
        const unknown = yield* getJson("/api/v1/packages/alice/nope")
        assert.strictEqual(unknown.status, 404)
        assert.deepStrictEqual(unknown.body, { _tag: "NotFound", message: "no package named alice/nope" })
        const version = yield* getJson("/api/v1/packages/alice/greetings/9.9.9")
        assert.strictEqual(version.status, 404)
        assert.strictEqual(version.body.message, "alice/greetings has no version 9.9.9")
        for (const path of ["/api/v1/packages/nobody/nothing/1.0.0/tree", "/api/v1/packages/nobody/nothing/1.0.0/archive.zip"]) {
          const res = yield* getJson(path)
          assert.strictEqual(res.status, 404, path)
          assert.strictEqual(res.body._tag, "NotFound")
        }
        for (const path of [
          "/api/v1/packages/Alice/greetings",
          "/api/v1/packages/%3Cscript%3Ealert(1)%3C%2Fscript%3E/x",
          "/api/v1/packages/alice/greetings/not-a-version"
        ]) {
          const res = yield* getJson(path)
          assert.strictEqual(res.status, 400, path)
          assert.strictEqual(res.res.headers.get("content-type"), "application/json")
        }
        const route = yield* getJson("/api/v2/whatever")
        assert.strictEqual(route.status, 404)
        assert.strictEqual(route.body._tag, "NotFound")
      }))

    it.effect("lists a release's file tree with sizes and types", () =>
      Effect.gen(function* () {
        const { body, res } = yield* getJson(`${v}/tree`)
        assert.strictEqual(res.headers.get("cache-control"), "public, max-age=31536000, immutable")
        assert.strictEqual(body.readme, "README.md")
        const byPath = new Map<string, any>(body.entries.map((e: any) => [e.path, e]))
        assert.deepInclude(byPath.get("lib"), { type: "directory", size: null })
        assert.deepInclude(byPath.get("lib/index.js"), { type: "file", mode: "100644", size: "export const hello = () => 'hello'\n".length })
        assert.deepInclude(byPath.get("bin/run"), { type: "file", mode: "100755" })
        assert.deepInclude(byPath.get("link"), { type: "symlink", size: "lib/index.js".length })
        assert.deepInclude(byPath.get("big.txt"), { size: 5000 })
      }))

    it.effect("serves file content with the right content type and a sandboxing CSP", () =>
      Effect.gen(function* () {
        const cases: ReadonlyArray<readonly [string, string]> = [
          ["lib/index.js", "text/javascript; charset=utf-8"],
          ["docs/guide.md", "text/markdown; charset=utf-8"],
          ["upm.json", "application/json"],
          ["logo.png", "image/png"],
          ["data.bin", "application/octet-stream"],
          ["notes", "text/plain; charset=utf-8"],
          // Active content is never served as a document of this site.
          ["page.html", "text/plain; charset=utf-8"]
        ]
        for (const [path, type] of cases) {
          const { status, res } = yield* getBytes(`${v}/files/${path}`)
          assert.strictEqual(status, 200, path)
          assert.strictEqual(res.headers.get("content-type"), type, path)
          assert.strictEqual(res.headers.get("content-security-policy"), "default-src 'none'; sandbox")
          assert.strictEqual(res.headers.get("x-content-type-options"), "nosniff")
          assert.strictEqual(res.headers.get("cache-control"), "public, max-age=31536000, immutable")
        }
        const png = yield* getBytes(`${v}/files/logo.png`)
        assert.deepStrictEqual(png.bytes, PNG)
        const pct = yield* getBytes(`${v}/files/100%25.txt`)
        assert.strictEqual(Buffer.from(pct.bytes).toString(), "percent\n")
        const etag = png.res.headers.get("etag") ?? ""
        assert.strictEqual((yield* fetchPath(`${v}/files/logo.png`, { headers: { "if-none-match": etag } })).status, 304)
      }))

    it.effect("refuses files over the size cap, directories and symlinks with JSON errors", () =>
      Effect.gen(function* () {
        const big = yield* getJson(`${v}/files/big.txt`)
        assert.strictEqual(big.status, 413)
        assert.deepInclude(big.body, { _tag: "TooLarge", size: 5000, limit: 1024 })
        const dir = yield* getJson(`${v}/files/lib`)
        assert.strictEqual(dir.status, 400)
        assert.strictEqual(dir.body.message, "lib is a directory, not a file")
        const link = yield* getJson(`${v}/files/link`)
        assert.strictEqual(link.status, 400)
        const missing = yield* getJson(`${v}/files/lib/nope.js`)
        assert.strictEqual(missing.status, 404)
        assert.strictEqual(missing.body._tag, "NotFound")
      }))

    it.effect("never lets a file URL leave the release (path traversal)", () =>
      Effect.gen(function* () {
        const attempts = [
          `${v}/files/lib/../upm.json`,
          `${v}/files/../../../../etc/passwd`,
          `${v}/files/..%2F..%2F..%2Fetc%2Fpasswd`,
          `${v}/files/%2e%2e/%2e%2e/etc/passwd`,
          `${v}/files/lib%2f..%2fupm.json`,
          `${v}/files/./upm.json`,
          `${v}/files/lib\\..\\upm.json`,
          `${v}/files/lib/%00`,
          `${v}/files//etc/passwd`,
          `${v}/files/%zz`,
          "/api/v1/packages/alice/greetings/../../../etc/passwd",
          "/../../etc/passwd"
        ]
        for (const path of attempts) {
          const res = yield* raw(path)
          assert.include([400, 404], res.status, path)
          assert.strictEqual(res.type, "application/json", path)
          assert.notInclude(res.body, "root:", path)
          assert.notInclude(res.body, "\"name\":\"alice/greetings\",\"version\"", path)
        }
      }))

    it.effect("renders the README safely", () =>
      Effect.gen(function* () {
        const { body, res } = yield* getJson(`${v}/readme`)
        assert.strictEqual(res.headers.get("cache-control"), "public, max-age=31536000, immutable")
        assert.strictEqual(body.path, "README.md")
        assert.include(body.html, "<h1>Greetings</h1>")
        assert.include(body.html, `<a href="#/p/alice/greetings/1.1.0/f/docs/guide.md">the guide</a>`)
        assert.include(body.html, "&lt;script&gt;alert(&#39;readme&#39;)&lt;/script&gt;")
        assert.notInclude(body.html, "<script")
        assert.notInclude(body.html, "<img src=x")
        assert.notInclude(body.html, "href=\"javascript")
        const none = yield* getJson("/api/v1/packages/bob/colors/2.1.0/readme")
        assert.strictEqual(none.status, 404)
      }))

    it.effect("streams the release as .tar.gz and .zip, byte-identical on every request", () =>
      Effect.gen(function* () {
        const tgz = yield* getBytes(`${v}/archive.tar.gz`)
        assert.strictEqual(tgz.status, 200)
        assert.strictEqual(tgz.res.headers.get("content-type"), "application/gzip")
        assert.strictEqual(tgz.res.headers.get("content-disposition"), "attachment; filename=\"alice-greetings-1.1.0.tar.gz\"")
        assert.strictEqual(tgz.res.headers.get("cache-control"), "public, max-age=31536000, immutable")
        const entries = yield* untar(tgz.bytes)
        assert.strictEqual(entries.get("alice-greetings-1.1.0/lib/index.js")?.body, "export const hello = () => 'hello'\n")
        assert.strictEqual(entries.get("alice-greetings-1.1.0/README.md")?.body, README)
        assert.strictEqual(entries.get("alice-greetings-1.1.0/bin/run")?.mode, 0o755)
        assert.strictEqual(entries.get("alice-greetings-1.1.0/link")?.linkname, "lib/index.js")
        const again = yield* getBytes(`${v}/archive.tar.gz`)
        assert.deepStrictEqual(again.bytes, tgz.bytes)
        const notModified = yield* fetchPath(`${v}/archive.tar.gz`, { headers: { "if-none-match": tgz.res.headers.get("etag") ?? "" } })
        assert.strictEqual(notModified.status, 304)

        const zip = yield* getBytes(`${v}/archive.zip`)
        assert.strictEqual(zip.status, 200)
        assert.strictEqual(zip.res.headers.get("content-type"), "application/zip")
        const files = yield* unzip(zip.bytes)
        assert.strictEqual(files.get("alice-greetings-1.1.0/lib/index.js"), "export const hello = () => 'hello'\n")
        assert.strictEqual(files.get("alice-greetings-1.1.0/big.txt"), "x".repeat(5000))
        assert.deepStrictEqual((yield* getBytes(`${v}/archive.zip`)).bytes, zip.bytes)
      }))

    it.effect("survives clients that abort downloads mid-stream", () =>
      Effect.gen(function* () {
        for (const kind of ["tar.gz", "zip"]) {
          const controller = new AbortController()
          const res = yield* fetchPath(`/api/v1/packages/alice/big/1.0.0/archive.${kind}`, { signal: controller.signal })
          const reader = res.body?.getReader()
          yield* Effect.promise(() => reader?.read() ?? Promise.resolve(undefined))
          controller.abort()
        }
        // Still serving, and a whole archive still comes out whole. (An uncaught stream error from the aborted
        // ones would also fail this file's run as an unhandled error.)
        assert.strictEqual((yield* fetchPath("/healthz")).status, 200)
        const full = yield* getBytes("/api/v1/packages/alice/big/1.0.0/archive.tar.gz")
        const entries = yield* untar(full.bytes)
        assert.strictEqual(entries.get("alice-big-1.0.0/b.bin")?.body.length, BIG_PART)
        // Several at once with one slot: they queue, and all complete.
        const all = yield* Effect.all([
          getBytes("/api/v1/packages/alice/big/1.0.0/archive.zip"),
          getBytes("/api/v1/packages/alice/big/1.0.0/archive.tar.gz"),
          getBytes(`${v}/archive.zip`)
        ], { concurrency: "unbounded" })
        assert.deepStrictEqual(all.map((r) => r.status), [200, 200, 200])
        assert.deepStrictEqual(all[1]?.bytes, full.bytes)
      }))

    it.effect("describes itself in OpenAPI", () =>
      Effect.gen(function* () {
        const { status, body } = yield* getJson("/openapi.json")
        assert.strictEqual(status, 200)
        assert.strictEqual(body.openapi, "3.1.0")
        const paths = Object.keys(body.paths)
        for (const path of [
          "/api/v1/packages", "/api/v1/packages/{owner}/{name}", "/api/v1/packages/{owner}/{name}/{version}",
          "/api/v1/packages/{owner}/{name}/{version}/tree", "/api/v1/packages/{owner}/{name}/{version}/readme",
          "/api/v1/packages/{owner}/{name}/{version}/archive.tar.gz", "/api/v1/packages/{owner}/{name}/{version}/archive.zip"
        ]) assert.include(paths, path)
        assert.isTrue(paths.some((p) => p.includes("/files/")))
      }))
  })

  it.scoped("builds each download once into the cache directory and streams it from there", () =>
    Effect.gen(function* () {
      const dir = yield* Effect.acquireRelease(
        Effect.promise(() => mkdtemp(join(tmpdir(), "upm-http-cache-test-"))),
        (d) => Effect.promise(() => rm(d, { recursive: true, force: true }))
      )
      const cacheDir = join(dir, "cache")
      const text = "a line of text without an extension\n".repeat(20_000)
      yield* Layer.build(layerHttp({ cacheDir }).pipe(
        Layer.provideMerge(Layer.effectDiscard(publish("alice/cached", "1.0.0", { "LICENSE": text, "b.bin": "b".repeat(BIG_PART) }))),
        Layer.provideMerge(layerStore)
      )).pipe(Effect.flatMap((context) => Effect.gen(function* () {
        const base = "/api/v1/packages/alice/cached/1.0.0"
        const downloads = yield* Effect.all([1, 2, 3].map(() => getBytes(`${base}/archive.tar.gz`)), { concurrency: "unbounded" })
        const sizes = downloads.map((d) => d.bytes.length)
        assert.deepStrictEqual(downloads.map((d) => d.res.headers.get("content-length")), sizes.map(String))
        assert.deepStrictEqual(downloads[1]?.bytes, downloads[0]?.bytes)
        assert.strictEqual((yield* untar(downloads[0]!.bytes)).get("alice-cached-1.0.0/b.bin")?.body.length, BIG_PART)
        // A file above the inline size: kept on disk too, its type still sniffed from its first bytes.
        const license = yield* getBytes(`${base}/files/LICENSE`)
        assert.strictEqual(license.res.headers.get("content-type"), "text/plain; charset=utf-8")
        assert.strictEqual(Buffer.from(license.bytes).toString(), text)
        const again = yield* getBytes(`${base}/files/LICENSE`)
        assert.strictEqual(again.res.headers.get("content-type"), "text/plain; charset=utf-8")
        assert.strictEqual(again.bytes.length, text.length)
        const names = yield* Effect.promise(() => readdir(cacheDir))
        assert.strictEqual(names.filter((n) => n.endsWith(".tar.gz")).length, 1)
        assert.strictEqual(names.filter((n) => n.endsWith(".blob")).length, 1)
        assert.isFalse(names.some((n) => n.startsWith(".tmp-")))
      }).pipe(Effect.provide(context))))
    }), { timeout: 30_000 })

  it.layer(layerHttp().pipe(Layer.provideMerge(layerStore)))((it) => {
    it.effect("shows a release sealed after a listing at once", () =>
      Effect.gen(function* () {
        assert.strictEqual((yield* getJson("/api/v1/packages/dave/fresh")).status, 404)
        assert.strictEqual((yield* getJson("/api/v1/packages?q=fresh")).body.total, 0)
        yield* publish("dave/fresh", "1.0.0", { "a.txt": "a" })
        const detail = yield* getJson("/api/v1/packages/dave/fresh")
        assert.strictEqual(detail.status, 200)
        assert.strictEqual(detail.body.latest, "1.0.0")
        assert.strictEqual((yield* getJson("/api/v1/packages?q=fresh")).body.total, 1)
        yield* publish("dave/fresh", "1.1.0", { "a.txt": "b" })
        assert.strictEqual((yield* getJson("/api/v1/packages/dave/fresh/latest")).body.version, "1.1.0")
      }))
  })

  // Real time: the listing's age is measured on the server's clock.
  layer(layerHttp().pipe(Layer.provideMerge(layerStore)), { timeout: 30_000, excludeTestServices: true })((it) => {
    it.effect("shows a release sealed by another node within about a second, never making a request wait for it", () =>
      Effect.gen(function* () {
        assert.strictEqual((yield* getJson("/api/v1/packages/erin/elsewhere")).status, 404)
        // Sealed through another Registry on the same store (like another server on a shared database): this
        // server hears nothing of it.
        const other = yield* Registry.make
        yield* publish("erin/elsewhere", "1.0.0", { "a.txt": "a" }).pipe(Effect.provideService(Registry.Registry, other))
        assert.strictEqual((yield* getJson("/api/v1/packages/erin/elsewhere")).status, 404)
        yield* Effect.sleep("1100 millis")
        // The stale listing is served while it is refreshed in the background, then the new one.
        let status = 0
        for (let i = 0; i < 40 && status !== 200; i++) {
          status = (yield* getJson("/api/v1/packages/erin/elsewhere")).status
          if (status !== 200) yield* Effect.sleep("50 millis")
        }
        assert.strictEqual(status, 200)
      }))

  })
})
