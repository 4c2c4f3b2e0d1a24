/**
 * A bounded on-disk cache of built downloads (a release's `.tar.gz` / `.zip`, a big file's bytes), for the HTTP
 * server. Released content never changes, so each download is built once, written to a temp file in the cache
 * directory and renamed into place, then served from disk as a stream with backpressure: whatever the number of
 * clients, memory holds only their read buffers, never whole archives.
 *
 * - Keys name the content (hashes of what the file is built from), so an entry is never stale and several servers
 *   may share one directory: a file another process renamed into place is picked up, not rebuilt.
 * - Single flight: concurrent requests for a missing key wait for one build. The build runs in the cache's own
 *   scope, so a client that goes away does not waste the work of the ones still waiting.
 * - At most `maxConcurrentBuilds` builds run at once (each holds about one file of the release in memory).
 * - The total size is bounded by `maxBytes`: least recently used entries are deleted once a new one is added. A
 *   client streaming a deleted entry keeps reading its open file (Linux frees it at close); an entry deleted
 *   between its lookup and the first read (here or by another process) is rebuilt, giving the same bytes.
 * - The directory (mode 0700) must be private to the server: its files are served as they are.
 */
import * as NodeStream from "@effect/platform-node/NodeStream" // subpath: the index loads all of platform-node
import { Context, Deferred, Effect, Exit, FiberId, Layer, Option, Schema, type Scope, Stream } from "effect"
import { createHash, randomBytes } from "node:crypto"
import { createReadStream } from "node:fs"
import * as fsp from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"

