/**
 * Peers (seed 000 "synchronizing between servers", seed 001 `sendServers`): servers that keep the same
 * releases. See docs/peers.md.
 *
 * - **Announce**: every release this server seals (published, accepted from the queue, pulled from a peer or
 *   an upstream) is announced to every peer as a server-scope `sync` message (`PeerLink`, authenticated with
 *   the pair's shared secret).
 * - **Pull**: a peer's `sync` policy decides (the maintainer's `sync` handler first, when configured); the
 *   default (`layerSyncPolicy`) queues a pull from the announcer: the graph comes over the sync protocol
 *   (SyncClient over `Network`), the tag is verified exactly as for a publish (`Verifier.verifyTag`, then
 *   ownership at seal time), and the release is sealed through the Registry, which announces it in turn.
 *   No storms: a release already held is neither pulled nor sealed again, so it is never announced again.
 * - **Anti-entropy** (`layerRun`): at start and every `interval`, each peer's release set is compared with ours
 *   (AntiEntropy.compare: O(1) bytes when equal) and what we lack goes through the same `sync` policy.
 * - **Conflicts**: a release held here with another hash than a peer's is never replaced (tags are immutable);
 *   it is logged and kept for `upm peers status` (the `?peers` query).
 */
import { Cause, Clock, Context, Duration, Effect, Either, Layer, Option, ParseResult, Queue, Ref, Schedule, Schema, Stream } from "effect"
import { ObjectHash } from "../domain/ObjectHash.js"
import { type PackageName, releaseRefName, releaseTagName, type Version } from "../domain/Package.js"
import * as MessageCodec from "../protocol/MessageCodec.js"
import { compare, type ConflictReport, loadIndex, OWNERS_LABEL, type PeerReport, PeerStatus } from "./AntiEntropy.js"
import { HandlerDuration } from "./Handlers.js"
import * as Metrics from "./Metrics.js"
import { formatAddress, Network, parseAddress } from "./Network.js"
import { getDecoded, ObjectStore, RefName } from "./ObjectStore.js"
import * as OwnerChanges from "./OwnerChanges.js"
import { Owners } from "./Owners.js"
import { type Announcement, PeerLink, type PeerDelivery, type SyncDecision, SyncPolicy } from "./Policies.js"
import { Registry } from "./Registry.js"
import * as SyncClient from "./SyncClient.js"
import { Verifier } from "./Verifier.js"

// ---------------------------------------------------------------------------------------------
// Configuration: the server config's `peers` section

export const PeerName = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, { message: () => "a peer name is 1–64 of A-Z a-z 0-9 . _ -" })
)

/** `host:port` in the config; an Address inside. */
export const AddressSetting = Schema.transformOrFail(
  Schema.String,
  Schema.Struct({ host: Schema.String, port: Schema.Int }),
  {
    strict: true,
    decode: (s, _, ast) =>
      Option.match(parseAddress(s), {
        onNone: () => ParseResult.fail(new ParseResult.Type(ast, s, `"${s}" is not an address: expected host:port`)),
        onSome: ParseResult.succeed
      }),
    encode: (a) => ParseResult.succeed(formatAddress(a))
  }
)

export const PeerEntry = Schema.Struct({
  name: PeerName,
  address: AddressSetting,
  /** Shared by the two servers: each lists the other with the same secret (at least 16 characters). */
  secret: Schema.String.pipe(Schema.minLength(16, { message: () => "a peer secret has at least 16 characters" }), Schema.maxLength(1024))
})
export type PeerEntry = typeof PeerEntry.Type

export const PeersConfig = Schema.Struct({
  /** This server's name, as its peers list it (the username it authenticates with). */
  name: PeerName,
  servers: Schema.optionalWith(Schema.Array(PeerEntry).pipe(Schema.maxItems(64)), { default: () => [], exact: true }),
  /** Anti-entropy period (one round also runs at start). */
  interval: Schema.optionalWith(HandlerDuration, { default: () => Duration.seconds(30), exact: true }),
  /** Longest wait for a peer: connecting, each reply. */
  timeout: Schema.optionalWith(HandlerDuration, { default: () => Duration.seconds(10), exact: true }),
  /** Pulls running at once. */
  workers: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 16)), { default: () => 2, exact: true })
}).pipe(Schema.filter((c) => {
  const names = c.servers.map((s) => s.name)
  if (new Set(names).size !== names.length) return "peer names must be unique"
  if (names.includes(c.name)) return `a peer may not have this server's own name "${c.name}"`
  return true
}))
export type PeersConfig = typeof PeersConfig.Type

