/**
 * The server side of the sync protocol (seed 004, seed 002): one session per connection. It implements the
 * `SyncProtocol` contract the Listener dispatches `lit?` connections to: bytes in, bytes out.
 *
 * A session: handshake; then any number of queries (anonymous), WANTs (the server SENDs what is asked), and
 * pushes. A push starts with an unsolicited SEND of a release tag: the server checks it (Verifier), refuses a
 * version already sealed with other content, then WANTs the tag's tree and, as trees arrive, their missing
 * children, in batches, accepting only objects it asked for. Once the graph is stored the ProposalPolicy
 * decides; accepted releases are sealed (Registry.seal) and confirmed with `!conf <tag>`.
 *
 * Every violation ends the session with one `!error <message>` reply; objects stored so far stay unsealed and
 * invisible (a later push resumes from them). See docs/protocol.md.
 */
import { Chunk, Clock, Duration, Effect, Either, Layer, Mailbox, Option, Schema, type Scope, Stream } from "effect"
import { children, decodeFramed, type GitObject, type ObjectType } from "../domain/GitObject.js"
import { type ObjectHash, parseHash, sha1 } from "../domain/ObjectHash.js"
import { PackageName, Range, Segment, releaseTagName } from "../domain/Package.js"
import * as Codec from "../protocol/SyncCodec.js"
import * as AntiEntropy from "./AntiEntropy.js"
import { type ConnectionError, type ConnectionInfo, SyncProtocol } from "./Connection.js"
import * as Metrics from "./Metrics.js"
import { getDeflated, getFramed, missingReachable, ObjectStore, RefName } from "./ObjectStore.js"
import * as OwnerChanges from "./OwnerChanges.js"
import { type Conversation, Conversations, ProposalPolicy } from "./ProposalPolicy.js"
import { ResolvePolicy } from "./Policies.js"
import { Registry } from "./Registry.js"
import { closure, inflateSend, makeFrontier, makePutBuffer, walkParentFirst, walkParentFirstDeflated } from "./SyncGraph.js"
import { SyncLimits } from "./SyncLimits.js"
import { type VerifiedRelease, Verifier } from "./Verifier.js"

// ---------------------------------------------------------------------------------------------
// Errors

/** Why a session ended early. Its `detail` is what the client reads after `!error `. */
export class SyncSessionError extends Schema.TaggedError<SyncSessionError>()("SyncSessionError", {
  reason: Schema.Literal(
    "Protocol", "Version", "Limit", "Timeout", "NotFound", "BadQuery", "BadObject", "Unsolicited",
    "Verification", "Conflict", "Rejected", "Store"
  ),
  detail: Schema.String
}) {}

const sessionError = (reason: SyncSessionError["reason"], detail: string) => new SyncSessionError({ reason, detail })

/**
 * Protocol versions this server speaks, lowest first. upm's extension is version 2, not 1: seed 004's own
 * example handshake is `lit?0,1` → `lit!0`, so a client that copies it must get version 0 (docs/protocol.md).
 */
export const SERVER_VERSIONS: ReadonlyArray<number> = [0, 2, 3]

/** The first protocol version with graph streams (`fetch`, `need`/`verify`). */
export const STREAM_VERSION = 2

/**
 * Version 3 is version 2 with deflated SENDs: a SEND carries the zlib-deflated framed object (git's loose
 * object bytes). An end offers it only when its store keeps objects deflated (`getDeflated`), so it serves them
 * as stored, without inflating or recompressing them.
 */
export const DEFLATE_VERSION = 3

/** At most this many `have` roots of a v2 `fetch` are used (the rest are ignored), and named in a `need`. */
export const MAX_HAVES = 16
/** At most this many hashes in a v2 `!need` (anything beyond is WANTed after `?verify`). */
export const MAX_NEED = 10_000

/** Where a queued (not yet accepted) release waits: `refs/upm/queue/<owner>/<name>/v<version>` → tag hash. */
export const queueRefName = (release: Pick<VerifiedRelease, "name" | "version">): RefName =>
  RefName.make(`refs/upm/queue/${releaseTagName(release.name, release.version)}`)

/** A reply text: one line per item, no empty lines (a blank line would end the frame). */
export const replyText = (lines: ReadonlyArray<string>): string => lines.filter((l) => l.length > 0).join("\n")

/** A seal refused by the registry for a reason of its own (e.g. namespace authority), or a storage failure. */
const sealError = (e: { readonly _tag: string }): SyncSessionError => {
  const detail = "detail" in e && typeof e.detail === "string" ? e.detail : ""
  return e._tag === "VerificationError"
    ? sessionError("Verification", `seal refused: ${detail}`)
    : sessionError("Store", `storage failed (${e._tag})`)
}

