/**
 * SyncClient: the client side of the sync protocol, usable from any Effect program (the CLI, a peer server,
 * a benchmark). `connect(address)` opens a scoped session (handshake done); the session answers queries and
 * pulls and pushes release graphs between the remote server and the local ObjectStore the layer captured.
 *
 * - `pull(root)` WANTs the root, then each level's missing objects, keeping up to `maxWantBatches` WANT
 *   frames in flight; it verifies every hash (only objects it asked for are accepted), stores them, and checks
 *   the whole graph is present before it returns. It writes no ref: the caller seals locally.
 * - `push(tag)` sends the tag unsolicited, answers the server's WANTs, and waits for `!conf`/`!queued`.
 *
 * Transports: `connectTcp` (NodeSocket, with read backpressure) and `connectMemory(serve)` (an in-memory duplex
 * to a SyncProtocol, for tests and simulations).
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket" // subpath: the index loads all of platform-node
import { Socket } from "@effect/platform"
import { Context, Deferred, Duration, Effect, Either, Exit, Layer, Mailbox, Option, Schema, type Scope, Stream } from "effect"
import { children, decodeFramed, type GitObject, type ObjectType } from "../domain/GitObject.js"
import { type ObjectHash, parseHash, sha1 } from "../domain/ObjectHash.js"
import type { PackageName, Range } from "../domain/Package.js"
import { compareVersions, parseRelease, Version } from "../domain/Package.js"
import * as Codec from "../protocol/SyncCodec.js"
import { ConnectionError, type Protocol } from "./Connection.js"
import { getDecoded, getDeflated, getFramed, missingReachable, ObjectStore } from "./ObjectStore.js"
import {
  closure, inflateSend, makeFrontier, makePutBuffer, type Needed, walkParentFirst, walkParentFirstDeflated
} from "./SyncGraph.js"

// ---------------------------------------------------------------------------------------------
// Errors and values

export class SyncClientError extends Schema.TaggedError<SyncClientError>()("SyncClientError", {
  reason: Schema.Literal(
    "Connect", "Handshake", "Protocol", "Remote", "Timeout", "Missing", "BadObject", "Unsolicited", "Store", "Closed"
  ),
  detail: Schema.String
}) {}

const clientError = (reason: SyncClientError["reason"], detail: string) => new SyncClientError({ reason, detail })

export interface SyncAddress {
  readonly host: string
  readonly port: number
}

/** A byte duplex to a server. */
export interface Transport {
  readonly input: Stream.Stream<Uint8Array, ConnectionError>
  readonly write: (bytes: Uint8Array) => Effect.Effect<void, ConnectionError>
}

export type Connect = (address: SyncAddress) => Effect.Effect<Transport, ConnectionError, Scope.Scope>

/** Progress of a pull or push, for progress bars: objects and bytes transferred so far. */
export interface Progress {
  readonly direction: "pull" | "push"
  readonly objects: number
  readonly bytes: number
  /** Objects known to be needed so far (grows as trees arrive). */
  readonly known: number
}

export interface TransferOptions {
  readonly onProgress?: (progress: Progress) => Effect.Effect<void>
  /**
   * Pull, protocol v2: roots whose whole graphs are stored locally (e.g. the tags of installed releases of the
   * same package); the server leaves out everything they reach. At most 16 are sent.
   */
  readonly haves?: ReadonlyArray<ObjectHash>
}

/** The protocol version with deflated SENDs (SyncServer.DEFLATE_VERSION). */
const DEFLATE_VERSION = 3

/** Hashes per v2 `fetch` query (the rest go in further fetches, sent at once). */
const FETCH_BATCH = 500

export interface PullResult {
  readonly root: ObjectHash
  /** Objects received (0 when the graph was already complete locally). */
  readonly objects: number
  /** Payload bytes received in SENDs. */
  readonly bytes: number
  /** WANT frames sent. */
  readonly wants: number
  /** Request waves: 1 + the depth of the deepest object that had to be asked for after its parent arrived. */
  readonly rounds: number
}

export interface PushResult {
  readonly tagHash: ObjectHash
  readonly status: "Sealed" | "Queued"
  /** The policy's message when queued. */
  readonly message: string
  readonly objects: number
  readonly bytes: number
  /** WANT frames received. */
  readonly wants: number
}

export interface MatchResult {
  readonly version: Version
  readonly hash: ObjectHash
}