/** The secrets peers authenticate with, for PeerCredentials (merged with `messages.peerSecrets`). */
export const peerSecrets = (config: PeersConfig): Record<string, string> =>
  Object.fromEntries(config.servers.map((s) => [s.name, s.secret]))

// ---------------------------------------------------------------------------------------------
// Replication of one release

export class ReplicationError extends Schema.TaggedError<ReplicationError>()("ReplicationError", {
  reason: Schema.Literal("Unreachable", "Transfer", "Verification", "Conflict", "Mismatch", "Store"),
  detail: Schema.String,
  /** For a conflict: the hash held here (it stays) and the other one. */
  kept: Schema.optional(ObjectHash),
  other: Schema.optional(ObjectHash)
}) {
  override get message() {
    return this.detail
  }
}

export interface ReleaseRef {
  readonly name: PackageName
  readonly version: Version
  readonly hash: ObjectHash
}

const replicationError = (reason: ReplicationError["reason"], detail: string) => new ReplicationError({ reason, detail })

/**
 * Pulls one release over an open session, verifies it as a publish is verified, and seals it. "AlreadySealed"
 * when this very hash is held; a ReplicationError("Conflict") when another hash is.
 */
export const fetchAndSeal = (session: SyncClient.SyncSession, release: ReleaseRef, options: { readonly prefetched?: boolean } = {}) =>
  Effect.gen(function* () {
    const store = yield* ObjectStore
    const registry = yield* Registry
    const verifier = yield* Verifier
    const label = releaseTagName(release.name, release.version)
    const storeFailed = (e: { readonly _tag: string }) => replicationError("Store", `${label}: local store failed (${e._tag})`)
    const conflict = (kept: ObjectHash) =>
      new ReplicationError({ reason: "Conflict", detail: `${label} is sealed here as ${kept}, the peer has ${release.hash}`, kept, other: release.hash })
    const held = yield* store.readRef(RefName.make(releaseRefName(release.name, release.version))).pipe(Effect.mapError(storeFailed))
    if (Option.isSome(held)) {
      if (held.value === release.hash) return "AlreadySealed" as const
      return yield* Effect.fail(conflict(held.value))
    }
    // Prefetched: the graph came in a wave with others (Registry.seal still checks that it is complete).
    if (options.prefetched !== true) {
      // Earlier releases of the package held here are haves: only what changed travels (v2/v3).
      const haves = yield* SyncClient.localHaves(release.name).pipe(Effect.mapError(storeFailed))
      yield* session.pull(release.hash, { haves }).pipe(
        Effect.mapError((e) => replicationError(e.reason === "Connect" || e.reason === "Closed" || e.reason === "Timeout" ? "Unreachable" : "Transfer", `${label}: ${e.detail}`))
      )
    }
    const object = yield* getDecoded(release.hash).pipe(Effect.mapError(storeFailed))
    if (object.type !== "tag") return yield* Effect.fail(replicationError("Mismatch", `${label}: ${release.hash} is a ${object.type}, not a release tag`))
    const verified = yield* verifier.verifyTag(release.hash, object.tag).pipe(
      Effect.mapError((e) => replicationError("Verification", `${label} refused (${e.reason}): ${e.detail}`))
    )
    if (verified.name !== release.name || verified.version !== release.version) {
      return yield* Effect.fail(replicationError("Mismatch", `announced as ${label}, but the tag is ${releaseTagName(verified.name, verified.version)}`))
    }
    // Registry.seal authorizes the signer for the namespace (claim or re-check) right before the ref is written.
    return yield* registry.seal(verified).pipe(
      Effect.catchTag("RefConflict", (e) => Effect.fail(e.actual !== undefined ? conflict(e.actual) : replicationError("Store", `${label}: ${e.name} changed`))),
      Effect.catchTag("VerificationError", (e) => Effect.fail(replicationError("Verification", `${label} refused (${e.reason}): ${e.detail}`))),
      Effect.mapError((e) => (e._tag === "ReplicationError" ? e : storeFailed(e)))
    )
  })