/** Error and message texts travel on one line. */
const oneLine = (s: string) => s.replace(/\s*\n\s*/g, " ").trim()

// ---------------------------------------------------------------------------------------------
// Input with deadlines

/**
 * Frames from the connection's bytes, with the session's deadlines: the handshake must be complete within
 * `handshakeTimeout` of the start, a started frame must complete within `messageTimeout`, and between frames
 * the client may stay silent for `idleTimeout` from the moment the server waits for it. Time is the Effect
 * Clock's, so tests drive it with TestClock.
 */
const makeFrameReader = (input: Stream.Stream<Uint8Array, ConnectionError>) =>
  Effect.gen(function* () {
    const limits = yield* SyncLimits
    const pull = yield* Stream.toPull(input)
    const decoder = Codec.makeDecoder({ maxSendSize: limits.maxObjectSize, maxTextSize: limits.maxTextSize })
    const countRequest = Metrics.requestCounter("sync") // by frame type: a fixed set
    const ready: Array<Codec.Frame> = []
    const started = yield* Clock.currentTimeMillis
    let handshakeDone = false
    let frameStart: number | undefined
    let ended = false

    /** The next frame, or None at the end of input. */
    // A decoding error is reported after the frames that came before it.
    let broken: SyncSessionError | undefined

    const next: Effect.Effect<Option.Option<Codec.Frame>, SyncSessionError> = Effect.suspend(() => {
      const frame = ready.shift()
      if (frame !== undefined) return Effect.succeed(Option.some(frame))
      if (broken !== undefined) return Effect.fail(broken)
      if (ended) return Effect.succeed(Option.none())
      return Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const [deadline, what] = !handshakeDone
          ? [started + Duration.toMillis(limits.handshakeTimeout), "handshake"]
          : frameStart !== undefined
          ? [frameStart + Duration.toMillis(limits.messageTimeout), "message"]
          : [now + Duration.toMillis(limits.idleTimeout), "idle"]
        const remaining = deadline - now
        if (remaining <= 0) return yield* Effect.fail(sessionError("Timeout", `${what} timeout`))
        const chunk = yield* pull.pipe(
          Effect.catchAll((e) =>
            Option.match(e, {
              onNone: () => Effect.succeed(undefined),
              onSome: (err) => Effect.fail(sessionError("Protocol", `connection: ${err.detail}`))
            })),
          Effect.timeoutFail({
            duration: Duration.millis(remaining),
            onTimeout: () => sessionError("Timeout", `${what} timeout: nothing received in time`)
          })
        )
        if (chunk === undefined) {
          ended = true
          const end = decoder.end()
          if (Either.isLeft(end)) return yield* Effect.fail(sessionError("Protocol", end.left.detail))
          return yield* next
        }
        const arrived = yield* Clock.currentTimeMillis
        for (const bytes of chunk) {
          const step = decoder.push(bytes)
          if (Either.isLeft(step)) {
            const e = step.left
            broken = sessionError(e.reason === "TooLarge" ? "Limit" : "Protocol", e.detail)
            break
          }
          ready.push(...step.right)
          for (const frame of step.right) {
            countRequest(frame._tag)
            if (frame._tag === "Send") Metrics.unsafeCountReceived("sync", 1, frame.data.length)
          }
        }
        frameStart = decoder.midFrame() ? (frameStart ?? arrived) : undefined
        return yield* next
      })
    })
    /** The next frame if it is already decoded and satisfies `accept` (no waiting, no fiber step). */
    const takeBuffered = <F extends Codec.Frame>(accept: (frame: Codec.Frame) => frame is F): F | undefined => {
      const frame = ready[0]
      if (frame === undefined || !accept(frame)) return undefined
      ready.shift()
      return frame
    }
    return { next, takeBuffered, handshakeDone: () => { handshakeDone = true }, buffered: () => ready.length > 0 }
  })

// ---------------------------------------------------------------------------------------------
// The session

type Services = ObjectStore | Registry | Verifier | ProposalPolicy | Conversations | SyncLimits

