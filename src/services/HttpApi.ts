/**
 * The HTTP read API: its Schema-typed endpoints (`UpmHttpApi`, from which `OpenApi.fromApi` produces
 * /openapi.json), the `Catalog` service that answers them from the ObjectStore and the Registry, and the handlers.
 * Everything is read-only and anonymous. docs/http.md lists every endpoint.
 *
 * Released content can never change (a release ref is immutable, objects are named by their hash), so every
 * response about a release named by its version carries a strong ETag and
 * `Cache-Control: public, max-age=31536000, immutable`; a request with a matching `If-None-Match` gets a 304.
 */
import {
  HttpApi, HttpApiBuilder, HttpApiEndpoint, HttpApiGroup, HttpApiSchema, HttpApp, HttpServerRequest,
  HttpServerResponse, OpenApi
} from "@effect/platform"
import { createHash } from "node:crypto"
import { Cache, Clock, Context, Duration, Effect, Either, Exit, Layer, Option, Predicate, Schema, Stream } from "effect"
import type { TreeEntry as GitTreeEntry } from "../domain/GitObject.js"
import { decodeManifestJson, MANIFEST_FILE } from "../domain/Manifest.js"
import { ObjectHash } from "../domain/ObjectHash.js"
import { maxSatisfying, PackageName, Segment, Version } from "../domain/Package.js"
import { decodeReleaseMessage } from "../domain/ReleaseMessage.js"
import { fingerprint } from "../domain/SshKey.js"
import { decode as decodeSshsig } from "../domain/Sshsig.js"
import { renderMarkdown } from "../web/markdown.js"
import * as Exporter from "./Exporter.js"
import * as Metrics from "./Metrics.js"
import { type CorruptObject, getDecoded, type ObjectNotFound, ObjectStore, type StoreError } from "./ObjectStore.js"
import { type Release, Registry } from "./Registry.js"
import { cacheKey, type CachedFile, DownloadCache, type DownloadCacheError } from "./DownloadCache.js"
import { verifySignature } from "./Verifier.js"

// ---------------------------------------------------------------------------------------------
// Errors (the JSON body of every error response: `{ "_tag": …, "message": … }`)

export class NotFound extends Schema.TaggedError<NotFound>()("NotFound", {
  message: Schema.String
}, HttpApiSchema.annotations({ status: 404 })) {}

export class BadRequest extends Schema.TaggedError<BadRequest>()("BadRequest", {
  message: Schema.String
}, HttpApiSchema.annotations({ status: 400 })) {}

export class TooLarge extends Schema.TaggedError<TooLarge>()("TooLarge", {
  message: Schema.String,
  size: Schema.Number,
  limit: Schema.Number
}, HttpApiSchema.annotations({ status: 413 })) {}

/** The store could not be read (503: retry later). */
export class Unavailable extends Schema.TaggedError<Unavailable>()("Unavailable", {
  message: Schema.String
}, HttpApiSchema.annotations({ status: 503 })) {}

/** A release the Exporter refuses to put in an archive (an unsafe symlink, names that collide on some disks, …). */
export class NotExportable extends Schema.TaggedError<NotExportable>()("NotExportable", {
  message: Schema.String,
  path: Schema.String
}, HttpApiSchema.annotations({ status: 422 })) {}

/** A sealed release whose objects are missing or corrupt: a damaged store (500). */
export class ServerError extends Schema.TaggedError<ServerError>()("ServerError", {
  message: Schema.String
}, HttpApiSchema.annotations({ status: 500 })) {}

// ---------------------------------------------------------------------------------------------
// Response bodies

export const ReleaseInfo = Schema.Struct({
  name: PackageName,
  version: Version,
  /** The release tag's hash: what `upm install` verifies and pins. */
  hash: ObjectHash,
  /** The hash of the release's file tree. */
  tree: ObjectHash,
  /** The tagger time (ISO 8601), when the tag has one. */
  date: Schema.NullOr(Schema.String),
  /** The signing key's fingerprint (`SHA256:…`), when the tag carries a readable signature. */
  signer: Schema.NullOr(Schema.String),
  /**
   * Whether the SSH signature verifies over the tag and the signed metadata names this release
   * (Verifier.verifySignature). The signer's right to the namespace was checked when the release was sealed.
   */
  verified: Schema.Boolean,
  /** Why it is not verified, when it is not. */
  verification: Schema.NullOr(Schema.String),
  description: Schema.NullOr(Schema.String),
  license: Schema.NullOr(Schema.String),
  dependencies: Schema.Record({ key: Schema.String, value: Schema.String }),
  /** Where description/license/dependencies come from: the signed tag message, or `upm.json` in the tree. */
  metadataSource: Schema.Literal("tag", "manifest", "none")
})
export type ReleaseInfo = typeof ReleaseInfo.Type

export const PackageSummary = Schema.Struct({
  name: PackageName,
  latest: Version,
  versions: Schema.Number,
  description: Schema.NullOr(Schema.String),
  date: Schema.NullOr(Schema.String)
})
export type PackageSummary = typeof PackageSummary.Type

export const PackageList = Schema.Struct({
  query: Schema.String,
  page: Schema.Number,
  perPage: Schema.Number,
  total: Schema.Number,
  packages: Schema.Array(PackageSummary)
})
export type PackageList = typeof PackageList.Type