// ---------------------------------------------------------------------------------------------
// The service

export type OfferResult = "Held" | "Queued" | "Pending" | "Full" | "Conflict" | "UnknownPeer"

export class Peers extends Context.Tag("upm/Peers")<Peers, {
  readonly config: PeersConfig
  /** Queues a pull of `release` from `peer` unless it is held, already queued, or conflicts. */
  readonly offer: (peer: string, release: Announcement) => Effect.Effect<OfferResult>
  /** One anti-entropy comparison with `peer`: what it holds that we lack (the caller decides what to pull). */
  readonly compareWith: (peer: string) => Effect.Effect<ReadonlyArray<ReleaseRef>, ReplicationError>
  /**
   * Brings the ownership chain of `owner` up to the peer's head `head` (pulled, every new record verified,
   * fast-forward only: Owners.adopt); a fork is recorded as a conflict (`@owners/<owner>`) and ours stays.
   */
  readonly syncOwner: (peer: string, owner: string, head: ObjectHash) => Effect.Effect<void>
  /** Sends a message to peers over the message protocol (what PeerLink and announcements use). */
  readonly send: PeerLink["Type"]["send"]
  /** Releases queued or being pulled. */
  readonly pending: Effect.Effect<number>
  /**
   * The peer a release just sealed here was pulled from, taken (asked once, by the announcer): that peer holds
   * it, so announcing it back would only cost it a connection.
   */
  readonly takeOrigin: (hash: ObjectHash) => Effect.Effect<Option.Option<string>>
}>() {}

interface Job {
  readonly peer: PeerEntry
  readonly release: ReleaseRef
}

/** At most this many conflicts are shown in the status report (the newest); all are logged and stored. */
const MAX_CONFLICTS = 1000

// ---------------------------------------------------------------------------------------------
// Conflicts in the store: one small blob per conflict, named by `refs/upm/conflicts/<release>/<other hash>`,
// so they survive a restart (and a store copy) and `upm peers status` shows them until the operator deletes
// the ref.

export const CONFLICTS_PREFIX = "refs/upm/conflicts/"

export const conflictRefName = (release: string, other: ObjectHash) => RefName.make(`${CONFLICTS_PREFIX}${release}/${other}`)

export const encodeConflict = (c: ConflictReport): Uint8Array =>
  new TextEncoder().encode(`upm-conflict 1\nrelease ${c.release}\nkept ${c.kept}\nother ${c.other}\npeer ${c.peer}\nat ${c.at}\n`)

export const decodeConflict = (body: Uint8Array): Option.Option<ConflictReport> => {
  const fields = new Map<string, string>()
  for (const line of new TextDecoder().decode(body).split("\n")) {
    const at = line.indexOf(" ")
    if (at > 0) fields.set(line.slice(0, at), line.slice(at + 1))
  }
  const kept = Schema.decodeUnknownOption(ObjectHash)(fields.get("kept"))
  const other = Schema.decodeUnknownOption(ObjectHash)(fields.get("other"))
  const release = fields.get("release")
  const peer = fields.get("peer")
  const time = Number(fields.get("at"))
  if (fields.get("upm-conflict") !== "1" || release === undefined || peer === undefined || Option.isNone(kept) || Option.isNone(other) || !Number.isSafeInteger(time)) {
    return Option.none()
  }
  return Option.some({ release, kept: kept.value, other: other.value, peer, at: time })
}

/** The conflicts recorded in the store, oldest first (unreadable records are skipped). */
export const loadConflicts = (store: ObjectStore["Type"]) =>
  Effect.gen(function* () {
    const refs = yield* store.listRefs(CONFLICTS_PREFIX)
    const found: Array<ConflictReport> = []
    for (const ref of refs) {
      const object = yield* Effect.option(store.get(ref.hash))
      if (Option.isNone(object) || object.value.type !== "blob") continue
      const c = decodeConflict(object.value.body)
      if (Option.isSome(c)) found.push(c.value)
    }
    return found.sort((a, b) => a.at - b.at || (a.release < b.release ? -1 : a.release > b.release ? 1 : 0))
  })