interface Push {
  readonly release: VerifiedRelease
  /** Asked for, not yet received, with the type its parent announced. */
  readonly asked: Map<ObjectHash, ObjectType | undefined>
  /** Known missing, not yet asked (waiting for a free WANT slot). */
  readonly queue: Array<ObjectHash>
  readonly queued: Set<ObjectHash>
  /** For each outstanding WANT batch, how many of its objects are still to come. */
  readonly batchOf: Map<ObjectHash, { remaining: number }>
  outstanding: number
  total: number
  /**
   * "want": the server asks for what is missing (v0, and v2 after `?verify`).
   * "stream" (v2): the client streams the graph parent first; `permitted` holds what may come next.
   */
  mode: "want" | "stream"
  readonly permitted: Map<ObjectHash, ObjectType | undefined>
  /** v2: objects received in the stream. */
  readonly received: Set<ObjectHash>
  /** v2: the haves named in `!need`. */
  haves: ReadonlyArray<ObjectHash>
  /** v2: `!need` named the whole missing frontier (not cut at MAX_NEED). */
  needComplete: boolean
}

export const session = (
  input: Stream.Stream<Uint8Array, ConnectionError>,
  info: ConnectionInfo,
  emit: (frame: Codec.Frame) => Effect.Effect<void, SyncSessionError>,
  versions: ReadonlyArray<number> = SERVER_VERSIONS
): Effect.Effect<void, SyncSessionError, Services | Scope.Scope> =>
  Effect.gen(function* () {
    const store = yield* ObjectStore
    const registry = yield* Registry
    const verifier = yield* Verifier
    const policy = yield* ProposalPolicy
    const conversations = yield* Conversations
    const limits = yield* SyncLimits
    const reader = yield* makeFrameReader(input)
    const frontier = yield* makeFrontier
    const puts = makePutBuffer(store)
    // However the session ends, what was received and checked is written (a resumed push needs less).
    yield* Effect.addFinalizer(() => Effect.ignore(puts.flush))
    // A StoreError's detail is shown: e.g. an upstream pull-through cache says which upstream it could not reach.
    const storeError = (e: { readonly _tag: string; readonly detail?: string | undefined }) =>
      sessionError("Store", e._tag === "StoreError" && e.detail !== undefined ? e.detail : `storage failed (${e._tag})`)
    // Anti-entropy queries (docs/peers.md): digest, digests, refs, peers.
    const digestQueries = AntiEntropy.makeQueries(store)
    // Owner queries, v2 (docs/protocol.md): read a namespace's keys and members, apply a signed change record.
    const ownerQueries = yield* OwnerChanges.queriesFor(store)
    const resolver = yield* Effect.serviceOption(ResolvePolicy)

    // Handshake ------------------------------------------------------------------------------
    const first = yield* reader.next
    if (Option.isNone(first)) return
    if (first.value._tag !== "Hello") {
      return yield* Effect.fail(sessionError("Protocol", `expected the handshake "lit?<versions>", got ${first.value._tag}`))
    }
    const offered = first.value.versions
    // Deflated SENDs only from a store that keeps objects deflated (else each would be compressed to be sent).
    const speaks = versions.filter((v) => v !== DEFLATE_VERSION || store.getDeflated !== undefined)
    const common = speaks.filter((v) => offered.includes(v))
    if (common.length === 0) {
      return yield* Effect.fail(sessionError(
        "Version",
        `no common protocol version: client speaks ${offered.join(",")}, server speaks ${speaks.join(",")}`
      ))
    }
    const version = Math.max(...common)
    const deflated = version >= DEFLATE_VERSION
    /** A received SEND's payload as the framed object: inflated under the size and ratio limits in version 3. */
    const unpack = (data: Uint8Array): Either.Either<Uint8Array, SyncSessionError> =>
      deflated
        ? Either.mapLeft(inflateSend(data, limits), (e) => sessionError(e.reason, e.detail))
        : Either.right(data)
    reader.handshakeDone()
    yield* emit(Codec.welcome(version))

    let conversation: Conversation | undefined
    let push: Push | undefined

    // Queries ---------------------------------------------------------------------------------
    const decodeArg = <A, I>(schema: Schema.Schema<A, I>, value: string | undefined, what: string) =>
      Schema.decodeUnknown(schema)(value).pipe(
        Effect.mapError(() => sessionError("BadQuery", `bad ${what}: ${JSON.stringify(value ?? "")}`))
      )

    const answer = (raw: string): Effect.Effect<string, SyncSessionError> =>
      Effect.gen(function* () {
        const text = raw.trim()
        const space = text.search(/\s/)
        const command = space < 0 ? text : text.slice(0, space)
        const rest = space < 0 ? "" : text.slice(space).trim()
        const words = rest.length === 0 ? [] : rest.split(/\s+/)
        switch (command) {
          case "match": {
            const name = yield* decodeArg(PackageName, words[0], "package name")
            const rangeText = words.slice(1).join(" ")
            const range = rangeText.length === 0 ? undefined : yield* decodeArg(Range, rangeText, "semver range")
            // The maintainer's `resolve` handler decides, when the server has a ResolvePolicy (docs/handlers.md);
            // else (and by the policy's own default) the registry's newest match.
            const found = Option.isSome(resolver)
              ? yield* resolver.value.resolve(range === undefined ? name : `${name}@${range}`, undefined).pipe(
                Effect.mapError((e) =>
                  e._tag === "ResolveError" ? sessionError(e.reason === "BadIdentifier" ? "BadQuery" : "Store", `resolve: ${e.detail}`) : storeError(e))
              )
              : yield* registry.match(name, range).pipe(Effect.mapError(storeError))
            return Option.match(found, { onNone: () => "", onSome: (r) => `${r.version} ${r.hash}` })
          }
          case "versions": {
            const name = yield* decodeArg(PackageName, words[0], "package name")
            const all = yield* registry.versions(name).pipe(Effect.mapError(storeError))
            return replyText(all.map((r) => `${r.version} ${r.hash}`))
          }
          case "search": {
            const names = yield* registry.search(rest, limits.maxSearchResults).pipe(Effect.mapError(storeError))
            return replyText(names)
          }
          case "authors":
            return replyText(yield* registry.owners().pipe(Effect.mapError(storeError)))
          case "packages": {
            const owner = yield* decodeArg(Segment, words[0], "owner")
            return replyText(yield* registry.packages(owner).pipe(Effect.mapError(storeError)))
          }
          case "keys": {
            // Who may sign releases in this namespace (clients pin these on first use: docs/signing.md).
            const owner = yield* decodeArg(Segment, words[0], "owner")
            const keys = yield* verifier.ownerKeys(owner).pipe(Effect.mapError((e) => sessionError("Store", e.detail)))
            return replyText(keys)
          }
          case "attach": {
            const token = words[0]
            if (token === undefined) return yield* Effect.fail(sessionError("BadQuery", "attach needs a token"))
            const found = yield* conversations.attach(token)
            if (Option.isNone(found)) return yield* Effect.fail(sessionError("BadQuery", "unknown conversation token"))
            conversation = found.value
            return "attached"
          }
          default: {
            const owner = version >= STREAM_VERSION ? ownerQueries.answer(command, words) : Option.none()
            if (Option.isSome(owner)) {
              return yield* owner.value.pipe(Effect.mapError((e) => sessionError(OwnerChanges.sessionReason(e), OwnerChanges.errorText(e))))
            }
            const extra = digestQueries.answer(command, words)
            if (Option.isSome(extra)) {
              return yield* extra.value.pipe(Effect.mapError((e) => sessionError(e.reason === "Store" ? "Store" : "BadQuery", e.detail)))
            }
            return yield* Effect.fail(sessionError("BadQuery", `unknown query ${JSON.stringify(command)}`))
          }
        }
      })

    // Serving WANTs ---------------------------------------------------------------------------
    const serveWants = (hashes: ReadonlyArray<ObjectHash>) =>
      Effect.forEach(hashes, (hash) =>
        (deflated ? getDeflated(hash) : getFramed(hash)).pipe(
          Effect.provideService(ObjectStore, store),
          Effect.catchTags({
            ObjectNotFound: () => Effect.fail(sessionError("NotFound", `no such object ${hash}`)),
            CorruptObject: (e) => Effect.fail(sessionError("Store", `stored object ${hash} is corrupt: ${e.detail}`)),
            StoreError: storeErrorEffect
          })
        ), { concurrency: 16 }).pipe( // a WANT is at most 64 objects: read them at once, send them in order
          Effect.flatMap((all) => Effect.forEach(all, (data) => emit(Codec.send(data)), { discard: true }))
        )

    function storeErrorEffect(e: { readonly _tag: string }) {
      return Effect.fail(storeError(e))
    }

    // Pushes ----------------------------------------------------------------------------------
    const decodeObject = (data: Uint8Array, hash: ObjectHash) =>
      Either.match(decodeFramed(data, limits.maxObjectSize), {
        onLeft: (e) => Effect.fail(sessionError("BadObject", `object ${hash}: ${e.reason}: ${e.detail}`)),
        onRight: (o): Effect.Effect<GitObject, SyncSessionError> => Effect.succeed(o)
      })

    const putObject = (object: GitObject) => store.put(object.type, object.body).pipe(Effect.mapError(storeError))

    const enqueue = (p: Push, needed: ReadonlyArray<{ readonly hash: ObjectHash; readonly type: ObjectType | undefined }>) =>
      Effect.gen(function* () {
        for (const { hash, type } of needed) {
          if (p.asked.has(hash) || p.queued.has(hash)) continue
          p.total++
          if (p.total > limits.maxPushObjects) {
            return yield* Effect.fail(sessionError("Limit", `push exceeds ${limits.maxPushObjects} objects`))
          }
          p.queued.add(hash)
          p.queue.push(hash)
          p.asked.set(hash, type) // announced type; removed from `queued` when actually asked
        }
      })

    const pump = (p: Push) =>
      Effect.gen(function* () {
        while (p.outstanding < limits.maxWantBatches && p.queue.length > 0) {
          const batch = p.queue.splice(0, Codec.MAX_WANT)
          const counter = { remaining: batch.length }
          for (const h of batch) {
            p.queued.delete(h)
            p.batchOf.set(h, counter)
          }
          p.outstanding++
          yield* emit(Codec.want(batch))
        }
      })

    const confirm = (release: VerifiedRelease) => emit(Codec.reply(`conf ${release.tagHash}`))

    const finish = (p: Push) =>
      Effect.gen(function* () {
        push = undefined
        yield* puts.flush.pipe(Effect.mapError(storeError))
        const release = p.release
        const decision = yield* policy.propose(release, conversation)
        switch (decision._tag) {
          case "Accepted": {
            yield* registry.seal(release).pipe(
              Effect.catchTags({
                RefConflict: (e) =>
                  Effect.fail(sessionError(
                    "Conflict",
                    `${releaseTagName(release.name, release.version)} is already published as ${e.actual ?? "another tag"}`
                  )),
                IncompleteGraph: (e) =>
                  Effect.fail(sessionError("Store", `graph of ${e.root} still misses ${e.missing} objects`))
              }),
              Effect.mapError((e) => (e._tag === "SyncSessionError" ? e : sealError(e))),
              Effect.tapError((e) => Metrics.countPushRejected(e.reason))
            )
            yield* Metrics.countPushSealed
            yield* Effect.logInfo("release sealed").pipe(
              Effect.annotateLogs({ release: releaseTagName(release.name, release.version), tag: release.tagHash, objects: p.total })
            )
            return yield* confirm(release)
          }
          case "Queued": {
            const ref = queueRefName(release)
            const current = yield* store.readRef(ref).pipe(Effect.mapError(storeError))
            yield* store.setRef(ref, current, release.tagHash).pipe(
              Effect.mapError((e) => e._tag === "RefConflict"
                ? sessionError("Conflict", `another push of ${releaseTagName(release.name, release.version)} is being queued`)
                : storeError(e))
            )
            return yield* emit(Codec.reply(`queued ${release.tagHash} ${oneLine(decision.message)}`.trim()))
          }
          case "Rejected":
            yield* Metrics.countPushRejected("Rejected")
            return yield* Effect.fail(sessionError("Rejected", `rejected: ${oneLine(decision.reason)}`))
        }
      })

    const startPush = (data: Uint8Array, hash: ObjectHash) =>
      Effect.gen(function* () {
        const object = yield* decodeObject(data, hash)
        if (object.type !== "tag") {
          return yield* Effect.fail(sessionError(
            "Unsolicited",
            `unsolicited ${object.type} ${hash}: a push starts with a release tag`
          ))
        }
        const release = yield* verifier.verifyTag(hash, object.tag).pipe(
          Effect.mapError((e) => sessionError("Verification", `tag ${hash} refused (${e.reason}): ${e.detail}`))
        )
        const name = releaseTagName(release.name, release.version)
        // Read once: the held versions decide "already sealed" here and name the v2 haves below.
        const held = yield* registry.versions(release.name).pipe(Effect.mapError(storeError))
        const existing = held.find((r) => r.version === release.version)
        if (existing !== undefined && existing.hash !== hash) {
          return yield* Effect.fail(sessionError("Conflict", `${name} is already published as ${existing.hash}`))
        }
        yield* putObject(object)
        const p: Push = {
          release, asked: new Map(), queue: [], queued: new Set(), batchOf: new Map(), outstanding: 0, total: 1,
          mode: version >= STREAM_VERSION ? "stream" : "want", permitted: new Map(), received: new Set(), haves: [],
          needComplete: false
        }
        // Already sealed with this very tag: nothing to ask, nothing to decide again.
        if (existing !== undefined) return yield* confirm(release)
        if (version >= STREAM_VERSION) {
          // v2: name what is missing and what the client may assume we have; the client streams the graph
          // below the former minus the latter, then asks `?verify`.
          const missing = yield* missingReachable(release.tree).pipe(
            Effect.provideService(ObjectStore, store),
            Effect.mapError(storeError)
          )
          const need = missing.slice(0, MAX_NEED)
          const haves = held.map((r) => r.hash).filter((h) => h !== hash).reverse().slice(0, MAX_HAVES)
          for (const h of need) p.permitted.set(h, undefined)
          p.haves = haves
          p.needComplete = need.length === missing.length
          push = p
          return yield* emit(Codec.reply(["need", ...need, ...(haves.length === 0 ? [] : ["have", ...haves])].join(" ")))
        }
        const needed = yield* frontier.below(object).pipe(Effect.mapError(storeError))
        yield* enqueue(p, needed)
        if (p.queue.length === 0) return yield* finish(p)
        push = p
        yield* pump(p)
      })

    const permit = (p: Push, object: GitObject) => {
      for (const child of children(object)) if (!p.permitted.has(child.hash)) p.permitted.set(child.hash, child.type)
    }

    /**
     * v2: an object streamed by the client, acceptable if a tree (or the tag) already received points at it.
     * The SENDs already decoded behind it are taken in the same pass (no fiber step per object).
     */
    const receiveStreamed = (p: Push, first: Codec.Send) =>
      Effect.gen(function* () {
        const objects: Array<readonly [GitObject, { readonly hash: ObjectHash; readonly deflated: Uint8Array } | undefined]> = []
        let failure: SyncSessionError | undefined
        for (let frame: Codec.Send | undefined = first; frame !== undefined && failure === undefined; frame = reader.takeBuffered(isSend)) {
          const unpacked = unpack(frame.data)
          if (Either.isLeft(unpacked)) {
            failure = unpacked.left
            break
          }
          const data = unpacked.right
          const hash = sha1(data)
          if (!p.permitted.has(hash)) {
            failure = sessionError("Unsolicited", `unsolicited object ${hash}: not below what the server needs`)
            break
          }
          const announced = p.permitted.get(hash)
          const decoded = decodeFramed(data, limits.maxObjectSize)
          if (Either.isLeft(decoded)) {
            failure = sessionError("BadObject", `object ${hash}: ${decoded.left.reason}: ${decoded.left.detail}`)
            break
          }
          const object = decoded.right
          if (announced !== undefined && announced !== object.type) {
            failure = sessionError("BadObject", `object ${hash} is a ${object.type}, its parent says ${announced}`)
            break
          }
          p.total++
          if (p.total > limits.maxPushObjects) {
            failure = sessionError("Limit", `push exceeds ${limits.maxPushObjects} objects`)
            break
          }
          p.permitted.delete(hash)
          p.received.add(hash)
          for (const child of children(object)) {
            if (!p.permitted.has(child.hash) && !p.received.has(child.hash)) p.permitted.set(child.hash, child.type)
          }
          objects.push([object, deflated ? { hash, deflated: frame.data } : undefined])
        }
        // What was checked is stored even when a later object was refused (a resumed push needs less).
        for (const [object, asReceived] of objects) yield* puts.add(object, asReceived).pipe(Effect.mapError(storeError))
        if (failure !== undefined) return yield* Effect.fail(failure)
      })

    /** v2: whether the stream left nothing out, except what the named haves reach. */
    const streamedComplete = (p: Push) =>
      Effect.gen(function* () {
        if (!p.needComplete) return false
        if (p.permitted.size === 0) return true
        if (p.haves.length === 0) return false
        const reach = yield* closure(p.haves, limits.maxPushObjects).pipe(
          Effect.provideService(ObjectStore, store),
          Effect.mapError(storeError)
        )
        for (const hash of p.permitted.keys()) if (!reach.has(hash)) return false
        return true
      })

    /** v2 `?verify <tag>`: the client has streamed what it had to; complete the graph with WANTs, then decide. */
    const verify = (hash: ObjectHash) =>
      Effect.gen(function* () {
        const p = push
        if (p === undefined || p.release.tagHash !== hash || p.mode === "want") {
          return yield* Effect.fail(sessionError("Protocol", `no push of ${hash} is waiting for verify`))
        }
        p.mode = "want"
        yield* puts.flush.pipe(Effect.mapError(storeError))
        // Complete without a walk when every object the received trees name arrived, or is reachable from a
        // have (a sealed, hence complete, release the client left out). Registry.seal walks the graph once more.
        const complete = yield* streamedComplete(p)
        p.permitted.clear()
        const needed = complete ? [] : yield* missingReachable(p.release.tree).pipe(
          Effect.provideService(ObjectStore, store),
          Effect.mapError(storeError)
        )
        yield* enqueue(p, needed.map((h) => ({ hash: h, type: undefined })))
        if (p.queue.length === 0) return yield* finish(p)
        yield* pump(p)
      })

    /** v2 `?fetch <root>… [have <hash>…]`: the whole graph below the roots, minus what the haves reach. */
    const fetch = (words: ReadonlyArray<string>) =>
      Effect.gen(function* () {
        const at = words.indexOf("have")
        const wantWords = at < 0 ? words : words.slice(0, at)
        const haveWords = at < 0 ? [] : words.slice(at + 1, at + 1 + MAX_HAVES)
        const parse = (w: string) =>
          Either.match(parseHash(w), {
            onLeft: () => Effect.fail(sessionError("BadQuery", `bad hash ${JSON.stringify(w)}`)),
            onRight: (h) => Effect.succeed(h)
          })
        const wants = yield* Effect.forEach(wantWords, parse)
        const haves = yield* Effect.forEach(haveWords, parse)
        if (wants.length === 0) return yield* Effect.fail(sessionError("BadQuery", "fetch needs at least one hash"))
        const skip = yield* closure(haves, limits.maxPushObjects).pipe(
          Effect.provideService(ObjectStore, store),
          Effect.mapError(storeError)
        )
        const sent = yield* (deflated
          ? walkParentFirstDeflated(wants, skip, (_hash, bytes) => emit(Codec.send(bytes)))
          : walkParentFirst(wants, skip, (_hash, framed) => emit(Codec.send(framed)))).pipe(
          Effect.provideService(ObjectStore, store),
          Effect.catchTags({
            ObjectNotFound: (e) => Effect.fail(sessionError("NotFound", `no such object ${e.hash}`)),
            CorruptObject: (e) => Effect.fail(sessionError("Store", `stored object ${e.hash} is corrupt: ${e.detail}`)),
            StoreError: storeErrorEffect
          })
        )
        yield* emit(Codec.reply(`fetched ${sent}`))
      })

    const receive = (p: Push, data: Uint8Array, hash: ObjectHash) =>
      Effect.gen(function* () {
        const announced = p.asked.get(hash)
        if (!p.asked.has(hash) || p.queued.has(hash)) {
          return yield* Effect.fail(sessionError("Unsolicited", `unsolicited object ${hash}: not asked for`))
        }
        const object = yield* decodeObject(data, hash)
        if (announced !== undefined && announced !== object.type) {
          return yield* Effect.fail(sessionError("BadObject", `object ${hash} is a ${object.type}, its parent says ${announced}`))
        }
        yield* puts.add(object).pipe(Effect.mapError(storeError))
        p.asked.delete(hash)
        const counter = p.batchOf.get(hash)
        p.batchOf.delete(hash)
        if (counter !== undefined && --counter.remaining === 0) p.outstanding--
        if (object.type === "tree") {
          // The frontier looks at the store: everything received so far must be in it.
          yield* puts.flush.pipe(Effect.mapError(storeError))
          const needed = yield* frontier.below(object).pipe(Effect.mapError(storeError))
          yield* enqueue(p, needed)
        }
        if (p.asked.size === 0) return yield* finish(p)
        yield* pump(p)
      })

    // Main loop -------------------------------------------------------------------------------
    for (;;) {
      // Before waiting on the client, write what has arrived (an interrupted push keeps it for its resume).
      if (!reader.buffered()) yield* puts.flush.pipe(Effect.mapError(storeError))
      const next = yield* reader.next
      if (Option.isNone(next)) {
        if (push !== undefined) {
          yield* Effect.logInfo("push interrupted; objects stay unsealed for a resumed push").pipe(
            Effect.annotateLogs({ connection: info.id, tag: push.release.tagHash, missing: push.asked.size })
          )
        }
        return
      }
      const frame = next.value
      switch (frame._tag) {
        case "Query": {
          const words = frame.text.trim().split(/\s+/)
          if (version >= STREAM_VERSION && words[0] === "verify" && words.length === 2) {
            const hash = yield* Either.match(parseHash(words[1]!), {
              onLeft: () => Effect.fail(sessionError("BadQuery", `bad hash ${JSON.stringify(words[1])}`)),
              onRight: (h) => Effect.succeed(h)
            })
            yield* verify(hash)
          } else if (version >= STREAM_VERSION && words[0] === "fetch") {
            yield* fetch(words.slice(1))
          } else {
            yield* emit(Codec.reply(yield* answer(frame.text)))
          }
          break
        }
        case "Want":
          yield* serveWants(frame.hashes)
          break
        case "Send": {
          if (push !== undefined && push.mode === "stream") {
            yield* receiveStreamed(push, frame)
            break
          }
          const data = yield* unpack(frame.data)
          const hash = sha1(data)
          yield* push === undefined ? startPush(data, hash) : receive(push, data, hash)
          break
        }
        default:
          return yield* Effect.fail(sessionError("Protocol", `unexpected ${frame._tag} frame`))
      }
    }
  })

