/**
 * Simulation harness: upm servers inside one process, over the in-memory network (Network.makeSimulation),
 * on the TestClock. Each server's store lives outside its scope, so a crash (closing the scope: every fiber
 * and connection of the server dies) and a restart keep what was stored, like a process restart on disk.
 *
 * A server here is the real SyncServer (push flow with the real Verifier: SSHSIG signatures and namespace
 * ownership), Registry, Owners, Peers (announce, pull, anti-entropy) and the peer side of the message
 * protocol's `sync` request. The rest of the message protocol (accounts, handlers, conversations) is left out:
 * it opens sockets and files, and the announce path only needs `sync` — the e2e test runs the whole server.
 */
import { Context, Duration, Effect, ExecutionStrategy, Either, Exit, Layer, Mailbox, Option, Schema, Scope, Stream } from "effect"
import { encodeTag, encodeTree, type GitObject, hashOf, type TreeEntry } from "../../src/domain/GitObject.js"
import type { ObjectHash } from "../../src/domain/ObjectHash.js"
import { PackageName, Version } from "../../src/domain/Package.js"
import * as MessageCodec from "../../src/protocol/MessageCodec.js"
import type { ConflictReport } from "../../src/services/AntiEntropy.js"
import { type ConnectionError, MessageProtocol, SyncProtocol } from "../../src/services/Connection.js"
import type { SimNetwork } from "../../src/services/Network.js"
import * as Network from "../../src/services/Network.js"
import { makeMemory, missingReachable, ObjectStore } from "../../src/services/ObjectStore.js"
import * as Owners from "../../src/services/Owners.js"
import * as Peers from "../../src/services/Peers.js"
import { Announcement, layerPeerSecrets, PeerCredentials, SyncPolicy } from "../../src/services/Policies.js"
import * as ProposalPolicy from "../../src/services/ProposalPolicy.js"
import * as Registry from "../../src/services/Registry.js"
import { signRelease } from "../../src/services/Signer.js"
import * as SyncClient from "../../src/services/SyncClient.js"
import * as SyncLimits from "../../src/services/SyncLimits.js"
import * as SyncServer from "../../src/services/SyncServer.js"
import * as Upstream from "../../src/services/Upstream.js"
import * as Verifier from "../../src/services/Verifier.js"
import type { SigningKey } from "../../src/services/Keys.js"

// ---------------------------------------------------------------------------------------------
// The peer side of the message protocol: `sync` with scope "server" (as MessageServer answers it)

const peerEndpoint = Effect.gen(function* () {
  const credentials = yield* PeerCredentials
  const policy = yield* SyncPolicy
  const encode = MessageCodec.encodeMessage(MessageCodec.ServerResponse)
  const serve = (input: Stream.Stream<Uint8Array, ConnectionError>) =>
    Stream.unwrapScoped(Effect.gen(function* () {
      const out = yield* Mailbox.make<Uint8Array>(16)
      const reply = (status: string, type: string, data: unknown, id: MessageCodec.CorrelationId | undefined) =>
        Either.match(encode({ header: id === undefined ? { status } : { status, id }, payload: { type, data } }), {
          onLeft: () => Effect.void,
          onRight: (frame) => Effect.asVoid(out.offer(frame))
        })
      let peer: string | undefined
      yield* input.pipe(
        MessageCodec.decodeAll(MessageCodec.ClientRequest),
        Stream.runForEach((item) =>
          Effect.gen(function* () {
            if (Either.isLeft(item)) return yield* reply("bad-request", "error", { error: item.left.message }, undefined)
            const request = item.right
            const auth = request.header.authentication
            if (peer === undefined && request.header.scope === "server" && auth !== undefined) {
              if (yield* credentials.verify(auth.username, auth.password)) peer = auth.username
            }
            if (request.payload.type !== "sync") return yield* reply("no-handler", request.payload.type, {}, request.header.id)
            if (peer === undefined) return yield* reply("unauthorized", "sync", { error: "unknown peer" }, request.header.id)
            const announcement = Schema.decodeUnknownOption(Announcement)(request.payload.data)
            if (Option.isNone(announcement)) return yield* reply("bad-request", "sync", {}, request.header.id)
            const decision = yield* policy.announce(peer, announcement.value)
            yield* reply(decision._tag === "Accept" ? "accepted" : "refused", "sync", {}, request.header.id)
          })),
        Effect.ignore,
        Effect.ensuring(out.end),
        Effect.forkScoped
      )
      return Mailbox.toStream(out)
    }))
  return MessageProtocol.of({ serve: (input) => serve(input) })
})