const QUEUE_CAPACITY = 8192
const BATCH = 64

export const make = (config: PeersConfig) =>
  Effect.gen(function* () {
    const network = yield* Network
    const context = yield* Effect.context<ObjectStore | Registry | Verifier | Owners>()
    const store = yield* ObjectStore
    const owners = yield* Owners
    const client = yield* SyncClient.make(network.connect, { timeout: config.timeout }).pipe(Effect.provideService(ObjectStore, store))
    const byName = new Map(config.servers.map((s) => [s.name, s]))
    const queue = yield* Queue.dropping<Job>(QUEUE_CAPACITY)
    const pendingHashes = yield* Ref.make(new Set<ObjectHash>())
    const reports = yield* Ref.make(new Map<string, PeerReport>(config.servers.map((s) => [s.name, {
      name: s.name, address: formatAddress(s.address), state: "unknown", lastSync: Option.none(), lag: Option.none(),
      behind: Option.none(), lastError: Option.none()
    } satisfies PeerReport])))
    const stored = yield* loadConflicts(store).pipe(
      Effect.catchAll((e) => Effect.as(Effect.logWarning("could not read the recorded conflicts").pipe(Effect.annotateLogs({ error: e._tag })), [])))
    const conflicts = yield* Ref.make<ReadonlyArray<ConflictReport>>(stored.slice(-MAX_CONFLICTS))
    // hash → the peer it is being pulled from; removed by the announcer (takeOrigin) or when the pull did not seal.
    const origins = yield* Ref.make(new Map<ObjectHash, string>())
    const setOrigin = (hash: ObjectHash, peer: string | undefined) =>
      Ref.update(origins, (m) => {
        const next = new Map(m)
        if (peer === undefined) next.delete(hash)
        else next.set(hash, peer)
        return next
      })

    const note = (peer: string, update: (r: PeerReport) => PeerReport) =>
      Ref.update(reports, (m) => {
        const r = m.get(peer)
        if (r === undefined) return m
        const next = new Map(m)
        next.set(peer, update(r))
        return next
      })
    const up = (peer: string) => note(peer, (r) => ({ ...r, state: "up", lastError: Option.none() }))
    const down = (peer: string, detail: string) => note(peer, (r) => ({ ...r, state: "down", lastError: Option.some(detail) }))

    const recordConflict = (release: string, kept: ObjectHash, other: ObjectHash, peer: string) =>
      Effect.gen(function* () {
        const at = yield* Clock.currentTimeMillis
        const record: ConflictReport = { release, kept, other, peer, at }
        const fresh = yield* Ref.modify(conflicts, (all) => {
          if (all.some((c) => c.release === release && c.other === other)) return [false, all] as const
          const next = [...all, record]
          return [true, next.length > MAX_CONFLICTS ? next.slice(next.length - MAX_CONFLICTS) : next] as const
        })
        if (fresh) {
          // Kept in the store too; the ref exists already when another path recorded the same conflict first.
          yield* store.put("blob", encodeConflict(record)).pipe(
            Effect.flatMap((blob) => store.setRef(conflictRefName(release, other), Option.none(), blob)),
            Effect.catchAll((e) => e._tag === "RefConflict" ? Effect.void : Effect.logWarning("could not store a conflict").pipe(Effect.annotateLogs({ release, error: e._tag })))
          )
          yield* Effect.logWarning("release conflict: the peer holds other content for a release sealed here; the first sealed stays").pipe(
            Effect.annotateLogs({ release, kept, other, peer }))
        }
      })

    const connectTo = (peer: PeerEntry) =>
      client.connect(peer.address).pipe(
        Effect.timeoutFail({
          duration: config.timeout,
          onTimeout: () => replicationError("Unreachable", `${peer.name} (${formatAddress(peer.address)}): no handshake within ${Duration.format(config.timeout)}`)
        }),
        Effect.mapError((e) => e._tag === "ReplicationError" ? e : replicationError("Unreachable", `${peer.name}: ${e.detail}`))
      )

    /** Over an open session: pulls the chain below `head` and adopts it; a fork becomes a recorded conflict. */
    const adoptOwner = (session: SyncClient.SyncSession, peer: PeerEntry, owner: string, head: ObjectHash) =>
      Effect.gen(function* () {
        yield* session.pull(head).pipe(Effect.mapError((e) =>
          replicationError(e.reason === "Connect" || e.reason === "Closed" || e.reason === "Timeout" ? "Unreachable" : "Transfer", `owners of ${owner}: ${e.detail}`)))
        const result = yield* owners.adopt(owner, head).pipe(Effect.either)
        if (Either.isRight(result)) {
          if (result.right === "Adopted") {
            yield* Effect.logInfo("ownership chain adopted from peer").pipe(Effect.annotateLogs({ owner, head, peer: peer.name }))
          }
          return
        }
        const e = result.left
        if (e.reason === "Conflict") {
          const mine = yield* owners.get(owner).pipe(Effect.option)
          const kept = Option.flatten(mine).pipe(Option.map((m) => m.head))
          if (Option.isSome(kept)) yield* recordConflict(`${OWNERS_LABEL}${owner}`, kept.value, head, peer.name)
          return
        }
        yield* Effect.logWarning("ownership chain from peer refused").pipe(Effect.annotateLogs({ owner, peer: peer.name, reason: e.reason, detail: e.detail }))
      })

    /**
     * Before releases of a namespace we have no owner record for are sealed, the peer's chain for it is adopted,
     * so every server holds the same chain instead of each claiming the namespace with a record of its own.
     */
    const adoptMissingOwners = (session: SyncClient.SyncSession, peer: PeerEntry, jobs: ReadonlyArray<Job>) =>
      Effect.gen(function* () {
        const namespaces = [...new Set(jobs.map((j) => j.release.name.slice(0, j.release.name.indexOf("/"))))]
        for (const owner of namespaces) {
          const local = yield* owners.get(owner).pipe(Effect.option)
          if (Option.isSome(local) && Option.isSome(local.value)) continue
          const theirs = yield* OwnerChanges.current(session, owner).pipe(Effect.option)
          if (Option.isNone(theirs) || Option.isNone(theirs.value)) continue
          yield* adoptOwner(session, peer, owner, theirs.value.value.head).pipe(
            Effect.catchIf((e) => e.reason !== "Unreachable", (e) =>
              Effect.logWarning("ownership chain from peer not pulled").pipe(Effect.annotateLogs({ owner, peer: peer.name, detail: e.detail }))))
        }
      })

    /** Pulls a batch of releases from one peer over one session. */
    const pullBatch = (peer: PeerEntry, jobs: ReadonlyArray<Job>) =>
      Effect.scoped(Effect.gen(function* () {
        const session = yield* connectTo(peer)
        // One fetch wave for the graphs of every release not held yet (v2: one round trip for the batch); each
        // release is then verified and sealed on its own. If the wave fails (a release the peer no longer has,
        // a bad object), each release is pulled on its own, which sorts it out.
        const wanted = yield* Effect.filter(jobs, (job) =>
          Effect.map(Effect.option(store.readRef(RefName.make(releaseRefName(job.release.name, job.release.version)))), (held) =>
            Option.isNone(held) || Option.isNone(held.value)))
        let prefetched = false
        if (wanted.length > 1) {
          const wave = yield* Effect.either(session.pullAll(wanted.map((j) => j.release.hash)))
          if (Either.isLeft(wave) && (wave.left.reason === "Connect" || wave.left.reason === "Closed" || wave.left.reason === "Timeout")) {
            return yield* Effect.fail(replicationError("Unreachable", `${peer.name}: ${wave.left.detail}`))
          }
          prefetched = Either.isRight(wave)
        }
        yield* adoptMissingOwners(session, peer, wanted)
        for (const job of jobs) {
          const label = releaseTagName(job.release.name, job.release.version)
          yield* setOrigin(job.release.hash, peer.name)
          const result = yield* fetchAndSeal(session, job.release, { prefetched }).pipe(
            Effect.provide(context),
            Effect.either,
            Effect.tap((r) => (Either.isRight(r) && r.right === "Sealed" ? Effect.void : setOrigin(job.release.hash, undefined))),
            Effect.onInterrupt(() => setOrigin(job.release.hash, undefined))
          )
          if (Either.isRight(result)) {
            if (result.right === "Sealed") {
              yield* Metrics.countPeerPull("sealed")
              yield* Effect.logInfo("release pulled from peer").pipe(Effect.annotateLogs({ release: label, tag: job.release.hash, peer: peer.name }))
            }
            continue
          }
          const e = result.left
          yield* Metrics.countPeerPull(e.reason)
          if (e.reason === "Conflict" && e.kept !== undefined && e.other !== undefined) {
            yield* recordConflict(label, e.kept, e.other, peer.name)
          } else if (e.reason === "Unreachable") {
            return yield* Effect.fail(e) // the rest of the batch waits for anti-entropy
          } else {
            yield* Effect.logWarning("release from peer refused").pipe(Effect.annotateLogs({ release: label, peer: peer.name, reason: e.reason, detail: e.detail }))
          }
        }
      })).pipe(
        Effect.tap(() => up(peer.name)),
        Effect.tapError((e) => Effect.zipRight(down(peer.name, e.detail), Effect.logInfo("pull from peer failed").pipe(Effect.annotateLogs({ peer: peer.name, detail: e.detail })))),
        Effect.ignore,
        Effect.ensuring(Ref.update(pendingHashes, (s) => {
          const next = new Set(s)
          for (const j of jobs) next.delete(j.release.hash)
          return next
        }))
      )

    const worker = Effect.forever(Effect.gen(function* () {
      const jobs = yield* Queue.takeBetween(queue, 1, BATCH)
      const groups = new Map<string, Array<Job>>()
      for (const job of jobs) {
        const g = groups.get(job.peer.name)
        if (g === undefined) groups.set(job.peer.name, [job])
        else g.push(job)
      }
      for (const group of groups.values()) {
        // A defect in one batch must not stop the worker (its releases are released from `pending` either way).
        yield* pullBatch(group[0]!.peer, group).pipe(
          Effect.catchAllCause((cause) =>
            Cause.isInterruptedOnly(cause) ? Effect.failCause(cause) : Effect.logError("pull from peer crashed", cause)))
      }
    }))
    yield* Effect.forEach(Array.from({ length: config.workers }), () => Effect.forkScoped(worker), { discard: true })

    const offer = (peerName: string, release: Announcement): Effect.Effect<OfferResult> =>
      Effect.gen(function* () {
        const peer = byName.get(peerName)
        if (peer === undefined) return "UnknownPeer" as const
        const label = releaseTagName(release.name, release.version)
        const held = yield* store.readRef(RefName.make(releaseRefName(release.name, release.version))).pipe(Effect.option)
        if (Option.isSome(held) && Option.isSome(held.value)) {
          if (held.value.value === release.hash) return "Held" as const
          yield* recordConflict(label, held.value.value, release.hash, peerName)
          return "Conflict" as const
        }
        const claimed = yield* Ref.modify(pendingHashes, (s) => {
          if (s.has(release.hash)) return [false, s] as const
          const next = new Set(s)
          next.add(release.hash)
          return [true, next] as const
        })
        if (!claimed) return "Pending" as const
        const queued = yield* Queue.offer(queue, { peer, release })
        if (!queued) {
          yield* Ref.update(pendingHashes, (s) => {
            const next = new Set(s)
            next.delete(release.hash)
            return next
          })
          return "Full" as const
        }
        return "Queued" as const
      })

    const syncOwner = (peerName: string, owner: string, head: ObjectHash): Effect.Effect<void> =>
      Effect.gen(function* () {
        const peer = byName.get(peerName)
        if (peer === undefined) return
        yield* Effect.scoped(Effect.flatMap(connectTo(peer), (session) => adoptOwner(session, peer, owner, head)))
      }).pipe(Effect.catchAll((e) => Effect.logInfo("owner sync with peer failed").pipe(Effect.annotateLogs({ peer: peerName, owner, detail: e.detail }))))

    const compareWith = (peerName: string) =>
      Effect.gen(function* () {
        const peer = byName.get(peerName)
        if (peer === undefined) return yield* Effect.fail(replicationError("Unreachable", `no peer named ${peerName}`))
        const local = yield* loadIndex.pipe(Effect.provide(context), Effect.mapError((e) => replicationError("Store", `local store failed (${e._tag})`)))
        const diff = yield* Effect.scoped(Effect.flatMap(connectTo(peer), (session) =>
          compare(session, local).pipe(Effect.mapError((e) => replicationError(e.reason === "Remote" || e.reason === "Protocol" ? "Transfer" : "Unreachable", `${peer.name}: ${e.detail}`)))))
        const now = yield* Clock.currentTimeMillis
        yield* note(peer.name, (r) => ({
          ...r, state: "up", lastError: Option.none(), lastSync: Option.some(now), lag: Option.some(diff.lag), behind: Option.some(diff.missing.length)
        }))
        for (const c of diff.conflicts) yield* recordConflict(c.release, c.local, c.remote, peer.name)
        // Ownership chains that differ: adopt theirs when it is ahead (a fork is recorded; behind: they pull ours).
        for (const o of diff.owners) yield* syncOwner(peer.name, o.owner, o.remote)
        return diff.missing
      }).pipe(Effect.tapError((e) => down(peerName, e.detail)))

    // -- sending messages to peers (sendServers)

    const limits = MessageCodec.defaultLimits
    const encode = MessageCodec.encodeMessage(MessageCodec.ClientRequest, limits)

    const deliver = (peer: PeerEntry, message: { readonly type: string; readonly data: unknown }): Effect.Effect<PeerDelivery> =>
      Effect.scoped(Effect.gen(function* () {
        const frame = yield* Either.match(encode({
          header: { scope: "server", id: 1, authentication: { username: config.name, password: peer.secret } },
          payload: { type: message.type, data: message.data }
        }), { onLeft: (e) => Effect.fail(e.message), onRight: Effect.succeed })
        const transport = yield* network.connect(peer.address).pipe(Effect.mapError((e) => `cannot connect: ${e.detail}`))
        yield* transport.write(frame).pipe(Effect.mapError((e) => e.detail))
        const response = yield* transport.input.pipe(
          MessageCodec.decodeAll(MessageCodec.ServerResponse, limits),
          Stream.runHead,
          Effect.mapError((e) => e.message)
        )
        if (Option.isNone(response)) return yield* Effect.fail("the peer closed the connection without answering")
        if (Either.isLeft(response.value)) return yield* Effect.fail(`malformed answer: ${response.value.left.message}`)
        const status = response.value.right.header.status
        const ok = status !== "unauthorized" && status !== "bad-request" && status !== "error" && status !== "no-handler"
        const data = response.value.right.payload.data
        const why = typeof data === "object" && data !== null && "error" in data && typeof data.error === "string" ? `: ${data.error}` : ""
        return ok ? { peer: peer.name, delivered: true, detail: status } : { peer: peer.name, delivered: false, detail: `${status}${why}` }
      })).pipe(
        Effect.timeoutFail({ duration: config.timeout, onTimeout: () => `no answer within ${Duration.format(config.timeout)}` }),
        Effect.catchAll((detail) => Effect.succeed({ peer: peer.name, delivered: false, detail }))
      )

    const send: PeerLink["Type"]["send"] = (targets, message) =>
      Effect.forEach(
        targets === "all" ? config.servers : targets.map((n) => byName.get(n) ?? n),
        (p) => typeof p === "string" ? Effect.succeed<PeerDelivery>({ peer: p, delivered: false, detail: "not a configured peer" }) : deliver(p, message),
        { concurrency: "unbounded" }
      )

    const service = Peers.of({
      config,
      offer,
      compareWith,
      syncOwner,
      send,
      pending: Effect.map(Ref.get(pendingHashes), (s) => s.size),
      takeOrigin: (hash) =>
        Ref.modify(origins, (m) => {
          const peer = m.get(hash)
          if (peer === undefined) return [Option.none(), m] as const
          const next = new Map(m)
          next.delete(hash)
          return [Option.some(peer), next] as const
        })
    })
    const status = PeerStatus.of({
      self: config.name,
      peers: Effect.map(Ref.get(reports), (m) => [...m.values()]),
      conflicts: Ref.get(conflicts)
    })
    return { service, status }
  })