export const PackageDetail = Schema.Struct({
  name: PackageName,
  /** The newest stable version (the newest of all when there is no stable one): what `upm install name` picks. */
  latest: Version,
  /** Newest first. */
  versions: Schema.Array(ReleaseInfo)
})
export type PackageDetail = typeof PackageDetail.Type

export const FileEntry = Schema.Struct({
  /** Slash-separated, relative to the release root. */
  path: Schema.String,
  type: Schema.Literal("file", "directory", "symlink"),
  mode: Schema.String,
  hash: ObjectHash,
  /** Bytes (files and symlinks); null for directories. */
  size: Schema.NullOr(Schema.Number)
})
export type FileEntry = typeof FileEntry.Type

export const ReleaseTree = Schema.Struct({
  name: PackageName,
  version: Version,
  tree: ObjectHash,
  /** The README at the root, if any (README.md, README, readme.markdown, …). */
  readme: Schema.NullOr(Schema.String),
  /** Every entry, depth-first in git's order. */
  entries: Schema.Array(FileEntry)
})
export type ReleaseTree = typeof ReleaseTree.Type

export const Readme = Schema.Struct({
  path: Schema.String,
  /** Safe HTML: the Markdown source escaped, then rendered by src/web/markdown.ts (no raw HTML passes). */
  html: Schema.String
})
export type Readme = typeof Readme.Type

// ---------------------------------------------------------------------------------------------
// Endpoints

const owner = HttpApiSchema.param("owner", Segment)
const name = HttpApiSchema.param("name", Segment)
/** A version, or `latest` (then the response is not cached as immutable). */
const VersionParam = Schema.Union(Version, Schema.Literal("latest"))
const version = HttpApiSchema.param("version", VersionParam)

const ListParams = Schema.Struct({
  q: Schema.optional(Schema.String.pipe(Schema.maxLength(256))),
  page: Schema.optional(Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, 100_000))),
  perPage: Schema.optional(Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, 100)))
})

const Binary = (contentType: string) => HttpApiSchema.Uint8Array({ contentType })

export class PackagesGroup extends HttpApiGroup.make("packages")
  .add(
    HttpApiEndpoint.get("list")`/api/v1/packages`
      .setUrlParams(ListParams)
      .addSuccess(PackageList)
      .annotate(OpenApi.Summary, "List packages, newest name order, optionally filtered by a name search")
  )
  .add(
    HttpApiEndpoint.get("package")`/api/v1/packages/${owner}/${name}`
      .addSuccess(PackageDetail)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "A package's versions with their release metadata, newest first")
  )
  .add(
    HttpApiEndpoint.get("release")`/api/v1/packages/${owner}/${name}/${version}`
      .addSuccess(ReleaseInfo)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "One release's metadata")
  )
  .add(
    HttpApiEndpoint.get("tree")`/api/v1/packages/${owner}/${name}/${version}/tree`
      .addSuccess(ReleaseTree)
      .addError(NotFound)
      .addError(TooLarge)
      .annotate(OpenApi.Summary, "A release's file tree (every entry, with sizes)")
  )
  .add(
    HttpApiEndpoint.get("readme")`/api/v1/packages/${owner}/${name}/${version}/readme`
      .addSuccess(Readme)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "A release's README rendered as safe HTML")
  )
  .add(
    HttpApiEndpoint.get("file", "/api/v1/packages/:owner/:name/:version/files/*")
      .setPath(Schema.Struct({ owner: Segment, name: Segment, version: VersionParam, "*": Schema.String }))
      .addSuccess(Binary("application/octet-stream"))
      .addError(NotFound)
      .addError(BadRequest)
      .addError(TooLarge)
      .annotate(OpenApi.Summary, "A file's content, with a content type from its extension and a size cap")
  )
  .add(
    HttpApiEndpoint.get("tarGz")`/api/v1/packages/${owner}/${name}/${version}/archive.tar.gz`
      .addSuccess(Binary("application/gzip"))
      .addError(NotFound)
      .addError(NotExportable)
      .annotate(OpenApi.Summary, "The release as a .tar.gz (streamed; top directory `<name>-<version>/`)")
  )
  .add(
    HttpApiEndpoint.get("zip")`/api/v1/packages/${owner}/${name}/${version}/archive.zip`
      .addSuccess(Binary("application/zip"))
      .addError(NotFound)
      .addError(NotExportable)
      .annotate(OpenApi.Summary, "The release as a .zip (streamed; top directory `<name>-<version>/`)")
  )
  .addError(BadRequest)
  .addError(Unavailable)
  .addError(ServerError)
{}

export class UpmHttpApi extends HttpApi.make("upm")
  .add(PackagesGroup)
  .annotate(OpenApi.Title, "upm HTTP read API")
  .annotate(OpenApi.Description, "Read-only, anonymous access to the packages of a upm server. See docs/http.md.")
{}

// ---------------------------------------------------------------------------------------------
// Catalog: the queries behind the endpoints, with caches keyed by immutable hashes