/** One open session with a server. Operations on one session run one at a time. */
export interface SyncSession {
  /** The protocol version agreed in the handshake. */
  readonly version: number
  /** Any query; the raw reply text. An `!error` reply is a SyncClientError("Remote"). */
  readonly query: (text: string) => Effect.Effect<string, SyncClientError>
  readonly match: (name: PackageName, range?: Range) => Effect.Effect<Option.Option<MatchResult>, SyncClientError>
  readonly versions: (name: PackageName) => Effect.Effect<ReadonlyArray<MatchResult>, SyncClientError>
  readonly search: (text: string) => Effect.Effect<ReadonlyArray<string>, SyncClientError>
  readonly authors: () => Effect.Effect<ReadonlyArray<string>, SyncClientError>
  readonly packages: (owner: string) => Effect.Effect<ReadonlyArray<string>, SyncClientError>
  /** The public keys that may sign releases in `owner`'s namespace (`keys <owner>`), one OpenSSH line each. */
  readonly keys: (owner: string) => Effect.Effect<ReadonlyArray<string>, SyncClientError>
  /** Links this connection to a message session's conversation before a push (`attach <token>`). */
  readonly attach: (token: string) => Effect.Effect<void, SyncClientError>
  readonly pull: (root: ObjectHash, options?: TransferOptions) => Effect.Effect<PullResult, SyncClientError>
  /** Pulls the graphs of several roots in one exchange (v2: one `fetch` wave for all; peers catching up). */
  readonly pullAll: (roots: ReadonlyArray<ObjectHash>, options?: TransferOptions) => Effect.Effect<Omit<PullResult, "root">, SyncClientError>
  readonly push: (tagHash: ObjectHash, options?: TransferOptions) => Effect.Effect<PushResult, SyncClientError>
}

export interface SyncClientOptions {
  /** Protocol versions offered in the handshake. */
  readonly versions: ReadonlyArray<number>
  /** WANT frames kept in flight during a pull. */
  readonly maxWantBatches: number
  /** Largest object accepted. */
  readonly maxObjectSize: number
  /** Version 3 (deflated SENDs): most bytes an object may inflate to per byte received. */
  readonly maxInflateRatio: number
  readonly maxTextSize: number
  /** Longest wait for the server's next frame. */
  readonly timeout: Duration.Duration
  /**
   * Longest wait for a push's verdict once everything is sent: the server's policy may hold a conversation
   * with the user (or a moderator) first.
   */
  readonly verdictTimeout: Duration.Duration
}

export const defaultOptions: SyncClientOptions = {
  versions: [0, 2, 3],
  maxWantBatches: 16,
  maxObjectSize: 128 * 1024 * 1024,
  maxInflateRatio: 1032,
  maxTextSize: 1024 * 1024,
  timeout: Duration.seconds(120),
  verdictTimeout: Duration.minutes(30)
}

export class SyncClient extends Context.Tag("upm/SyncClient")<SyncClient, {
  readonly connect: (address: SyncAddress) => Effect.Effect<SyncSession, SyncClientError, Scope.Scope>
}>() {}

// ---------------------------------------------------------------------------------------------
// Reading replies

const lines = (text: string) => (text.length === 0 ? [] : text.split("\n"))

const parseMatchLine = (line: string): Either.Either<MatchResult, SyncClientError> => {
  const [version, hash, extra] = line.split(" ")
  const v = Schema.decodeUnknownEither(Version)(version)
  const h = parseHash(hash ?? "")
  return Either.isRight(v) && Either.isRight(h) && extra === undefined
    ? Either.right({ version: v.right, hash: h.right })
    : Either.left(clientError("Protocol", `malformed reply line ${JSON.stringify(line)}`))
}

/** A `!error …` reply as the Remote error it stands for. */
const remoteError = (frame: Codec.Frame): SyncClientError | undefined =>
  frame._tag === "Reply" && (frame.text === "error" || frame.text.startsWith("error "))
    ? clientError("Remote", frame.text.slice(6))
    : undefined

/** Joins writes into fewer, larger ones (one per WANT batch answered, or every 256 KiB). */
const makeWriteBuffer = (write: (bytes: Uint8Array) => Effect.Effect<void, SyncClientError>) => {
  let parts: Array<Uint8Array> = []
  let size = 0
  const flush = Effect.suspend(() => {
    if (parts.length === 0) return Effect.void
    const bytes = parts.length === 1 ? parts[0]! : new Uint8Array(Buffer.concat(parts))
    parts = []
    size = 0
    return write(bytes)
  })
  /**
   * Queues a SEND of `payload` at once (a plain call, not an Effect: a push queues thousands); the Effect it
   * returns writes once 256 KiB are waiting (run it before queueing more).
   */
  const send = (payload: Uint8Array) => {
    parts.push(Codec.sendHeader(payload.length), payload)
    size += payload.length
    return size >= 256 * 1024 ? flush : Effect.void
  }
  return { send, flush }
}

