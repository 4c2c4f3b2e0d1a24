/**
 * Network: how a server opens connections to other servers (peers, its upstream). One operation,
 * `connect(address)`, gives a scoped byte duplex (the `Transport` SyncClient speaks over; the peer message
 * sender writes message frames on it). Two layers:
 *
 * - `layerTcp`: real TCP (SyncClient.connectTcp: NodeSocket with read backpressure).
 * - `makeSimulation(options)`: an in-memory network for deterministic simulation. Every node gets its own
 *   `Network` (`sim.node(name)`, `sim.layerNode(name)`) and may `listen` with a protocol; connections between
 *   nodes have latency (per connection and per chunk, so messages of different connections overtake each
 *   other: reordering), may be cut at random (message loss: a connection reset, as TCP shows it), and are cut by
 *   partitions. Time is the Effect Clock (TestClock in tests); all randomness comes from one seeded PRNG held in
 *   a Ref, so a seed reproduces a run exactly.
 *
 * Within one connection bytes arrive in order, as on TCP; what is lost is a connection, never bytes in the
 * middle of one.
 */
import { Context, Duration, Effect, Layer, Mailbox, Option, Queue, Ref, type Scope, Stream } from "effect"
import { ConnectionError, type Protocol } from "./Connection.js"
import { SYNC_MAGIC } from "./Listener.js"
import { connectTcp, type SyncAddress, type Transport } from "./SyncClient.js"

export type Address = SyncAddress

export class Network extends Context.Tag("upm/Network")<Network, {
  /** Opens a connection; it closes with the scope. */
  readonly connect: (address: Address) => Effect.Effect<Transport, ConnectionError, Scope.Scope>
}>() {}

/** Real TCP. */
export const layerTcp: Layer.Layer<Network> = Layer.succeed(Network, Network.of({ connect: connectTcp }))

/** `host:port` → Address (IPv6 in brackets: `[::1]:4822`). */
export const parseAddress = (text: string): Option.Option<Address> => {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]{1,253})):(\d{1,5})$/.exec(text.trim())
  if (m === null) return Option.none()
  const port = Number(m[3])
  if (!Number.isInteger(port) || port < 0 || port > 65535) return Option.none()
  return Option.some({ host: m[1] ?? m[2] ?? "", port })
}