export interface CatalogOptions {
  /** Largest file served by the file endpoint (bigger ones: 413, download the archive instead). */
  readonly maxFileBytes: number
  /** Most entries listed by the tree endpoint. */
  readonly maxTreeEntries: number
  /** Largest README rendered. */
  readonly maxReadmeBytes: number
  /**
   * Files read whole from the store at once for the file endpoint (the first read of a big file, before it is in
   * the DownloadCache); more wait. With `maxFileBytes` this bounds the memory raw files take.
   */
  readonly maxConcurrentFileReads: number
  /** Files up to this size are served from memory; bigger ones are written to the DownloadCache and streamed. */
  readonly inlineFileBytes: number
}

export const defaultCatalogOptions: CatalogOptions = {
  maxFileBytes: 10 * 1024 * 1024,
  maxTreeEntries: 50_000,
  maxReadmeBytes: 1024 * 1024,
  maxConcurrentFileReads: 4,
  inlineFileBytes: 256 * 1024
}

/** Failures of a download's bytes once its response has started (the connection is then cut). */
export type DownloadFailure = Exporter.ExportFailure | DownloadCacheError

/** A file or archive ready to send: its size, content type and bytes (streamed; never a whole archive in memory). */
export interface Download {
  readonly size: number
  readonly bytes: Stream.Stream<Uint8Array, DownloadFailure>
}

type StoreFailure = StoreError | CorruptObject | ObjectNotFound

export interface ResolvedRelease {
  readonly release: Release
  readonly info: ReleaseInfo
  /** True when the request named the version (not `latest`): the response may be cached forever. */
  readonly pinned: boolean
}

export class Catalog extends Context.Tag("upm/HttpCatalog")<Catalog, {
  readonly list: (query: string, page: number, perPage: number) => Effect.Effect<PackageList, StoreFailure>
  readonly detail: (name: PackageName) => Effect.Effect<PackageDetail, NotFound | StoreFailure>
  /** `detail` with its JSON text and an ETag, kept as long as the package's listing is (see versionsCache). */
  readonly detailJson: (
    name: PackageName
  ) => Effect.Effect<{ readonly detail: PackageDetail; readonly json: string; readonly etag: string }, NotFound | StoreFailure>
  readonly resolve: (
    name: PackageName,
    version: Version | "latest"
  ) => Effect.Effect<ResolvedRelease, NotFound | StoreFailure>
  readonly tree: (release: ResolvedRelease) => Effect.Effect<ReleaseTree, TooLarge | StoreFailure>
  readonly readme: (release: ResolvedRelease) => Effect.Effect<Readme, NotFound | StoreFailure>
  /**
   * A file's bytes by its path in the release (`a/b.txt`); directories and symlinks are not files. Small files
   * come from memory; big ones are written once to the DownloadCache and streamed from there.
   */
  readonly file: (
    release: ResolvedRelease,
    path: string
  ) => Effect.Effect<
    Download & { readonly hash: ObjectHash; readonly contentType: string },
    NotFound | BadRequest | TooLarge | Unavailable | StoreFailure
  >
  /**
   * The release as an archive, entries under `<owner>-<name>-<version>/`, dated with the tag's time so the same
   * release always gives the same bytes. Built once into the DownloadCache (the tree is checked first: a refusal
   * is NotExportable), then streamed from disk.
   */
  readonly archive: (
    release: ResolvedRelease,
    kind: "tar.gz" | "zip"
  ) => Effect.Effect<Download, NotExportable | Unavailable | ServerError | StoreFailure>
}>() {}

/** `Name <email> 1700000000 +0100` → ISO 8601 in UTC; undefined when absent or unreadable. */
export const taggerDate = (tagger: string | undefined): string | null => {
  const match = tagger === undefined ? null : /> (\d{1,12}) [+-]\d{4}$/.exec(tagger)
  if (match === null) return null
  const ms = Number(match[1]) * 1000
  return Number.isSafeInteger(ms) && ms <= 8.64e15 ? new Date(ms).toISOString() : null
}

/** `alice-greetings-1.2.0`: the archive's top directory and file name. */
const archivePrefix = (resolved: ResolvedRelease) => `${resolved.info.name.replace("/", "-")}-${resolved.info.version}`

const README_NAMES = /^readme(\.(md|markdown|txt))?$/i

/**
 * Splits a file path (as the router hands it over: already percent-decoded) into tree entry names, refusing
 * anything that is not a plain relative path: empty segments, `.`, `..`, backslashes, NUL. Nothing here touches
 * a file system (files are looked up by name in the release's trees), so this is about clear answers.
 */
export const splitFilePath = (path: string): Either.Either<ReadonlyArray<string>, BadRequest> => {
  if (path.length === 0 || path.length > 4096) {
    return Either.left(new BadRequest({ message: "the file path must be 1 to 4096 characters" }))
  }
  const segments = path.split("/")
  for (const s of segments) {
    if (s === "" || s === "." || s === ".." || s.includes("\\") || s.includes("\0")) {
      return Either.left(new BadRequest({ message: "the file path must be a plain relative path (no empty, `.` or `..` segments)" }))
    }
  }
  return Either.right(segments)
}