// ---------------------------------------------------------------------------------------------
// A session

export const openSession = (transport: Transport, store: ObjectStore["Type"], options: SyncClientOptions) =>
  Effect.gen(function* () {
    const pull = yield* transport.input.pipe(
      Codec.decode({ maxSendSize: options.maxObjectSize, maxTextSize: options.maxTextSize }),
      Stream.toPull
    )
    const ready: Array<Codec.Frame> = []
    const write = (bytes: Uint8Array) =>
      transport.write(bytes).pipe(Effect.mapError((e) => clientError("Closed", `write failed: ${e.detail}`)))
    const writeFrame = (frame: Codec.Frame) =>
      Codec.encode(frame).pipe(
        Effect.mapError((e) => clientError("Protocol", e.detail)),
        Effect.flatMap(write)
      )

    /** The next frame from the server; `!error` replies become a Remote error. */
    const next: Effect.Effect<Codec.Frame, SyncClientError> = Effect.suspend(() => nextWithin(options.timeout))
    const nextWithin = (timeout: Duration.Duration): Effect.Effect<Codec.Frame, SyncClientError> => Effect.suspend(() => {
      const frame = ready.shift()
      if (frame !== undefined) {
        const remote = remoteError(frame)
        return remote !== undefined ? Effect.fail(remote) : Effect.succeed(frame)
      }
      return Effect.zipRight(fill(timeout), nextWithin(timeout))
    })
    /** Waits for the next chunk of frames from the server and queues them in `ready`. */
    const fill = (timeout: Duration.Duration): Effect.Effect<void, SyncClientError> =>
      pull.pipe(
        Effect.mapError(Option.match({
          onNone: () => clientError("Closed", "the server closed the connection"),
          onSome: (e) =>
            e._tag === "SyncCodecError"
              ? clientError("Protocol", `bad frame from the server: ${e.detail}`)
              : clientError(e.reason === "Socket" ? "Connect" : "Closed", e.detail)
        })),
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () => clientError("Timeout", `no answer from the server within ${Duration.format(timeout)}`)
        }),
        Effect.map((chunk) => {
          for (const frame of chunk) ready.push(frame)
        })
      )

    // Handshake. Version 3 (deflated SENDs) only from a store that keeps objects deflated (docs/protocol.md).
    const offered = options.versions.filter((v) => v !== DEFLATE_VERSION || store.getDeflated !== undefined)
    yield* writeFrame(Codec.hello(offered))
    const welcome = yield* next.pipe(
      Effect.mapError((e) => (e.reason === "Remote" ? clientError("Handshake", `server refused: ${e.detail}`) : e))
    )
    if (welcome._tag !== "Welcome" || !offered.includes(welcome.version)) {
      return yield* Effect.fail(clientError("Handshake", `expected "lit!<version>" from the server, got ${welcome._tag}`))
    }
    const version = welcome.version
    const deflated = version >= DEFLATE_VERSION
    /** A received SEND's payload as the framed object: inflated under the size and ratio limits in version 3. */
    const unpack = (data: Uint8Array): Either.Either<Uint8Array, SyncClientError> =>
      deflated
        ? Either.mapLeft(inflateSend(data, options), (e) => clientError("BadObject", e.detail))
        : Either.right(data)
    const lock = yield* Effect.makeSemaphore(1)
    const serial = <A, E>(effect: Effect.Effect<A, E>) => lock.withPermits(1)(effect)
    const storeFailed = (e: { readonly _tag: string }) => clientError("Store", `local store failed (${e._tag})`)

    const query = (text: string) =>
      serial(Effect.gen(function* () {
        yield* writeFrame(Codec.query(text))
        const frame = yield* next
        if (frame._tag !== "Reply") return yield* Effect.fail(clientError("Protocol", `expected a reply, got ${frame._tag}`))
        return frame.text
      }))

    const provided = <A, E>(e: Effect.Effect<A, E, ObjectStore>) => Effect.provideService(e, ObjectStore, store)
    const missingBelow = (root: ObjectHash) => provided(missingReachable(root)).pipe(Effect.mapError(storeFailed))

    interface Stats { objects: number; bytes: number; wants: number; rounds: number }

    const puts = makePutBuffer(store)
    const flushPuts = puts.flush.pipe(Effect.mapError(storeFailed))
    /** The next frame; objects waiting to be written are written first if the wait may be long. */
    const nextFlushing = Effect.suspend(() => (ready.length === 0 ? Effect.zipRight(flushPuts, next) : next))

    /** Decodes a received object, checking the type its parent announced, and queues it for the store. */
    /** Decodes a received object and checks the type its parent announced. */
    const check = (data: Uint8Array, hash: ObjectHash, expected: ObjectType | undefined): Either.Either<GitObject, SyncClientError> =>
      Either.flatMap(
        Either.mapLeft(decodeFramed(data, options.maxObjectSize), (e) => clientError("BadObject", `object ${hash}: ${e.reason}: ${e.detail}`)),
        (object) => expected !== undefined && expected !== object.type
          ? Either.left(clientError("BadObject", `object ${hash} is a ${object.type}, its parent says ${expected}`))
          : Either.right(object)
      )

    /** Decodes a received object, checking the type its parent announced, and queues it for the store. */
    const accept = (data: Uint8Array, hash: ObjectHash, expected: ObjectType | undefined) =>
      Effect.flatMap(check(data, hash, expected), (object) =>
        Effect.as(puts.add(object).pipe(Effect.mapError(storeFailed)), object))

    /**
     * v0 (and v2's fallback): WANT what is missing below `root`, level by level, up to `maxWantBatches` WANT
     * frames in flight.
     */
    const wantLoop = (
      initial: ReadonlyArray<ObjectHash>,
      stats: Stats,
      onProgress: (p: Progress) => Effect.Effect<void>
    ) =>
      Effect.gen(function* () {
        const frontier = yield* provided(makeFrontier)
        const depthOf = new Map<ObjectHash, number>()
        const announced = new Map<ObjectHash, ObjectType | undefined>()
        const queue: Array<ObjectHash> = []
        const batchOf = new Map<ObjectHash, { remaining: number }>()
        const asked = new Set<ObjectHash>()
        let outstanding = 0
        let rounds = 0
        const need = (items: ReadonlyArray<Needed>, depth: number) => {
          for (const { hash, type } of items) {
            if (announced.has(hash)) continue
            announced.set(hash, type)
            depthOf.set(hash, depth)
            rounds = Math.max(rounds, depth)
            queue.push(hash)
          }
        }
        // Resume: what is already stored is walked, only its missing parts are asked for.
        need(initial.map((hash) => ({ hash, type: undefined })), 1)
        const pump = Effect.gen(function* () {
          while (outstanding < options.maxWantBatches && queue.length > 0) {
            const batch = queue.splice(0, Codec.MAX_WANT)
            const counter = { remaining: batch.length }
            for (const h of batch) {
              batchOf.set(h, counter)
              asked.add(h)
            }
            outstanding++
            stats.wants++
            yield* writeFrame(Codec.want(batch))
          }
        })
        yield* pump
        while (asked.size > 0) {
          const frame = yield* nextFlushing
          if (frame._tag !== "Send") {
            return yield* Effect.fail(clientError("Protocol", `expected SEND during a pull, got ${frame._tag}`))
          }
          const data = yield* unpack(frame.data)
          const hash = sha1(data)
          if (!asked.has(hash)) {
            return yield* Effect.fail(clientError("Unsolicited", `the server sent ${hash}, which was not asked for`))
          }
          const object = yield* accept(data, hash, announced.get(hash))
          asked.delete(hash)
          const counter = batchOf.get(hash)
          batchOf.delete(hash)
          if (counter !== undefined && --counter.remaining === 0) outstanding--
          stats.objects++
          stats.bytes += frame.data.length
          if (object.type === "tree" || object.type === "tag") {
            yield* flushPuts // the frontier looks at the store
            const below = yield* frontier.below(object).pipe(Effect.mapError(storeFailed))
            need(below, (depthOf.get(hash) ?? 1) + 1)
          }
          yield* onProgress({ direction: "pull", objects: stats.objects, bytes: stats.bytes, known: announced.size })
          yield* pump
        }
        yield* flushPuts
        stats.rounds += rounds
      })

    /**
     * v2: `?fetch <missing…> have <haves…>` — the server streams the whole missing graph parent first, then
     * `!fetched <n>`. Each object must hang below one already received (or be one of the named roots).
     * The frames of each chunk that arrives are checked together, without a fiber step per object. Returns true
     * when everything the received trees name arrived too: the graph is then complete without another walk.
     */
    const fetchStream = (
      missing: ReadonlyArray<ObjectHash>,
      haves: ReadonlyArray<ObjectHash>,
      stats: Stats,
      onProgress: (p: Progress) => Effect.Effect<void>
    ) =>
      Effect.gen(function* () {
        if (missing.length === 0) return true
        const permitted = new Map<ObjectHash, ObjectType | undefined>(missing.map((h) => [h, undefined]))
        const haveText = haves.length === 0 ? "" : ` have ${haves.slice(0, 16).join(" ")}`
        const batches: Array<ReadonlyArray<ObjectHash>> = []
        for (let i = 0; i < missing.length; i += FETCH_BATCH) batches.push(missing.slice(i, i + FETCH_BATCH))
        // All fetches go out at once; their streams come back in order.
        for (const batch of batches) yield* writeFrame(Codec.query(`fetch ${batch.join(" ")}${haveText}`))
        const received = new Set<ObjectHash>()
        let known = missing.length
        let done = 0
        /** Takes the frames waiting in `ready`: the objects to store, and the error that stopped it, if any. */
        const takeReady = () => {
          const objects: Array<readonly [GitObject, { readonly hash: ObjectHash; readonly deflated: Uint8Array } | undefined]> = []
          let at = 0
          let failure: SyncClientError | undefined
          for (; at < ready.length && done < batches.length && failure === undefined; at++) {
            const frame = ready[at]!
            if (frame._tag === "Reply") {
              failure = remoteError(frame)
              if (failure === undefined && /^fetched \d+$/.test(frame.text)) done++
              else failure ??= clientError("Protocol", `unexpected reply to fetch: ${JSON.stringify(frame.text)}`)
              continue
            }
            if (frame._tag !== "Send") {
              failure = clientError("Protocol", `unexpected ${frame._tag} during a fetch`)
              continue
            }
            const unpacked = unpack(frame.data)
            if (Either.isLeft(unpacked)) {
              failure = unpacked.left
              continue
            }
            const hash = sha1(unpacked.right)
            if (!permitted.has(hash)) {
              failure = clientError("Unsolicited", `the server sent ${hash}, which is not below what was fetched`)
              continue
            }
            const checked = check(unpacked.right, hash, permitted.get(hash))
            if (Either.isLeft(checked)) {
              failure = checked.left
              continue
            }
            const object = checked.right
            permitted.delete(hash)
            received.add(hash)
            for (const child of children(object)) {
              if (!permitted.has(child.hash) && !received.has(child.hash)) {
                permitted.set(child.hash, child.type)
                known++
              }
            }
            objects.push([object, deflated ? { hash, deflated: frame.data } : undefined])
            stats.objects++
            stats.bytes += frame.data.length
          }
          ready.splice(0, at)
          return { objects, failure }
        }
        while (done < batches.length) {
          if (ready.length === 0) {
            yield* flushPuts // before a wait: what arrived is written
            yield* fill(options.timeout)
          }
          const { objects, failure } = takeReady()
          // What was checked is stored even when a later frame of the chunk was refused (a resume needs less).
          for (const [object, asReceived] of objects) yield* puts.add(object, asReceived).pipe(Effect.mapError(storeFailed))
          if (failure !== undefined) return yield* Effect.fail(failure)
          yield* onProgress({ direction: "pull", objects: stats.objects, bytes: stats.bytes, known })
        }
        yield* flushPuts
        stats.rounds += 1
        return permitted.size === 0
      })

    const pullGraphs = (roots: ReadonlyArray<ObjectHash>, opts: TransferOptions = {}) =>
      serial(Effect.gen(function* () {
        const onProgress = opts.onProgress ?? (() => Effect.void)
        const stats: Stats = { objects: 0, bytes: 0, wants: 0, rounds: 0 }
        // However the pull ends, what was received and checked is written (a resumed pull needs less).
        // Each walk of the local graph (missingBelow) also serves as the previous step's completeness check.
        // Several roots: what their graphs miss, once (graphs of releases of one package share most objects).
        const missingBelowAll = roots.length === 1
          ? missingBelow(roots[0]!)
          : Effect.map(Effect.forEach(roots, missingBelow), (lists) => [...new Set(lists.flat())])
        yield* Effect.gen(function* () {
          let missing = yield* missingBelowAll
          if (version >= 2 && missing.length > 0) {
            // Everything below the missing frontier arrived: the graph is complete, no need to walk it again.
            const complete = yield* fetchStream(missing, opts.haves ?? [], stats, onProgress)
            missing = complete ? [] : yield* missingBelowAll
          }
          if (missing.length > 0) {
            yield* wantLoop(missing, stats, onProgress)
            const left = yield* missingBelowAll
            if (left.length > 0) {
              return yield* Effect.fail(clientError("Missing", `graph of ${roots.join(", ").slice(0, 200)} still misses ${left.length} objects`))
            }
          }
        }).pipe(Effect.ensuring(Effect.ignore(flushPuts)))
        return stats
      }))

    const pullGraph = (root: ObjectHash, opts: TransferOptions = {}) =>
      Effect.map(pullGraphs([root], opts), (stats) => ({ root, ...stats }) satisfies PullResult)

    const pushGraph = (tagHash: ObjectHash, opts: TransferOptions = {}) =>
      serial(Effect.gen(function* () {
        const onProgress = opts.onProgress ?? (() => Effect.void)
        // v0 checks the local graph first; v2 finds a missing object while it streams (then "Missing" too).
        const missing = version >= 2 ? [] : yield* missingBelow(tagHash)
        if (missing.length > 0) {
          return yield* Effect.fail(clientError("Missing", `the local graph of ${tagHash} misses ${missing.length} objects`))
        }
        // In version 3 an object travels as the store keeps it (deflated); else framed.
        const framedOf = (hash: ObjectHash) =>
          provided(deflated ? getDeflated(hash) : getFramed(hash)).pipe(
            Effect.catchTag("ObjectNotFound", () =>
              Effect.fail(clientError("Missing", `the server asked for ${hash}, which is not in the local store`))),
            Effect.mapError((e) => (e._tag === "SyncClientError" ? e : storeFailed(e)))
          )
        const out = makeWriteBuffer(write)
        let objects = 0
        let bytes = 0
        let wants = 0
        let known = 1
        const sendObject = (payload: Uint8Array) => {
          objects++
          bytes += payload.length
          return out.send(payload)
        }
        yield* sendObject(yield* framedOf(tagHash))
        yield* out.flush
        if (version >= 2) {
          // The server names what it needs and which releases it has; stream the graph below the former minus
          // what the latter reach, parent first, then ask for the verdict.
          const first = yield* next
          if (first._tag === "Reply" && (first.text === "need" || first.text.startsWith("need "))) {
            const words = first.text.split(" ").slice(1).filter((w) => w.length > 0)
            const at = words.indexOf("have")
            const parsed = yield* Effect.forEach(words.filter((w) => w !== "have"), (w) =>
              Either.match(parseHash(w), {
                onLeft: () => Effect.fail(clientError("Protocol", `bad hash in need: ${JSON.stringify(w)}`)),
                onRight: (h) => Effect.succeed(h)
              }))
            const needCount = at < 0 ? parsed.length : at
            const needed = parsed.slice(0, needCount)
            const haves = parsed.slice(needCount)
            const skip = yield* provided(closure(haves)).pipe(Effect.mapError(storeFailed))
            known = needed.length
            const visit = (_hash: ObjectHash, payload: Uint8Array) => {
              const sent = sendObject(payload)
              return objects % 64 === 0 ? Effect.zipRight(sent, onProgress({ direction: "push", objects, bytes, known: objects })) : sent
            }
            yield* provided(deflated ? walkParentFirstDeflated(needed, skip, visit) : walkParentFirst(needed, skip, visit)).pipe(
              Effect.mapError((e) =>
                e._tag === "SyncClientError" ? e
                  : e._tag === "ObjectNotFound" ? clientError("Missing", `the local graph of ${tagHash} misses ${e.hash}`)
                  : storeFailed(e))
            )
            yield* out.flush
            yield* writeFrame(Codec.query(`verify ${tagHash}`))
            known = objects
          } else {
            ready.unshift(first) // `!conf` for a tag sealed already: handled below
          }
        }
        yield* onProgress({ direction: "push", objects, bytes, known })
        for (;;) {
          // Everything asked for has been sent: what comes next may be the verdict, which can take a while.
          const frame = yield* nextWithin(options.verdictTimeout)
          switch (frame._tag) {
            case "Want": {
              wants++
              known += frame.hashes.length
              // At most 64 objects: read them at once, send them in the order asked.
              const all = yield* Effect.forEach(frame.hashes, framedOf, { concurrency: 16 })
              for (const framed of all) yield* sendObject(framed)
              yield* out.flush
              yield* onProgress({ direction: "push", objects, bytes, known })
              break
            }
            case "Reply": {
              const [word, hash, ...message] = frame.text.split(" ")
              if ((word === "conf" || word === "queued") && hash === tagHash) {
                return {
                  tagHash,
                  status: word === "conf" ? "Sealed" : "Queued",
                  message: message.join(" "),
                  objects,
                  bytes,
                  wants
                } satisfies PushResult
              }
              return yield* Effect.fail(clientError("Protocol", `unexpected reply during a push: ${JSON.stringify(frame.text)}`))
            }
            default:
              return yield* Effect.fail(clientError("Protocol", `unexpected ${frame._tag} during a push`))
          }
        }
      }))

    const listOf = (text: string) => Effect.map(query(text), lines)

    return {
      version,
      query,
      match: (name, range) =>
        Effect.flatMap(query(range === undefined ? `match ${name}` : `match ${name} ${range}`), (text) =>
          text.length === 0 ? Effect.succeed(Option.none()) : Effect.map(parseMatchLine(text), Option.some)),
      versions: (name) =>
        Effect.flatMap(listOf(`versions ${name}`), (ls) => Effect.forEach(ls, (l) => parseMatchLine(l))),
      search: (text) => listOf(`search ${text}`),
      authors: () => listOf("authors"),
      packages: (owner) => listOf(`packages ${owner}`),
      keys: (owner) => listOf(`keys ${owner}`),
      attach: (token) =>
        Effect.flatMap(query(`attach ${token}`), (text) =>
          text === "attached" ? Effect.void : Effect.fail(clientError("Protocol", `unexpected reply to attach: ${text}`))),
      pull: pullGraph,
      pullAll: pullGraphs,
      push: pushGraph
    } satisfies SyncSession
  })