/** The Peers engine and its status report (for `?peers`). */
export const layer = (config: PeersConfig): Layer.Layer<Peers | PeerStatus, never, ObjectStore | Registry | Verifier | Owners | Network> =>
  Layer.scopedContext(Effect.map(make(config), ({ service, status }) =>
    Context.make(Peers, service).pipe(Context.add(PeerStatus, status))))

/** `sendServers` over the message protocol to the configured peers. */
export const layerPeerLink: Layer.Layer<PeerLink, never, Peers> = Layer.effect(
  PeerLink,
  Effect.map(Peers, (peers) => PeerLink.of({ send: peers.send }))
)

/** The default `sync` policy: pull what a peer announces (verified, sealed), unless it is held or conflicts. */
export const layerSyncPolicy: Layer.Layer<SyncPolicy, never, Peers> = Layer.effect(
  SyncPolicy,
  Effect.map(Peers, (peers) => SyncPolicy.of({
    announce: (peer, release) =>
      Effect.map(peers.offer(peer, release), (result): SyncDecision => {
        switch (result) {
          case "UnknownPeer":
            return { _tag: "Refuse", reason: `${peer} is not in this server's peers (no address to pull from)` }
          case "Conflict":
            return { _tag: "Refuse", reason: `${releaseTagName(release.name, release.version)} is sealed here with other content` }
          case "Full":
            return { _tag: "Refuse", reason: "too many pulls waiting; anti-entropy will catch up" }
          default:
            return { _tag: "Accept" }
        }
      })
  }))
)