export const makeCatalog = (options: CatalogOptions = defaultCatalogOptions) =>
  Effect.gen(function* () {
    const store = yield* ObjectStore
    const registry = yield* Registry
    const downloads = yield* DownloadCache
    const withStore = Effect.provideService(ObjectStore, store)
    const fileReads = yield* Effect.makeSemaphore(options.maxConcurrentFileReads)

    const readTag = (hash: ObjectHash) =>
      Effect.flatMap(getDecoded(hash).pipe(withStore), (object) =>
        object.type === "tag" ? Effect.succeed(object.tag) : Effect.die(`release ${hash} is not a tag`))

    const readTree = (hash: ObjectHash) =>
      Effect.flatMap(getDecoded(hash).pipe(withStore), (object) =>
        object.type === "tree" ? Effect.succeed(object.entries) : Effect.die(`object ${hash} is not a tree`))

    /** The release metadata: from the signed tag message, else from upm.json in the tree. */
    const computeInfo = (release: Release) =>
      Effect.gen(function* () {
        const tag = yield* readTag(release.hash)
        // The signature and the metadata's agreement with the tag name, checked here. Ownership of the namespace
        // was checked when the release was sealed; it is not re-checked (that reads and may repair owner records,
        // which a read-only, anonymous request must not do).
        const verified = yield* Effect.either(verifySignature(release.hash, tag))
        const signer = tag.signature === undefined
          ? null
          : Either.match(decodeSshsig(tag.signature), { onLeft: () => null, onRight: (sig) => fingerprint(sig.publicKey) })
        let metadata: { description?: string | undefined; license?: string | undefined; dependencies?: Record<string, string> | undefined } = {}
        let source: ReleaseInfo["metadataSource"] = "none"
        const fromTag = decodeReleaseMessage(tag.message)
        if (Either.isRight(fromTag)) {
          metadata = fromTag.right
          source = "tag"
        } else {
          const entries = yield* readTree(tag.object)
          const manifest = entries.find((e) => e.name === MANIFEST_FILE && e.mode !== "40000" && e.mode !== "120000")
          if (manifest !== undefined) {
            const blob = yield* store.get(manifest.hash)
            const decoded = decodeManifestJson(Buffer.from(blob.body).toString("utf8"))
            if (Either.isRight(decoded)) {
              metadata = decoded.right
              source = "manifest"
            }
          }
        }
        const info: ReleaseInfo = {
          name: release.name,
          version: release.version,
          hash: release.hash,
          tree: tag.object,
          date: taggerDate(tag.tagger),
          signer,
          verified: Either.isRight(verified),
          verification: Either.isLeft(verified) ? `${verified.left.reason}: ${verified.left.detail}` : null,
          description: metadata.description ?? null,
          license: metadata.license ?? null,
          dependencies: metadata.dependencies ?? {},
          metadataSource: source
        }
        return info
      })

    // Keyed by tag hash, so an entry can never be stale about content. Verification is re-checked hourly (an
    // owner's keys may change); failures are not kept.
    const infoCache = yield* Cache.makeWith({
      capacity: 16_384,
      lookup: computeInfo,
      timeToLive: (exit) => (Exit.isSuccess(exit) ? Duration.hours(1) : Duration.zero)
    })
    const releaseInfo = (release: Release) => infoCache.get(release)

    const walk = (root: ObjectHash) =>
      Effect.gen(function* () {
        const out: Array<FileEntry> = []
        const visit = (hash: ObjectHash, prefix: string): Effect.Effect<void, TooLarge | StoreFailure> =>
          Effect.gen(function* () {
            const entries: ReadonlyArray<GitTreeEntry> = yield* readTree(hash)
            for (const e of entries) {
              if (out.length >= options.maxTreeEntries) {
                return yield* Effect.fail(new TooLarge({
                  message: `the release has more than ${options.maxTreeEntries} entries; download the archive instead`,
                  size: out.length + 1,
                  limit: options.maxTreeEntries
                }))
              }
              const path = prefix + e.name
              if (e.mode === "40000") {
                out.push({ path, type: "directory", mode: e.mode, hash: e.hash, size: null })
                yield* visit(e.hash, `${path}/`)
              } else {
                out.push({ path, type: e.mode === "120000" ? "symlink" : "file", mode: e.mode, hash: e.hash, size: null })
              }
            }
          })
        yield* visit(root, "")
        // Sizes: a store keeps no size index, so read each blob once (this result is cached by tree hash).
        return yield* Effect.forEach(out, (entry) =>
          entry.type === "directory"
            ? Effect.succeed(entry)
            : Effect.map(store.get(entry.hash), (o) => ({ ...entry, size: o.body.length })), { concurrency: 8 })
      })
    const treeCache = yield* Cache.makeWith({
      capacity: 256,
      lookup: walk,
      timeToLive: (exit) => (Exit.isSuccess(exit) ? Duration.infinity : Duration.zero)
    })

    const notFound = (message: string) => new NotFound({ message })

    // Ref listings are cached: a listing walks the store's refs (a directory walk on the fs store), and a busy
    // package page would do it on every request. A release sealed by this process invalidates its package at once
    // (Registry.sealed). One sealed by another node sharing the store shows within about a second: a listing older
    // than LISTING_FRESH_MS is refreshed in the background while the one at hand is still served
    // (stale-while-revalidate), so no request waits for a refresh, and at most one runs per package.
    const versionsCache = yield* Cache.makeWith({
      capacity: 4096,
      // Kept until invalidated or refreshed; a failed lookup is not kept.
      timeToLive: (exit) => (Exit.isSuccess(exit) ? Duration.infinity : Duration.zero),
      lookup: (name: PackageName) =>
        Effect.zip(registry.versions(name), Clock.currentTimeMillis, { concurrent: false }).pipe(
          Effect.map(([versions, at]) => ({ versions, at })))
    })
    const refreshing = new Set<PackageName>()
    const scope = yield* Effect.scope
    const searchCache = yield* Cache.make({
      capacity: 256,
      timeToLive: Duration.seconds(1),
      lookup: (query: string) => registry.search(query, Number.MAX_SAFE_INTEGER)
    })
    yield* registry.sealed.pipe(
      Stream.runForEach((release) => Effect.zipRight(versionsCache.invalidate(release.name), searchCache.invalidateAll)),
      Effect.forkScoped
    )
    const versionsOf = (name: PackageName) =>
      Effect.gen(function* () {
        const listing = yield* versionsCache.get(name)
        const now = yield* Clock.currentTimeMillis
        if (now - listing.at > LISTING_FRESH_MS && !refreshing.has(name)) {
          refreshing.add(name)
          yield* versionsCache.refresh(name).pipe(
            Effect.catchAll((e) => Effect.logWarning("refreshing a package listing failed", e)),
            Effect.ensuring(Effect.sync(() => refreshing.delete(name))),
            Effect.forkIn(scope)
          )
        }
        return listing.versions
      })
    /** What `upm install name` picks (Registry.match's rule, over the cached listing). */
    const latestOf = (versions: ReadonlyArray<Release>) => {
      const best = maxSatisfying(versions.map((r) => r.version), undefined)
      return Option.fromNullable(versions.find((r) => r.version === best))
    }

    const resolve = (name: PackageName, version: Version | "latest") =>
      Effect.gen(function* () {
        const versions = yield* versionsOf(name)
        const release = version === "latest"
          ? latestOf(versions)
          : Option.fromNullable(versions.find((r) => r.version === version))
        if (Option.isNone(release)) {
          return yield* Effect.fail(notFound(
            versions.length === 0
              ? `no package named ${name}`
              : `${name} has no version ${version}`
          ))
        }
        const info = yield* releaseInfo(release.value)
        return { release: release.value, info, pinned: version !== "latest" } satisfies ResolvedRelease
      })

    const lookupPath = (root: ObjectHash, segments: ReadonlyArray<string>) =>
      Effect.gen(function* () {
        let hash = root
        let mode: string = "40000"
        for (const segment of segments) {
          if (mode !== "40000") return Option.none()
          const entry = (yield* readTree(hash)).find((e) => e.name === segment)
          if (entry === undefined) return Option.none()
          hash = entry.hash
          mode = entry.mode
        }
        return Option.some({ hash, mode })
      })

    // A package page is the hottest request: its answer is built once per listing (the versions array the
    // listing cache hands out, alive for at most a second) and served as ready JSON text until then.
    const encodeDetail = Schema.encodeSync(PackageDetail)
    const detailMemo = new WeakMap<ReadonlyArray<Release>, { detail: PackageDetail; json: string; etag: string }>()
    const detailJson = (name: PackageName) =>
      Effect.gen(function* () {
        const versions = yield* versionsOf(name)
        const memo = detailMemo.get(versions)
        if (memo !== undefined) return memo
        const latest = latestOf(versions)
        if (versions.length === 0 || Option.isNone(latest)) return yield* Effect.fail(notFound(`no package named ${name}`))
        const infos = yield* Effect.forEach([...versions].reverse(), releaseInfo, { concurrency: 8 })
        const detail: PackageDetail = { name, latest: latest.value.version, versions: infos }
        // The releases' hashes name everything shown.
        const etag = `${createHash("sha1").update(infos.map((v) => v.hash).join(",")).digest("hex")}-package`
        const result = { detail, json: JSON.stringify(encodeDetail(detail)), etag }
        detailMemo.set(versions, result)
        return result
      })

    return Catalog.of({
      list: (query, page, perPage) =>
        Effect.gen(function* () {
          const names = yield* searchCache.get(query)
          const slice = names.slice((page - 1) * perPage, page * perPage)
          const packages = yield* Effect.forEach(slice, (name) =>
            Effect.gen(function* () {
              const versions = yield* versionsOf(name)
              const latest = latestOf(versions)
              if (Option.isNone(latest)) return Option.none<PackageSummary>()
              const info = yield* releaseInfo(latest.value)
              return Option.some<PackageSummary>({
                name,
                latest: latest.value.version,
                versions: versions.length,
                description: info.description,
                date: info.date
              })
            }), { concurrency: 8 })
          return { query, page, perPage, total: names.length, packages: packages.flatMap(Option.toArray) }
        }),
      detail: (name) => Effect.map(detailJson(name), (d) => d.detail),
      detailJson,
      resolve,
      tree: (resolved) =>
        Effect.map(treeCache.get(resolved.info.tree), (entries) => ({
          name: resolved.info.name,
          version: resolved.info.version,
          tree: resolved.info.tree,
          readme: entries.find((e) => e.type === "file" && !e.path.includes("/") && README_NAMES.test(e.path))?.path ?? null,
          entries
        })),
      readme: (resolved) =>
        Effect.gen(function* () {
          const entries = yield* readTree(resolved.info.tree)
          const candidates = entries.filter((e) => e.mode !== "40000" && e.mode !== "120000" && README_NAMES.test(e.name))
          // Prefer README.md over README over the others.
          const entry = candidates.find((e) => /\.(md|markdown)$/i.test(e.name)) ?? candidates[0]
          if (entry === undefined) return yield* Effect.fail(notFound(`${resolved.info.name} ${resolved.info.version} has no README`))
          const blob = yield* store.get(entry.hash)
          const text = Buffer.from(blob.body.subarray(0, options.maxReadmeBytes)).toString("utf8")
          const base = `${resolved.info.name}/${resolved.info.version}`
          const html = renderMarkdown(text, {
            linkTo: (path) => `#/p/${base}/f/${path.split("/").map(encodeURIComponent).join("/")}`,
            imageFrom: (path) => `/api/v1/packages/${base}/files/${path.split("/").map(encodeURIComponent).join("/")}`
          })
          return { path: entry.name, html }
        }),
      file: (resolved, rawPath) =>
        Effect.gen(function* () {
          const segments = yield* splitFilePath(rawPath)
          const found = yield* lookupPath(resolved.info.tree, segments)
          if (Option.isNone(found)) {
            return yield* Effect.fail(notFound(`${resolved.info.name} ${resolved.info.version} has no file ${segments.join("/")}`))
          }
          if (found.value.mode === "40000" || found.value.mode === "120000") {
            return yield* Effect.fail(new BadRequest({
              message: `${segments.join("/")} is a ${found.value.mode === "40000" ? "directory" : "symbolic link"}, not a file`
            }))
          }
          const hash = found.value.hash
          const path = segments.join("/")
          const tooLarge = (size: number) =>
            new TooLarge({
              message: `the file is larger than ${options.maxFileBytes} bytes; download the archive instead`,
              size,
              limit: options.maxFileBytes
            })
          const blobBytes = Effect.flatMap(store.get(hash), (blob) =>
            blob.body.length > options.maxFileBytes ? Effect.fail(tooLarge(blob.body.length)) : Effect.succeed(blob.body))
          const key = `${hash}.blob`
          const fromCache = (cached: CachedFile<StoreFailure | TooLarge>) =>
            Effect.gen(function* () {
              if (cached.size > options.maxFileBytes) return yield* Effect.fail(tooLarge(cached.size))
              const head = yield* cached.head(SNIFF_BYTES)
              return { hash, size: cached.size, contentType: contentTypeOf(path, head, cached.size), bytes: cached.bytes.pipe(cacheFailureAsExport) }
            })
          const rebuild = Stream.fromEffect(blobBytes)
          const hit = yield* downloads.peek(key, rebuild)
          if (Option.isSome(hit)) return yield* fromCache(hit.value).pipe(cacheUnavailable)
          // Not on disk: read it (a few at a time: each read holds the whole file), then keep big ones on disk.
          return yield* fileReads.withPermits(1)(Effect.gen(function* () {
            const again = yield* downloads.peek(key, rebuild)
            if (Option.isSome(again)) return yield* fromCache(again.value)
            const bytes = yield* blobBytes
            const contentType = contentTypeOf(path, bytes.subarray(0, SNIFF_BYTES), bytes.length)
            if (bytes.length <= options.inlineFileBytes) {
              return { hash, size: bytes.length, contentType, bytes: Stream.succeed(bytes) }
            }
            const cached = yield* downloads.get(key, Stream.succeed(bytes))
            return { hash, size: cached.size, contentType, bytes: cached.bytes.pipe(cacheFailureAsExport) }
          })).pipe(cacheUnavailable)
        }),
      archive: (resolved, kind) =>
        Effect.gen(function* () {
          const { tree, date } = resolved.info
          const prefix = archivePrefix(resolved)
          const mtime = new Date(date ?? 0)
          // The bytes depend on the format, the tree, the top directory and the date, and on nothing else.
          const key = `${cacheKey("archive-v1", kind, tree, prefix, String(mtime.getTime()))}.${kind}`
          const build = (kind === "tar.gz" ? Exporter.exportTarGz(tree, { prefix, mtime }) : Exporter.exportZip(tree, { prefix, mtime }))
            .pipe(Stream.provideService(ObjectStore, store))
          const cached = yield* downloads.get(key, build).pipe(
            Effect.catchTag("ExportError", (e): Effect.Effect<never, ServerError | NotExportable> =>
              e.reason === "ArchiveFailed" || e.reason === "WriteFailed"
                ? Effect.zipRight(
                  Effect.logError("building an archive failed", e),
                  Effect.fail(new ServerError({ message: "building the archive failed" }))
                )
                : Effect.fail(new NotExportable({ message: `this release cannot be exported safely: ${e.detail}`, path: e.path }))),
            cacheUnavailable
          )
          return { size: cached.size, bytes: cached.bytes }
        })
    })
  })