// ---------------------------------------------------------------------------------------------
// Servers

export interface SimServerSpec {
  readonly name: string
  readonly peers: ReadonlyArray<string>
  /** A node to use as upstream (pull-through cache). */
  readonly upstream?: string
  readonly upstreamMaxAge?: number
}

export const SECRET = "simulation-shared-secret"

export interface SimServer {
  readonly name: string
  readonly store: ObjectStore["Type"]
  readonly up: () => boolean
  readonly boot: Effect.Effect<void>
  readonly crash: Effect.Effect<void>
  /** Conflicts recorded in the store (they survive restarts). */
  readonly conflicts: Effect.Effect<ReadonlyArray<ConflictReport>>
  /** Releases queued or being pulled (0 when down). */
  readonly pending: Effect.Effect<number>
}

/**
 * Deliberately broken behaviour, to show that the invariants have teeth (each must make some seed fail):
 * - "no-anti-entropy": peers only announce; a lost announcement is never healed.
 * - "lying-store": the server's store acknowledges some blob writes and loses them, and answers "present" when
 *   asked about them, so the seal's completeness check passes over a hole (a release partially visible).
 */
export type Sabotage = "no-anti-entropy" | "lying-store"

export interface SimOptions {
  readonly interval: number
  readonly signed: boolean
  readonly sabotage?: Sabotage | undefined
}

/** A store that loses the blobs whose hash starts with 0 or 1 (about one in eight) while claiming to hold them. */
const lyingStore = (inner: ObjectStore["Type"]): ObjectStore["Type"] => {
  const lost = (type: string, hash: ObjectHash) => type === "blob" && (hash.startsWith("0") || hash.startsWith("1"))
  const lostSet = new Set<ObjectHash>()
  const put = (type: GitObject["type"], body: Uint8Array) => {
    const hash = hashOf(type, body)
    if (!lost(type, hash)) return inner.put(type, body)
    lostSet.add(hash)
    return Effect.succeed(hash)
  }
  const { getDeflated: _g, putDeflated: _p, ...plain } = inner
  return {
    ...plain,
    put,
    putMany: (objects) => Effect.forEach(objects, (o) => put(o.type, o.body)),
    has: (hash) => (lostSet.has(hash) ? Effect.succeed(true) : inner.has(hash)),
    missing: (hashes) => Effect.map(inner.missing(hashes), (m) => m.filter((h) => !lostSet.has(h)))
  }
}