/**
 * The haves for pulling a release of `name`: the tags of the releases of that package sealed in the local store
 * (sealed means complete), newest first, at most 16. With them a v2/v3 server sends only what changed:
 * `session.pull(tag, { haves: yield* localHaves(name) })`.
 */
export const localHaves = (name: PackageName) =>
  Effect.gen(function* () {
    const store = yield* ObjectStore
    const refs = yield* store.listRefs(`refs/tags/${name}/`)
    return refs
      .flatMap((ref) =>
        Either.match(parseRelease(ref.name), {
          onLeft: () => [],
          onRight: (release) => (release.name === name ? [{ version: release.version, hash: ref.hash }] : [])
        }))
      .sort((a, b) => compareVersions(b.version, a.version))
      .slice(0, 16)
      .map((release) => release.hash)
  })

// ---------------------------------------------------------------------------------------------
// Layers

export const make = (connect: Connect, overrides: Partial<SyncClientOptions> = {}) =>
  Effect.gen(function* () {
    const store = yield* ObjectStore
    const options = { ...defaultOptions, ...overrides }
    return SyncClient.of({
      connect: (address) =>
        Effect.gen(function* () {
          const transport = yield* connect(address).pipe(
            Effect.mapError((e) => clientError("Connect", `cannot connect to ${address.host}:${address.port}: ${e.detail}`))
          )
          return yield* openSession(transport, store, options)
        })
    })
  })