/** How long a package's ref listing is served without a background refresh. */
const LISTING_FRESH_MS = 1000

/** How much of a file decides between text and bytes when its extension says nothing. */
const SNIFF_BYTES = 8192

/** The download cache's disk failing before a response starts: 503 (retry later), logged. */
const cacheUnavailable = <A, E, R>(effect: Effect.Effect<A, E | DownloadCacheError, R>) =>
  Effect.catchIf(effect, (e): e is DownloadCacheError => Predicate.isTagged(e, "DownloadCacheError"), (e) =>
    Effect.zipRight(
      Effect.logError("the download cache failed", e),
      Effect.fail(new Unavailable({ message: "the server could not prepare this download; try again" }))
    ))

/** A file's rebuild can only fail on the store or the cap; as a download failure, only the store's. */
const cacheFailureAsExport = <R>(bytes: Stream.Stream<Uint8Array, StoreFailure | TooLarge | DownloadCacheError, R>) =>
  Stream.catchTag(bytes, "TooLarge", (e) => Stream.die(e))

export const layerCatalog = (
  options: CatalogOptions = defaultCatalogOptions
): Layer.Layer<Catalog, never, ObjectStore | Registry | DownloadCache> => Layer.scoped(Catalog, makeCatalog(options))

// ---------------------------------------------------------------------------------------------
// Content types