export class DownloadCacheError extends Schema.TaggedError<DownloadCacheError>()("DownloadCacheError", {
  operation: Schema.String,
  path: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {
  override get message() {
    return `download cache: ${this.operation} ${this.path} failed${this.cause instanceof Error ? `: ${this.cause.message}` : ""}`
  }
}

export interface DownloadCacheOptions {
  /** Where the files live (created, mode 0700, when missing). */
  readonly dir: string
  /** Total bytes kept; least recently used entries go beyond it. */
  readonly maxBytes: number
  /** Builds running at once; more wait for a slot. */
  readonly maxConcurrentBuilds: number
  /** Bytes read from disk per chunk when serving (default 64 KiB: measured faster and smaller than 256 KiB at 100 clients). */
  readonly readChunkBytes?: number
}

/** A built download: its size, and its bytes as a stream (opened when the stream starts, closed however it ends). */
export interface CachedFile<E> {
  readonly size: number
  readonly bytes: Stream.Stream<Uint8Array, E | DownloadCacheError>
  /** The first bytes (at most `n`), e.g. to tell text from binary. */
  readonly head: (n: number) => Effect.Effect<Uint8Array, DownloadCacheError>
}

export class DownloadCache extends Context.Tag("upm/DownloadCache")<DownloadCache, {
  readonly dir: string
  /** The entry for `key` if it is built already (in this process or by another sharing the directory). */
  readonly peek: <E>(key: string, rebuild: Stream.Stream<Uint8Array, E>) => Effect.Effect<Option.Option<CachedFile<E>>>
  /**
   * The entry for `key`, built from `build` when missing (once, however many ask at once). `build` must give the
   * same bytes every time: it also rebuilds an entry deleted before it is read.
   */
  readonly get: <E>(key: string, build: Stream.Stream<Uint8Array, E>) => Effect.Effect<CachedFile<E>, E | DownloadCacheError>
  /** Entries and bytes this process knows of. */
  readonly usage: Effect.Effect<{ readonly entries: number; readonly bytes: number }>
}>() {}

/** A cache key from the parts that determine the content: hex, safe as a file name. */
export const cacheKey = (...parts: ReadonlyArray<string>) =>
  createHash("sha256").update(parts.join("\0")).digest("hex").slice(0, 48)

const TEMP_PREFIX = ".tmp-"
const WRITE_BATCH_BYTES = 1024 * 1024

const isNotFound = (e: unknown) => e instanceof Error && "code" in e && e.code === "ENOENT"

const attempt = <A>(operation: string, path: string, run: () => Promise<A>) =>
  Effect.tryPromise({ try: run, catch: (cause) => new DownloadCacheError({ operation, path, cause }) })

/** Writes `bytes` whole (a file handle may write less than asked). */
const writeAll = (handle: fsp.FileHandle, path: string, bytes: Uint8Array) =>
  attempt("writing", path, async () => {
    let offset = 0
    while (offset < bytes.length) {
      const { bytesWritten } = await handle.write(bytes, offset, bytes.length - offset)
      offset += bytesWritten
    }
  })

export const make = (options: DownloadCacheOptions): Effect.Effect<DownloadCache["Type"], DownloadCacheError, Scope.Scope> =>
  Effect.gen(function* () {
    const { dir, maxBytes } = options
    const highWaterMark = options.readChunkBytes ?? 64 * 1024
    const scope = yield* Effect.scope
    const slots = yield* Effect.makeSemaphore(options.maxConcurrentBuilds)
    yield* attempt("creating", dir, () => fsp.mkdir(dir, { recursive: true, mode: 0o700 }))

    // What is on disk, in least recently used order (a Map keeps insertion order; a use moves a key to the end).
    const entries = new Map<string, number>()
    let total = 0
    const inflight = new Map<string, Deferred.Deferred<number, unknown>>()

    // Pick up what an earlier run left: entries by their modification time, temp files of interrupted builds removed.
    const names = yield* attempt("listing", dir, () => fsp.readdir(dir))
    const found: Array<{ name: string; size: number; mtime: number }> = []
    for (const name of names) {
      const path = join(dir, name)
      if (name.startsWith(TEMP_PREFIX)) {
        yield* Effect.ignore(attempt("removing", path, () => fsp.rm(path, { force: true })))
        continue
      }
      const stat = yield* Effect.option(attempt("reading", path, () => fsp.stat(path)))
      if (Option.isSome(stat) && stat.value.isFile()) found.push({ name, size: stat.value.size, mtime: stat.value.mtimeMs })
    }
    for (const f of found.sort((a, b) => a.mtime - b.mtime)) {
      entries.set(f.name, f.size)
      total += f.size
    }

    const pathOf = (key: string) => join(dir, key)

    const remember = (key: string, size: number) => {
      const old = entries.get(key)
      if (old !== undefined) {
        total -= old
        entries.delete(key)
      }
      entries.set(key, size)
      total += size
    }
    const forget = (key: string) => {
      const old = entries.get(key)
      if (old !== undefined) {
        total -= old
        entries.delete(key)
      }
    }
    /** Deletes least recently used entries (never `keep`, the one just added) until the total fits. */
    const evict = (keep: string) =>
      Effect.gen(function* () {
        const victims: Array<string> = []
        for (const key of entries.keys()) {
          if (total <= maxBytes) break
          if (key === keep) continue
          victims.push(key)
          forget(key)
        }
        for (const key of victims) {
          yield* Effect.ignore(attempt("removing", pathOf(key), () => fsp.rm(pathOf(key), { force: true })))
        }
      })

    /** The size of the file for `key` on disk, if some process built it. */
    const sizeOnDisk = (key: string) =>
      attempt("reading", pathOf(key), () => fsp.stat(pathOf(key))).pipe(
        Effect.map((s) => Option.some(s.size)),
        Effect.catchIf((e) => isNotFound(e.cause), () => Effect.succeed(Option.none<number>()))
      )

    /** Writes `build` into a temp file, syncs it and renames it into place; removes the temp file on any failure. */
    const write = <E>(key: string, build: Stream.Stream<Uint8Array, E>) =>
      Effect.gen(function* () {
        const target = pathOf(key)
        const temp = join(dir, `${TEMP_PREFIX}${key}-${randomBytes(6).toString("hex")}`)
        const handle = yield* attempt("creating", temp, () => fsp.open(temp, "wx", 0o600))
        let size = 0
        // Small chunks (gzip gives 16 KiB ones) are written in batches of about WRITE_BATCH_BYTES: one trip to the
        // thread pool per batch, not per chunk.
        let batch: Array<Uint8Array> = []
        let batched = 0
        const flush = Effect.suspend(() => {
          const bytes = batch.length === 1 ? batch[0]! : Buffer.concat(batch)
          batch = []
          batched = 0
          return bytes.length === 0 ? Effect.void : writeAll(handle, temp, bytes)
        })
        const written = Effect.gen(function* () {
          yield* Stream.runForEach(build, (chunk) => {
            size += chunk.length
            batch.push(chunk)
            batched += chunk.length
            return batched >= WRITE_BATCH_BYTES ? flush : Effect.void
          })
          yield* flush
          yield* attempt("syncing", temp, () => handle.sync())
        }).pipe(Effect.ensuring(Effect.promise(() => handle.close().catch(() => undefined))))
        yield* written.pipe(
          Effect.zipRight(attempt("renaming", temp, () => fsp.rename(temp, target))),
          Effect.onExit((exit) => Exit.isSuccess(exit) ? Effect.void : Effect.promise(() => fsp.rm(temp, { force: true })))
        )
        return size
      })

    /** Builds `key` unless another process has meanwhile; runs in the cache's scope, result through `done`. */
    const build = <E>(key: string, stream: Stream.Stream<Uint8Array, E>, done: Deferred.Deferred<number, unknown>) =>
      slots.withPermits(1)(
        Effect.flatMap(sizeOnDisk(key), Option.match({ onSome: Effect.succeed, onNone: () => write(key, stream) }))
      ).pipe(
        // However it ends (interrupted too, when the server stops), the waiters hear of it.
        Effect.onExit((exit) =>
          Effect.gen(function* () {
            inflight.delete(key)
            if (Exit.isSuccess(exit)) {
              remember(key, exit.value)
              yield* evict(key)
            }
            yield* Deferred.done(done, exit)
          })),
        Effect.forkIn(scope)
      )

    const sizeOf = <E>(key: string, stream: Stream.Stream<Uint8Array, E>): Effect.Effect<number, E | DownloadCacheError> =>
      Effect.suspend(() => {
        const known = entries.get(key)
        if (known !== undefined) {
          remember(key, known)
          return Effect.succeed(known)
        }
        let pending = inflight.get(key)
        const start = pending === undefined
        if (pending === undefined) {
          pending = Deferred.unsafeMake<number, unknown>(FiberId.none)
          inflight.set(key, pending)
        }
        // One key, one content: every caller's build gives the same bytes, so a waiter's error is of its own type.
        const wait = Deferred.await(pending) as Effect.Effect<number, E | DownloadCacheError>
        return start ? Effect.zipRight(build(key, stream, pending), wait) : wait
      })

    const fileOf = <E>(key: string, size: number, rebuild: Stream.Stream<Uint8Array, E>): CachedFile<E> => {
      const read = (): Stream.Stream<Uint8Array, E | DownloadCacheError> =>
        NodeStream.fromReadable<DownloadCacheError | Error, Uint8Array>(
          () => createReadStream(pathOf(key), { highWaterMark }),
          (cause) => cause instanceof Error ? cause : new DownloadCacheError({ operation: "reading", path: pathOf(key), cause })
        ).pipe(
          Stream.catchAll((e): Stream.Stream<Uint8Array, E | DownloadCacheError> =>
            // Deleted between lookup and open (eviction here or in another process): build it again. ENOENT can only
            // come from the open, before any byte.
            isNotFound(e)
              ? Stream.unwrap(Effect.zipRight(Effect.sync(() => forget(key)), Effect.map(sizeOf(key, rebuild), () => read())))
              : Stream.fail(e instanceof DownloadCacheError ? e : new DownloadCacheError({ operation: "reading", path: pathOf(key), cause: e })))
        )
      const head = (n: number) =>
        Effect.acquireUseRelease(
          attempt("opening", pathOf(key), () => fsp.open(pathOf(key), "r")),
          (handle) =>
            attempt("reading", pathOf(key), async () => {
              const buffer = Buffer.alloc(Math.min(n, size))
              const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0)
              return new Uint8Array(buffer.buffer, buffer.byteOffset, bytesRead)
            }),
          (handle) => Effect.promise(() => handle.close().catch(() => undefined))
        )
      return { size, bytes: read(), head }
    }

    return DownloadCache.of({
      dir,
      peek: (key, rebuild) =>
        Effect.suspend(() => {
          const known = entries.get(key)
          if (known !== undefined) {
            remember(key, known)
            return Effect.succeed(Option.some(fileOf(key, known, rebuild)))
          }
          if (inflight.has(key)) return Effect.succeed(Option.none())
          return Effect.map(Effect.orElseSucceed(sizeOnDisk(key), () => Option.none<number>()), Option.map((size) => {
            remember(key, size)
            return fileOf(key, size, rebuild)
          }))
        }),
      get: (key, stream) => Effect.map(sizeOf(key, stream), (size) => fileOf(key, size, stream)),
      usage: Effect.sync(() => ({ entries: entries.size, bytes: total }))
    })
  })

export const layer = (options: DownloadCacheOptions): Layer.Layer<DownloadCache, DownloadCacheError> =>
  Layer.scoped(DownloadCache, make(options))

/**
 * A cache in a fresh temp directory, removed when the scope closes: for servers whose store has no directory of
 * its own to put one beside (memory, PostgreSQL) and for tests.
 */
export const layerTemp = (options: Omit<DownloadCacheOptions, "dir">): Layer.Layer<DownloadCache, DownloadCacheError> =>
  Layer.scoped(DownloadCache, Effect.gen(function* () {
    const dir = yield* Effect.acquireRelease(
      attempt("creating", tmpdir(), () => fsp.mkdtemp(join(tmpdir(), "upm-download-cache-"))),
      (dir) => Effect.promise(() => fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined))
    )
    return yield* make({ ...options, dir })
  }))