/** A client over `connect` (connectTcp, connectMemory(...)) storing into the ObjectStore it is given. */
export const layer = (connect: Connect, options: Partial<SyncClientOptions> = {}): Layer.Layer<SyncClient, never, ObjectStore> =>
  Layer.effect(SyncClient, make(connect, options))

// ---------------------------------------------------------------------------------------------
// Transports

/** TCP via @effect/platform-node's NodeSocket; reads pause the socket while the consumer is behind. */
const toConnError = (e: Socket.SocketError) =>
  new ConnectionError({ reason: e.reason === "Open" ? "Socket" : "Closed", detail: e.message })

export const connectTcp: Connect = (address) =>
  Effect.gen(function* () {
    const socket = yield* NodeSocket.makeNet({ host: address.host, port: address.port, openTimeout: "10 seconds" })
    const inbox = yield* Mailbox.make<Uint8Array, ConnectionError>()
    const HIGH = 64
    const flow: { conn: Context.Tag.Service<typeof NodeSocket.NetSocket> | undefined; paused: boolean } = { conn: undefined, paused: false }
    // Writes wait for the connection to open; a connection that fails to open must fail them, not leave them
    // waiting: the transport is returned only once the socket is open.
    const opened = yield* Deferred.make<void, ConnectionError>()
    yield* socket.runRaw((data) => {
      inbox.unsafeOffer(typeof data === "string" ? new TextEncoder().encode(data) : data)
      if (flow.conn === undefined) {
        return Effect.map(Effect.serviceOption(NodeSocket.NetSocket), (conn) => {
          flow.conn = Option.getOrUndefined(conn)
          if (Option.getOrElse(inbox.unsafeSize(), () => 0) >= HIGH) pause()
        })
      }
      if (Option.getOrElse(inbox.unsafeSize(), () => 0) >= HIGH) pause()
    }, { onOpen: Deferred.succeed(opened, undefined) }).pipe(
      Effect.mapError(toConnError),
      Effect.exit,
      Effect.tap((exit) =>
        Deferred.done(opened, Exit.isSuccess(exit)
          ? Exit.fail(new ConnectionError({ reason: "Closed", detail: "connection closed before it opened" }))
          : exit)),
      Effect.flatMap((exit) => inbox.done(exit)),
      Effect.forkScoped
    )
    yield* Deferred.await(opened)
    function pause() {
      if (flow.conn !== undefined && !flow.paused) {
        flow.paused = true
        flow.conn.pause()
      }
    }
    const resume = Effect.sync(() => {
      if (flow.paused && flow.conn !== undefined && Option.getOrElse(inbox.unsafeSize(), () => 0) < HIGH / 2) {
        flow.paused = false
        flow.conn.resume()
      }
    })
    const writer = yield* socket.writer
    return {
      input: Mailbox.toStream(inbox).pipe(Stream.tap(() => resume)),
      write: (bytes) => writer(bytes).pipe(Effect.mapError(toConnError))
    } satisfies Transport
  }).pipe(Effect.mapError((e): ConnectionError => (Socket.isSocketError(e) ? toConnError(e) : e)))