const TYPES: Record<string, string> = {
  txt: "text/plain; charset=utf-8", md: "text/markdown; charset=utf-8", markdown: "text/markdown; charset=utf-8",
  json: "application/json", js: "text/javascript; charset=utf-8", mjs: "text/javascript; charset=utf-8",
  cjs: "text/javascript; charset=utf-8", ts: "text/plain; charset=utf-8", css: "text/css; charset=utf-8",
  lua: "text/plain; charset=utf-8", c: "text/plain; charset=utf-8", h: "text/plain; charset=utf-8",
  py: "text/plain; charset=utf-8", rs: "text/plain; charset=utf-8", go: "text/plain; charset=utf-8",
  sh: "text/plain; charset=utf-8", yml: "text/plain; charset=utf-8", yaml: "text/plain; charset=utf-8",
  toml: "text/plain; charset=utf-8", csv: "text/csv; charset=utf-8", map: "application/json",
  png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", webp: "image/webp", avif: "image/avif",
  ico: "image/x-icon", pdf: "application/pdf", wasm: "application/wasm", woff: "font/woff", woff2: "font/woff2",
  gz: "application/gzip", zip: "application/zip", tar: "application/x-tar"
}

/**
 * Types a browser would run as a document on our origin (HTML, SVG, XML) are served as text/plain: package
 * content is never rendered as a page of this site. Every file response also carries `CSP: sandbox`.
 */