const isSend = (frame: Codec.Frame): frame is Codec.Send => frame._tag === "Send"

/** Bytes of output a session queues for its socket at most (one frame may go over). */
const OUTPUT_BUDGET = 4 * 1024 * 1024

/** Runs a session and turns its frames into bytes; a failed session sends `!error <detail>` and ends. */
export const serveWith = (versions: ReadonlyArray<number> = SERVER_VERSIONS) =>
  (input: Stream.Stream<Uint8Array, ConnectionError>, info: ConnectionInfo) =>
    Stream.unwrapScoped(Effect.gen(function* () {
      const limits = yield* SyncLimits
      const out = yield* Mailbox.make<Uint8Array>(64)
      // Output waiting for the socket is bounded in frames (64) and in bytes (OUTPUT_BUDGET; one frame may go
      // over it): 64 SENDs of 5 MB objects would hold 320 MB. `room` is open while under the budget.
      let queued = 0
      const room = yield* Effect.makeLatch(true)
      const notReading = () => sessionError("Timeout", "idle timeout: the client is not reading")
      const waitForRoom: Effect.Effect<void, SyncSessionError> = Effect.suspend(() => {
        if (queued < OUTPUT_BUDGET) return Effect.void
        room.unsafeClose()
        return room.await.pipe(
          Effect.timeoutFail({ duration: limits.idleTimeout, onTimeout: notReading }),
          Effect.zipRight(waitForRoom)
        )
      })
      // A client that stops reading stalls the session's output; after the idle timeout that is an error too.
      // (Timers only start when the queue is full: most frames go straight in.)
      const emit = (frame: Codec.Frame) =>
        Codec.encode(frame).pipe(
          Effect.orDie,
          Effect.flatMap((bytes) =>
            Effect.zipRight(
              waitForRoom,
              Effect.suspend(() => {
                queued += bytes.length
                if (frame._tag === "Send") Metrics.unsafeCountServed("sync", 1, frame.data.length)
                return out.unsafeOffer(bytes)
                  ? Effect.void
                  : out.offer(bytes).pipe(
                    Effect.asVoid,
                    Effect.timeoutFail({ duration: limits.idleTimeout, onTimeout: notReading })
                  )
              })
            ))
        )
      yield* session(input, info, emit, versions).pipe(
        Effect.catchAll((e) =>
          Effect.logInfo("sync session ended with an error").pipe(
            Effect.annotateLogs({ connection: info.id, remote: info.remoteAddress, reason: e.reason, detail: e.detail }),
            // The last word; given up after the idle timeout if the client is not reading.
            Effect.zipRight(Effect.ignore(emit(Codec.reply(`error ${oneLine(e.detail)}`))))
          )),
        Effect.annotateLogs({ connection: info.id }),
        Effect.ensuring(out.end),
        Effect.forkScoped
      )
      // Frames waiting together leave as one buffer: one socket write per batch, not per object.
      return Mailbox.toStream(out).pipe(
        Stream.mapChunks((chunk) => {
          queued -= Chunk.reduce(chunk, 0, (n, bytes) => n + bytes.length)
          if (queued < OUTPUT_BUDGET) room.unsafeOpen()
          return chunk
        }),
        Stream.mapChunks(coalesce)
      )
    }))

const coalesce = (chunk: Chunk.Chunk<Uint8Array>): Chunk.Chunk<Uint8Array> => {
  if (chunk.length <= 1) return chunk
  const parts = Chunk.toReadonlyArray(chunk)
  let size = 0
  for (const p of parts) size += p.length
  const out = new Uint8Array(size)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return Chunk.of(out)
}

// ---------------------------------------------------------------------------------------------
// Layers

/** The SyncProtocol for the Listener, with its services captured when the layer is built. */
export const makeWith = (versions: ReadonlyArray<number>) =>
  Effect.gen(function* () {
    const context = yield* Effect.context<Services>()
    const serve = serveWith(versions)
    return SyncProtocol.of({
      serve: (input, info) => serve(input, info).pipe(Stream.provideContext(context))
    })
  })

export const make = makeWith(SERVER_VERSIONS)

export const layer: Layer.Layer<SyncProtocol, never, Services> = Layer.effect(SyncProtocol, make)

/** The same session with another set of protocol versions (tests of version negotiation). */
export const layerVersions = (versions: ReadonlyArray<number>): Layer.Layer<SyncProtocol, never, Services> =>
  Layer.effect(SyncProtocol, makeWith(versions))