/**
 * An in-memory duplex to a SyncProtocol's `serve`: the server session runs in the caller's scope and is
 * interrupted when it closes (as a dropped connection would be).
 */
export const connectMemory = (serve: Protocol, remoteAddress = "memory"): Connect => () =>
  Effect.gen(function* () {
    const toServer = yield* Mailbox.make<Uint8Array, ConnectionError>(64)
    const toClient = yield* Mailbox.make<Uint8Array, ConnectionError>(64)
    yield* serve(Mailbox.toStream(toServer), { id: 0, remoteAddress }).pipe(
      Stream.runForEach((bytes) => toClient.offer(bytes)),
      Effect.exit,
      Effect.flatMap((exit) => toClient.done(exit)),
      Effect.forkScoped
    )
    yield* Effect.addFinalizer(() => toServer.end)
    return {
      input: Mailbox.toStream(toClient),
      write: (bytes) =>
        Effect.flatMap(toServer.offer(bytes), (open) =>
          open ? Effect.void : Effect.fail(new ConnectionError({ reason: "Closed", detail: "connection closed" })))
    } satisfies Transport
  })

// ---------------------------------------------------------------------------------------------
// Progress as a Stream

export type TransferEvent<A> =
  | { readonly _tag: "Progress"; readonly progress: Progress }
  | { readonly _tag: "Done"; readonly result: A }

/**
 * Runs a transfer and streams its progress, ending with its result:
 * `withProgress((onProgress) => session.pull(hash, { onProgress }))`. Progress events are sampled (the newest
 * ones are kept) so a slow consumer never slows the transfer down.
 */
export const withProgress = <A, E, R>(
  run: (onProgress: (progress: Progress) => Effect.Effect<void>) => Effect.Effect<A, E, R>
): Stream.Stream<TransferEvent<A>, E, R> =>
  Stream.unwrapScoped(Effect.gen(function* () {
    const events = yield* Mailbox.make<TransferEvent<A>, E>({ capacity: 16, strategy: "sliding" })
    yield* run((progress) => Effect.asVoid(events.offer({ _tag: "Progress", progress }))).pipe(
      Effect.flatMap((result) => events.offer({ _tag: "Done", result })),
      Effect.exit,
      Effect.flatMap((exit) => events.done(Exit.asVoid(exit))),
      Effect.forkScoped
    )
    return Mailbox.toStream(events)
  }))