/** Announces every release sealed here to the peers (but not back to the peer it was pulled from). */
export const layerAnnounce: Layer.Layer<never, never, Peers | Registry> = Layer.scopedDiscard(
  Effect.gen(function* () {
    const peers = yield* Peers
    const registry = yield* Registry
    const config = peers.config
    if (config.servers.length === 0) return

    const announce = (release: ReleaseRef) =>
      Effect.gen(function* () {
        const origin = yield* peers.takeOrigin(release.hash)
        const targets = Option.match(origin, {
          onNone: () => "all" as const,
          onSome: (from) => config.servers.map((s) => s.name).filter((n) => n !== from)
        })
        if (targets !== "all" && targets.length === 0) return
        const deliveries = yield* peers.send(targets, {
          type: "sync", status: "ok", data: { name: release.name, version: release.version, hash: release.hash }
        })
        const failed = deliveries.filter((d) => !d.delivered)
        yield* Metrics.countAnnouncement("sent", deliveries.length - failed.length)
        if (failed.length > 0) {
          yield* Effect.logInfo("announcement not delivered; anti-entropy will catch up").pipe(
            Effect.annotateLogs({ release: releaseTagName(release.name, release.version), peers: failed.map((d) => `${d.peer} (${d.detail ?? ""})`).join(", ") }))
        }
      })
    yield* registry.sealed.pipe(Stream.mapEffect(announce, { concurrency: 16, unordered: true }), Stream.runDrain, Effect.forkScoped)
  })
)