const ACTIVE = new Set(["html", "htm", "xhtml", "svg", "xml", "xsl", "xslt", "shtml", "mht", "mhtml"])

/** The type of a file at `path` whose first bytes are `head` (of `size` bytes in all). */
export const contentTypeOf = (path: string, head: Uint8Array, size = head.length): string => {
  const base = path.slice(path.lastIndexOf("/") + 1)
  const dot = base.lastIndexOf(".")
  const ext = dot <= 0 ? "" : base.slice(dot + 1).toLowerCase()
  if (ACTIVE.has(ext)) return "text/plain; charset=utf-8"
  const known = TYPES[ext]
  if (known !== undefined) return known
  // Unknown extension: text when the first 8 KiB are valid UTF-8 without NUL, else bytes.
  const start = head.subarray(0, SNIFF_BYTES)
  if (start.includes(0)) return "application/octet-stream"
  try {
    // A cut in the middle of a character is not an error: drop the last bytes when there are more.
    new TextDecoder("utf-8", { fatal: true }).decode(start.length < size ? start.subarray(0, Math.max(0, start.length - 4)) : start)
    return "text/plain; charset=utf-8"
  } catch {
    return "application/octet-stream"
  }
}

// ---------------------------------------------------------------------------------------------
// Handlers

export const IMMUTABLE = "public, max-age=31536000, immutable"
/** For answers that change when a version is published: short, and revalidated with the ETag. */
export const SHORT_LIVED = "public, max-age=10, must-revalidate"

/**
 * Sets the caching headers on the response of this request, or answers 304 right away when the client
 * already has this representation.
 */