export const makeServer = (sim: SimNetwork, spec: SimServerSpec, options: SimOptions) =>
  Effect.gen(function* () {
    const store = yield* makeMemory
    const parent = yield* Effect.scope
    let scope: Scope.CloseableScope | undefined
    let peersService: Peers.Peers["Type"] | undefined
    const config = Schema.decodeSync(Peers.PeersConfig)({
      name: spec.name,
      servers: spec.peers.map((p) => ({ name: p, address: `${p}:0`, secret: SECRET })),
      interval: options.interval,
      timeout: 2000,
      workers: 2
    })
    const storeLayer = Layer.succeed(ObjectStore, options.sabotage === "lying-store" ? lyingStore(store) : store)
    const boot = Effect.gen(function* () {
      if (scope !== undefined) return
      const s = yield* Scope.fork(parent, ExecutionStrategy.sequential)
      scope = s
      const registry = spec.upstream === undefined
        ? Registry.layer
        : Upstream.layer(Schema.decodeSync(Upstream.UpstreamConfig)({ address: `${spec.upstream}:0`, timeout: 2000, maxAge: spec.upstreamMaxAge ?? 60_000 })).pipe(
          Layer.provide(Registry.layer),
          Layer.provide(options.signed ? Verifier.layer : Verifier.layerUnsigned),
          Layer.provide(sim.layerNode(spec.name)))
      const state = registry.pipe(Layer.provideMerge(Owners.layer), Layer.provideMerge(storeLayer))
      const verifier = (options.signed ? Verifier.layer : Verifier.layerUnsigned).pipe(Layer.provideMerge(state))
      const peers = Peers.layer(config).pipe(Layer.provideMerge(verifier), Layer.provide(sim.layerNode(spec.name)))
      const policies = Layer.mergeAll(Peers.layerSyncPolicy, Peers.layerPeerLink, layerPeerSecrets(Peers.peerSecrets(config))).pipe(
        Layer.provideMerge(peers))
      const sync = Layer.effect(SyncProtocol, SyncServer.make).pipe(
        Layer.provide(Layer.mergeAll(ProposalPolicy.layerAcceptAll, ProposalPolicy.layerNoConversations, SyncLimits.layerDefault)),
        Layer.provideMerge(policies))
      const message = Layer.effect(MessageProtocol, peerEndpoint).pipe(Layer.provideMerge(sync))
      const all = (options.sabotage === "no-anti-entropy" ? Peers.layerAnnounce : Peers.layerRun).pipe(Layer.provideMerge(message))
      const ctx = yield* Layer.buildWithScope(all, s).pipe(Effect.annotateLogs({ node: spec.name }))
      peersService = Context.get(ctx, Peers.Peers)
      const syncProtocol = yield* Effect.provide(SyncProtocol, ctx)
      const messageProtocol = yield* Effect.provide(MessageProtocol, ctx)
      yield* sim.listen(spec.name, { sync: syncProtocol.serve, message: messageProtocol.serve }).pipe(Scope.extend(s))
    })
    const crash = Effect.suspend(() => {
      const s = scope
      scope = undefined
      peersService = undefined
      return s === undefined ? Effect.void : Scope.close(s, Exit.void)
    })
    return {
      name: spec.name,
      store,
      up: () => scope !== undefined,
      boot,
      crash,
      conflicts: Effect.orDie(Peers.loadConflicts(store)),
      pending: Effect.suspend(() => (peersService === undefined ? Effect.succeed(0) : peersService.pending))
    } satisfies SimServer
  })

// ---------------------------------------------------------------------------------------------
// Publishing

export const pkg = (s: string) => PackageName.make(s)
export const ver = (s: string) => Version.make(s)

/** Builds a small release in `store`, signed by `key` (or unsigned), and returns its tag hash. */
export const buildRelease = (store: ObjectStore["Type"], key: SigningKey | undefined, name: string, version: string, content: string) =>
  Effect.gen(function* () {
    const text = new TextEncoder()
    const blob = yield* Effect.orDie(store.put("blob", text.encode(content)))
    const manifest = yield* Effect.orDie(store.put("blob", text.encode(JSON.stringify({ name, version }))))
    const sub = yield* Effect.orDie(store.put("tree", encodeTree([{ mode: "100644", name: "index.js", hash: blob }])))
    const entries: ReadonlyArray<TreeEntry> = [
      { mode: "40000", name: "lib", hash: sub },
      { mode: "100644", name: "upm.json", hash: manifest }
    ]
    const tree = yield* Effect.orDie(store.put("tree", encodeTree(entries)))
    if (key === undefined) {
      return yield* Effect.orDie(store.put("tag", encodeTag({
        object: tree, type: "tree", tag: `${name}/v${version}`, tagger: "Sim <sim@example.org> 0 +0000", message: "release\n", signature: undefined
      })))
    }
    const signed = yield* signRelease(key, {
      tree,
      metadata: { name: pkg(name), version: ver(version) },
      tagger: { name: "Sim", email: "sim@example.org" },
      time: { seconds: 1_700_000_000 }
    }).pipe(Effect.orDie)
    return yield* Effect.orDie(store.put("tag", signed.body))
  })