/**
 * Anti-entropy at start and every `interval`: what a peer holds that we lack goes through `SyncPolicy` like an
 * announcement (so a maintainer's `sync` handler sees it too).
 */
export const layerAntiEntropy: Layer.Layer<never, never, Peers | SyncPolicy> = Layer.scopedDiscard(
  Effect.gen(function* () {
    const peers = yield* Peers
    const policy = yield* SyncPolicy
    const config = peers.config
    if (config.servers.length === 0) return

    const round = (peer: PeerEntry) =>
      peers.compareWith(peer.name).pipe(
        Effect.flatMap((missing) =>
          Effect.forEach(missing, (m) => policy.announce(peer.name, m), { discard: true })),
        Effect.catchAll((e) => Effect.logInfo("anti-entropy round failed").pipe(Effect.annotateLogs({ peer: peer.name, detail: e.detail })))
      )
    yield* Effect.forEach(config.servers, round, { concurrency: "unbounded", discard: true }).pipe(
      Effect.repeat(Schedule.spaced(config.interval)),
      Effect.forkScoped
    )
  })
)

/** Announce on seal and anti-entropy, running for the layer's lifetime. */
export const layerRun: Layer.Layer<never, never, Peers | Registry | SyncPolicy> = Layer.mergeAll(layerAnnounce, layerAntiEntropy)