const cached = <A, E, R>(etag: string, cacheControl: string, body: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const request = yield* HttpServerRequest.HttpServerRequest
    const quoted = `"${etag}"`
    const headers = { etag: quoted, "cache-control": cacheControl }
    const ifNoneMatch = request.headers["if-none-match"]
    if (ifNoneMatch !== undefined && ifNoneMatch.split(",").some((t) => t.trim().replace(/^W\//, "") === quoted)) {
      return HttpServerResponse.empty({ status: 304, headers })
    }
    yield* HttpApp.appendPreResponseHandler((_req, response) => Effect.succeed(HttpServerResponse.setHeaders(response, headers)))
    return yield* body
  })

const cacheFor = (resolved: ResolvedRelease) => (resolved.pinned ? IMMUTABLE : SHORT_LIVED)
/** ETags name the representation: the release's hash plus what is shown of it (and `latest` is not pinned). */
const etagFor = (resolved: ResolvedRelease, what: string) => `${resolved.info.hash}-${what}`

const isStoreFailure = (e: unknown): e is StoreFailure =>
  Predicate.isTagged(e, "StoreError") || Predicate.isTagged(e, "CorruptObject") || Predicate.isTagged(e, "ObjectNotFound")

/** Store failures become HTTP errors: 503 when the store is unreachable, 500 when a sealed release is damaged. */
const toHttpErrors = <A, E, R>(
  effect: Effect.Effect<A, E | StoreFailure, R>
): Effect.Effect<A, Exclude<E, StoreFailure> | Unavailable | ServerError, R> =>
  Effect.catchIf(effect, (e): e is StoreFailure => isStoreFailure(e), (e): Effect.Effect<never, Unavailable | ServerError> => {
    switch (e._tag) {
      case "StoreError":
        return Effect.zipRight(
          Effect.logWarning("store unavailable", e),
          Effect.fail(new Unavailable({ message: "the package store is unavailable; try again" }))
        )
      case "CorruptObject":
      case "ObjectNotFound":
        return Effect.zipRight(
          Effect.logError("a sealed release is damaged in the store", e),
          Effect.fail(new ServerError({ message: `object ${e.hash} is ${e._tag === "CorruptObject" ? "corrupt" : "missing"} in the store` }))
        )
    }
  })

const packageName = (path: { readonly owner: string; readonly name: string }) =>
  Schema.decodeUnknown(PackageName)(`${path.owner}/${path.name}`).pipe(
    Effect.mapError(() => new BadRequest({ message: `"${path.owner}/${path.name}" is not a package name` })))

/**
 * A download's response: its length up front, its bytes streamed with backpressure and counted as they are sent.
 * A HEAD request never starts the stream (so never opens the file).
 */
const streamed = (download: Download, contentType: string, headers: Record<string, string>) =>
  Effect.as(
    Metrics.countServed("http", 1, 0),
    HttpServerResponse.stream(
      download.bytes.pipe(
        Stream.tapError((e) => Effect.logWarning("download stream failed", e)),
        Stream.tap((chunk) => Metrics.countServed("http", 0, chunk.length))
      ),
      { contentType, contentLength: download.size, headers }
    )
  )

const download = (catalog: Catalog["Type"], kind: "tar.gz" | "zip", resolved: ResolvedRelease) =>
  Effect.flatMap(catalog.archive(resolved, kind), (archive) =>
    streamed(archive, kind === "tar.gz" ? "application/gzip" : "application/zip", {
      "content-disposition": `attachment; filename="${archivePrefix(resolved)}.${kind}"`
    }))

export const layerHandlers = HttpApiBuilder.group(UpmHttpApi, "packages", (handlers) =>
  Effect.gen(function* () {
    const catalog = yield* Catalog
    const resolvePath = (path: { readonly owner: string; readonly name: string; readonly version: Version | "latest" }) =>
      Effect.flatMap(packageName(path), (n) => catalog.resolve(n, path.version))
    return handlers
      .handle("list", ({ urlParams }) =>
        catalog.list((urlParams.q ?? "").trim(), urlParams.page ?? 1, urlParams.perPage ?? 20).pipe(
          Effect.tap(() => HttpApp.appendPreResponseHandler((_req, res) =>
            Effect.succeed(HttpServerResponse.setHeader(res, "cache-control", SHORT_LIVED)))),
          toHttpErrors
        ))
      .handle("package", ({ path }) =>
        Effect.gen(function* () {
          const { json, etag } = yield* catalog.detailJson(yield* packageName(path))
          // The version list changes when a version is published: a short cache, revalidated by content. The
          // body is the PackageDetail schema's JSON, encoded once (see detailJson).
          return yield* cached(etag, SHORT_LIVED, Effect.succeed(HttpServerResponse.text(json, { contentType: "application/json" })))
        }).pipe(toHttpErrors))
      .handle("release", ({ path }) =>
        Effect.flatMap(resolvePath(path), (r) => cached(etagFor(r, "release"), cacheFor(r), Effect.succeed(r.info))).pipe(toHttpErrors))
      .handle("tree", ({ path }) =>
        Effect.flatMap(resolvePath(path), (r) => cached(etagFor(r, "tree"), cacheFor(r), catalog.tree(r))).pipe(toHttpErrors))
      .handle("readme", ({ path }) =>
        Effect.flatMap(resolvePath(path), (r) => cached(etagFor(r, "readme"), cacheFor(r), catalog.readme(r))).pipe(toHttpErrors))
      .handle("file", ({ path }) =>
        Effect.gen(function* () {
          const resolved = yield* resolvePath(path)
          const filePath = path["*"]
          return yield* cached(etagFor(resolved, `file-${Buffer.from(filePath).toString("base64url").slice(0, 64)}`), cacheFor(resolved),
            Effect.flatMap(catalog.file(resolved, filePath), (file) =>
              streamed(file, file.contentType, {
                // Package content never runs as part of this site, even when opened directly.
                "content-security-policy": "default-src 'none'; sandbox",
                "x-upm-object": file.hash
              })))
        }).pipe(toHttpErrors))
      .handle("tarGz", ({ path }) =>
        Effect.flatMap(resolvePath(path), (r) =>
          cached(etagFor(r, "tar.gz"), cacheFor(r), download(catalog, "tar.gz", r))).pipe(toHttpErrors))
      .handle("zip", ({ path }) =>
        Effect.flatMap(resolvePath(path), (r) =>
          cached(etagFor(r, "zip"), cacheFor(r), download(catalog, "zip", r))).pipe(toHttpErrors))
  }))

/** The API with its handlers; needs the Catalog (layerCatalog). */
export const layerApi = HttpApiBuilder.api(UpmHttpApi).pipe(Layer.provide(layerHandlers))

/** The OpenAPI 3 description of the API, served at /openapi.json. */
export const openApiSpec = OpenApi.fromApi(UpmHttpApi)