/** Pushes a release from a client node to a server; the outcome as text (never fails). */
export const publish = (sim: SimNetwork, clientName: string, server: string, clientStore: ObjectStore["Type"], tag: ObjectHash) =>
  Effect.scoped(Effect.gen(function* () {
    const client = yield* SyncClient.make(sim.node(clientName).connect, { timeout: Duration.seconds(5) }).pipe(
      Effect.provideService(ObjectStore, clientStore))
    const session = yield* client.connect({ host: server, port: 0 })
    const result = yield* session.push(tag)
    return result.status
  })).pipe(Effect.catchAll((e) => Effect.succeed(`failed: ${e.detail}`)))

// ---------------------------------------------------------------------------------------------
// Invariants

export interface Observed {
  /** server → release → the first hash seen sealed there. */
  readonly seen: Map<string, Map<string, ObjectHash>>
  /** (server, release, hash) whose graph was found complete (immutable: checked once). */
  readonly complete: Set<string>
}

export const newObserved = (): Observed => ({ seen: new Map(), complete: new Set() })

/** Checks every sealed release of every server: complete graph, never two contents. Returns a violation or undefined. */
export const checkInvariants = (servers: ReadonlyArray<SimServer>, observed: Observed) =>
  Effect.gen(function* () {
    for (const server of servers) {
      const refs = yield* Effect.orDie(server.store.listRefs("refs/tags/"))
      const seen = observed.seen.get(server.name) ?? new Map<string, ObjectHash>()
      observed.seen.set(server.name, seen)
      for (const ref of refs) {
        const first = seen.get(ref.name)
        if (first !== undefined && first !== ref.hash) {
          return `${server.name} has two contents for ${ref.name}: ${first} then ${ref.hash}`
        }
        seen.set(ref.name, ref.hash)
        const id = `${server.name} ${ref.name} ${ref.hash}`
        if (observed.complete.has(id)) continue
        const missing = yield* Effect.orDie(missingReachable(ref.hash).pipe(Effect.provideService(ObjectStore, server.store)))
        if (missing.length > 0) return `${server.name} shows ${ref.name} with ${missing.length} objects missing (partially visible)`
        observed.complete.add(id)
      }
    }
    return undefined
  })

/** Each server's release set as `release hash` lines. */
export const releaseSets = (servers: ReadonlyArray<SimServer>) =>
  Effect.forEach(servers, (s) =>
    Effect.map(Effect.orDie(s.store.listRefs("refs/tags/")), (refs) => new Map(refs.map((r) => [r.name, r.hash] as const))))

/**
 * Converged: every server holds the same release names; where hashes differ (a conflict published on two
 * sides), some server has recorded the conflict.
 */
export const convergence = (servers: ReadonlyArray<SimServer>) =>
  Effect.gen(function* () {
    const sets = yield* releaseSets(servers)
    const names = new Set<string>()
    for (const set of sets) for (const n of set.keys()) names.add(n)
    const get = (set: ReadonlyMap<string, ObjectHash>, n: string) => set.get(n)
    for (const [i, set] of sets.entries()) {
      if (set.size !== names.size) return { converged: false, detail: `${servers[i]!.name} holds ${set.size} of ${names.size} releases` }
    }
    const conflicts = (yield* Effect.forEach(servers, (s) => s.conflicts)).flat()
    for (const n of names) {
      const hashes = new Set(sets.map((s) => get(s, n)))
      if (hashes.size > 1 && !conflicts.some((c) => `refs/tags/${c.release}` === n)) {
        return { converged: false, detail: `${n} differs between servers and no conflict is recorded` }
      }
    }
    // Ownership chains: the same head everywhere, or a recorded fork.
    const heads = yield* Effect.forEach(servers, (s) =>
      Effect.map(Effect.orDie(s.store.listRefs("refs/upm/owners/")), (refs) => new Map(refs.map((r) => [r.name.slice("refs/upm/owners/".length), r.hash] as const))))
    const owners = new Set(heads.flatMap((h) => [...h.keys()]))
    for (const owner of owners) {
      const distinct = new Set(heads.map((h) => h.get(owner)))
      if (distinct.size > 1 && !conflicts.some((c) => c.release === `@owners/${owner}`)) {
        return { converged: false, detail: `the ownership chain of ${owner} differs between servers and no fork is recorded` }
      }
    }
    return { converged: true, detail: `${names.size} releases everywhere` }
  })

export { Network }