export const formatAddress = (a: Address): string => (a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`)

// ---------------------------------------------------------------------------------------------
// Seeded randomness

/** mulberry32: a small, fast 32-bit PRNG; its whole state is one number, kept in a Ref. */
export const nextRandom = (state: number): readonly [number, number] => {
  const s = (state + 0x6d2b79f5) | 0
  let t = s
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return [((t ^ (t >>> 14)) >>> 0) / 4294967296, s] as const
}

export interface Rng {
  /** Uniform in [0, 1). */
  readonly next: Effect.Effect<number>
  /** Uniform integer in [0, n). */
  readonly int: (n: number) => Effect.Effect<number>
  readonly chance: (p: number) => Effect.Effect<boolean>
}

export const makeRng = (seed: number): Effect.Effect<Rng> =>
  Effect.map(Ref.make(seed | 0), (ref) => {
    const next = Ref.modify(ref, nextRandom)
    return {
      next,
      int: (n) => Effect.map(next, (x) => Math.floor(x * n)),
      chance: (p) => (p <= 0 ? Effect.succeed(false) : Effect.map(next, (x) => x < p))
    }
  })

// ---------------------------------------------------------------------------------------------
// The simulated network

export interface SimFaults {
  /** One-way latency of a connection: chosen per connection in [min, max]; each chunk adds up to `jitter`. */
  readonly latencyMin: Duration.DurationInput
  readonly latencyMax: Duration.DurationInput
  readonly jitter: Duration.DurationInput
  /** Probability that a connection attempt fails (a lost SYN, as far as the caller can tell). */
  readonly connectLoss: number
  /** Probability that delivering a chunk resets the connection instead (the chunk is lost). */
  readonly chunkLoss: number
}

export const noFaults: SimFaults = {
  latencyMin: Duration.zero,
  latencyMax: Duration.zero,
  jitter: Duration.zero,
  connectLoss: 0,
  chunkLoss: 0
}

export interface SimStats {
  readonly connections: number
  readonly refused: number
  readonly resets: number
  readonly bytes: number
}

export interface SimNetwork {
  /** The network as node `name` sees it (partitions are decided by the two nodes' names). */
  readonly node: (name: string) => Network["Type"]
  readonly layerNode: (name: string) => Layer.Layer<Network>
  /**
   * Serves connections to `name` (port ignored) with `sync` or `message` by the first bytes, as the Listener
   * does, until the scope closes; closing it cuts every connection the node was serving (a crash).
   */
  readonly listen: (name: string, protocols: { readonly sync: Protocol; readonly message: Protocol }) => Effect.Effect<void, never, Scope.Scope>
  /** Splits the nodes into groups that cannot reach each other (nodes not named form one more group). */
  readonly partition: (groups: ReadonlyArray<ReadonlyArray<string>>) => Effect.Effect<void>
  readonly heal: Effect.Effect<void>
  readonly setFaults: (faults: SimFaults) => Effect.Effect<void>
  readonly rng: Rng
  readonly stats: Effect.Effect<SimStats>
}

interface SimState {
  readonly listeners: Map<string, { readonly sync: Protocol; readonly message: Protocol; readonly scope: Scope.Scope; readonly generation: number }>
  /** node → group number; absent: group -1. */
  readonly groups: Map<string, number>
  faults: SimFaults
  connections: number
  refused: number
  resets: number
  bytes: number
  generation: number
}

const reset = (detail: string) => new ConnectionError({ reason: "Closed", detail })

/** One direction of a connection: writes are queued with their delivery time; a fiber delivers them in order. */
interface Half {
  readonly write: (bytes: Uint8Array) => Effect.Effect<void, ConnectionError>
  readonly end: Effect.Effect<void>
  readonly cut: (detail: string) => Effect.Effect<void>
  /** The reading end is gone: stop delivering, fail later writes (not counted as a reset). */
  readonly discard: Effect.Effect<void>
  readonly input: Stream.Stream<Uint8Array, ConnectionError>
  readonly inbox: Mailbox.ReadonlyMailbox<Uint8Array, ConnectionError>
}

type Wire = { readonly _tag: "Data"; readonly bytes: Uint8Array; readonly at: number } | { readonly _tag: "End"; readonly at: number }

export const makeSimulation = (seed: number, faults: SimFaults = noFaults): Effect.Effect<SimNetwork, never, Scope.Scope> =>
  Effect.gen(function* () {
    const rng = yield* makeRng(seed)
    const simScope = yield* Effect.scope
    const state: SimState = {
      listeners: new Map(), groups: new Map(), faults, connections: 0, refused: 0, resets: 0, bytes: 0, generation: 0
    }
    const reachable = (a: string, b: string) => (state.groups.get(a) ?? -1) === (state.groups.get(b) ?? -1)
    const between = (min: Duration.DurationInput, max: Duration.DurationInput) =>
      Effect.map(rng.next, (x) => {
        const lo = Duration.toMillis(min)
        const hi = Duration.toMillis(max)
        return lo + Math.floor(x * (hi - lo + 1))
      })

    const makeHalf = (from: string, to: string, base: number) =>
      Effect.gen(function* () {
        const inbox = yield* Mailbox.make<Uint8Array, ConnectionError>(64)
        const wire = yield* Queue.bounded<Wire>(64)
        let broken: ConnectionError | undefined
        let last = 0
        const cut = (detail: string) =>
          Effect.suspend(() => {
            if (broken !== undefined) return Effect.void
            broken = reset(detail)
            state.resets++
            // Shutting the wire down ends the delivering fiber (no fiber is left behind per dead connection).
            return Effect.zipRight(inbox.fail(broken), Queue.shutdown(wire))
          })
        const deliverAt = Effect.gen(function* () {
          const now = yield* Effect.clockWith((c) => c.currentTimeMillis)
          const jitter = yield* between(0, state.faults.jitter)
          last = Math.max(last, now + base + jitter)
          return last
        })
        // The delivering fiber belongs to the simulation, not to either end: a crashed server's bytes in flight
        // still arrive (or are cut), like packets already on the wire.
        yield* Effect.gen(function* () {
          for (;;) {
            const item = yield* Queue.take(wire)
            const now = yield* Effect.clockWith((c) => c.currentTimeMillis)
            // No sleep when the chunk is due: each wake-up costs the TestClock a scheduling round.
            if (item.at > now) yield* Effect.sleep(Duration.millis(item.at - now))
            if (broken !== undefined) return
            if (!reachable(from, to)) {
              yield* cut(`connection ${from} → ${to} reset (partition)`)
              return
            }
            if (item._tag === "End") {
              yield* inbox.end
              return
            }
            if (yield* rng.chance(state.faults.chunkLoss)) {
              yield* cut(`connection ${from} → ${to} reset (lost)`)
              return
            }
            state.bytes += item.bytes.length
            yield* inbox.offer(item.bytes)
          }
        }).pipe(Effect.forkIn(simScope))
        const half: Half = {
          write: (bytes) =>
            Effect.suspend(() =>
              broken !== undefined
                ? Effect.fail(broken)
                : Effect.flatMap(deliverAt, (at) => Queue.offer(wire, { _tag: "Data", bytes, at })).pipe(Effect.asVoid)),
          end: Effect.suspend(() =>
            broken !== undefined ? Effect.void : Effect.flatMap(deliverAt, (at) => Queue.offer(wire, { _tag: "End", at })).pipe(Effect.asVoid)),
          cut,
          discard: Effect.suspend(() => {
            if (broken !== undefined) return Effect.void
            broken = reset("connection closed by the other end")
            return Queue.shutdown(wire)
          }),
          input: Mailbox.toStream(inbox),
          inbox
        }
        return half
      })

    /** Reads the first 4 bytes to choose the protocol, then hands the whole input to it (straight from the inbox). */
    const dispatch = (inbox: Mailbox.ReadonlyMailbox<Uint8Array, ConnectionError>, protocols: { readonly sync: Protocol; readonly message: Protocol }, id: number, from: string) =>
      Stream.unwrap(Effect.gen(function* () {
        const parts: Array<Uint8Array> = []
        let size = 0
        let ended = false
        while (size < 4 && !ended) {
          const next = yield* Effect.either(inbox.take)
          if (next._tag === "Left") {
            if (next.left._tag !== "NoSuchElementException") return Stream.fail(next.left)
            ended = true
          } else {
            parts.push(next.right)
            size += next.right.length
          }
        }
        const prefix = parts.length === 1 ? parts[0]! : new Uint8Array(Buffer.concat(parts))
        const isSync = prefix.length >= 4 && SYNC_MAGIC.every((b, i) => prefix[i] === b)
        const rest: Stream.Stream<Uint8Array, ConnectionError> = ended ? Stream.empty : Mailbox.toStream(inbox)
        const all = prefix.length > 0 ? Stream.concat(Stream.succeed(prefix), rest) : rest
        return (isSync ? protocols.sync : protocols.message)(all, { id, remoteAddress: from })
      }))

    const connect = (from: string) => (address: Address): Effect.Effect<Transport, ConnectionError, Scope.Scope> =>
      Effect.gen(function* () {
        const to = address.host
        const base = yield* between(state.faults.latencyMin, state.faults.latencyMax)
        if (base > 0) yield* Effect.sleep(Duration.millis(base)) // the handshake's trip
        const target = state.listeners.get(to)
        if (target === undefined || !reachable(from, to) || (yield* rng.chance(state.faults.connectLoss))) {
          state.refused++
          return yield* Effect.fail(new ConnectionError({ reason: "Socket", detail: `cannot connect to ${to}: unreachable` }))
        }
        state.connections++
        const id = state.connections
        const toServer = yield* makeHalf(from, to, base)
        const toClient = yield* makeHalf(to, from, base)
        // The server's side runs in the server's scope: a crash (its scope closing) cuts the connection.
        yield* dispatch(toServer.inbox, target, id, from).pipe(
          Stream.runForEach((bytes) => toClient.write(bytes)),
          Effect.matchEffect({
            onFailure: (e) => toClient.cut(e.detail),
            onSuccess: () => toClient.end
          }),
          Effect.onInterrupt(() => toClient.cut(`connection reset: ${to} went down`)),
          // Nobody reads the server's input any more: later writes to it fail instead of filling the queues
          // (and a client closing the connection never waits on a full queue).
          Effect.ensuring(toServer.discard),
          Effect.forkIn(target.scope)
        )
        // The client closing its scope closes the connection: the server reads the end of its input.
        yield* Effect.addFinalizer(() => toServer.end)
        return { input: toClient.input, write: toServer.write } satisfies Transport
      })

    const node = (name: string) => Network.of({ connect: connect(name) })

    return {
      node,
      layerNode: (name) => Layer.succeed(Network, node(name)),
      listen: (name, protocols) =>
        Effect.gen(function* () {
          const scope = yield* Effect.scope
          const generation = ++state.generation
          state.listeners.set(name, { ...protocols, scope, generation })
          yield* Effect.addFinalizer(() =>
            Effect.sync(() => {
              if (state.listeners.get(name)?.generation === generation) state.listeners.delete(name)
            }))
        }),
      partition: (groups) =>
        Effect.sync(() => {
          state.groups.clear()
          groups.forEach((g, i) => g.forEach((n) => state.groups.set(n, i)))
        }),
      heal: Effect.sync(() => state.groups.clear()),
      setFaults: (f) => Effect.sync(() => { state.faults = f }),
      rng,
      stats: Effect.sync(() => ({ connections: state.connections, refused: state.refused, resets: state.resets, bytes: state.bytes }))
    } satisfies SimNetwork
  })
