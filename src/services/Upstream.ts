/**
 * Upstream pull-through cache (lit's upstream proxy, seed 002): a Registry decorator. With an upstream set,
 * `match` for something this server lacks asks the upstream over the sync protocol, pulls the release, verifies
 * it exactly as a publish (Peers.fetchAndSeal: Verifier.verifyTag, authorizeSeal, Registry.seal) and answers
 * from the local store; the client's WANTs are then served locally like any release.
 *
 * - Released content is immutable: a release held here is never re-checked. A `match` is re-asked upstream
 *   only when its last upstream answer (for that name and range, including "nothing") is older than `maxAge`,
 *   so new upstream versions appear.
 * - Single flight: concurrent `match`es for the same name and range share one upstream exchange, and one
 *   release is fetched at most once at a time.
 * - Upstream down: what is held is served (a warning is logged); when nothing is held the client gets
 *   `!error upstream <address> could not be reached: …` (a StoreError whose detail SyncServer shows).
 *   Publishing never touches the upstream.
 *
 * `versions`, `search`, `owners` and `packages` answer from what is held (documented in docs/peers.md).
 */
import { Clock, Deferred, Duration, Effect, Either, Layer, Option, Ref, Schema, type Scope } from "effect"
import type { PackageName, Range } from "../domain/Package.js"
import { releaseTagName } from "../domain/Package.js"
import { HandlerDuration } from "./Handlers.js"
import { formatAddress, Network } from "./Network.js"
import { ObjectStore, StoreError } from "./ObjectStore.js"
import type { Owners } from "./Owners.js"
import { AddressSetting, fetchAndSeal, ReplicationError } from "./Peers.js"
import { Registry, type Release } from "./Registry.js"
import * as SyncClient from "./SyncClient.js"
import type { Verifier } from "./Verifier.js"

export const UpstreamConfig = Schema.Struct({
  /** `host:port` of the upstream server. */
  address: AddressSetting,
  /** How long an upstream `match` answer is trusted before a `match` asks again (new versions). */
  maxAge: Schema.optionalWith(HandlerDuration, { default: () => Duration.minutes(5), exact: true }),
  /** Longest wait for the upstream: connecting, each reply. */
  timeout: Schema.optionalWith(HandlerDuration, { default: () => Duration.seconds(10), exact: true })
})
export type UpstreamConfig = typeof UpstreamConfig.Type

/** Runs `effect` once per key at a time; concurrent callers with the same key share its result. */
export const makeSingleFlight = <A, E>() =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope
    const flights = yield* Ref.make(new Map<string, Deferred.Deferred<A, E>>())
    return (key: string, effect: Effect.Effect<A, E>) =>
      Effect.gen(function* () {
        const mine = yield* Deferred.make<A, E>()
        const current = yield* Ref.modify(flights, (m) => {
          const existing = m.get(key)
          if (existing !== undefined) return [existing, m] as const
          const next = new Map(m)
          next.set(key, mine)
          return [mine, next] as const
        })
        if (current === mine) {
          // The flight runs in the layer's scope: a caller that goes away does not cancel it for the others.
          yield* effect.pipe(
            Effect.exit,
            Effect.flatMap((exit) => Deferred.done(mine, exit)),
            Effect.ensuring(Ref.update(flights, (m) => {
              const next = new Map(m)
              next.delete(key)
              return next
            })),
            Effect.forkIn(scope)
          )
        }
        return yield* Deferred.await(current)
      })
  })

export const make = (config: UpstreamConfig): Effect.Effect<
  Registry["Type"],
  never,
  Registry | ObjectStore | Verifier | Owners | Network | Scope.Scope
> =>
  Effect.gen(function* () {
    const inner = yield* Registry
    const network = yield* Network
    const store = yield* ObjectStore
    const context = yield* Effect.context<Registry | ObjectStore | Verifier | Owners>()
    const client = yield* SyncClient.make(network.connect, { timeout: config.timeout }).pipe(Effect.provideService(ObjectStore, store))
    const where = formatAddress(config.address)
    const checked = yield* Ref.make(new Map<string, number>())
    const refreshFlight = yield* makeSingleFlight<void, ReplicationError>()
    const fetchFlight = yield* makeSingleFlight<void, ReplicationError>()
    const maxAge = Duration.toMillis(config.maxAge)

    const unreachable = (detail: string) => new ReplicationError({ reason: "Unreachable", detail })

    /**
     * Asks the upstream which releases of `name` answer the question (`ask`: the best match, or every version)
     * and fetches, verifies and seals those not held here.
     */
    const refresh = (
      name: PackageName,
      ask: (session: SyncClient.SyncSession) => Effect.Effect<ReadonlyArray<SyncClient.MatchResult>, SyncClient.SyncClientError>
    ) =>
      Effect.scoped(Effect.gen(function* () {
        const session = yield* client.connect(config.address).pipe(
          Effect.timeoutFail({ duration: config.timeout, onTimeout: () => unreachable(`no handshake within ${Duration.format(config.timeout)}`) }),
          Effect.mapError((e) => (e._tag === "ReplicationError" ? e : unreachable(e.detail)))
        )
        const found = yield* ask(session).pipe(Effect.mapError((e) => unreachable(e.detail)))
        const held = new Set((yield* inner.versions(name).pipe(
          Effect.mapError((e) => new ReplicationError({ reason: "Store", detail: e.detail ?? e.op }))
        )).map((r) => r.hash))
        // One session runs one transfer at a time: fetch sequentially.
        for (const r of found.filter((r) => !held.has(r.hash))) {
          const release = { name, version: r.version, hash: r.hash }
          yield* fetchFlight(release.hash, fetchAndSeal(session, release).pipe(Effect.provide(context), Effect.asVoid)).pipe(
            Effect.tap(() => Effect.logInfo("release fetched from upstream").pipe(
              Effect.annotateLogs({ release: releaseTagName(release.name, release.version), tag: release.hash, upstream: where })))
          )
        }
      }))

    /**
     * Answers from what is held, after asking the upstream at most once per `maxAge` per question (released
     * content never changes, so only the question "which versions are there" is ever re-asked).
     */
    const throughUpstream = <A>(
      key: string,
      name: PackageName,
      what: string,
      local: Effect.Effect<A, StoreError>,
      holds: (answer: A) => boolean,
      ask: (session: SyncClient.SyncSession) => Effect.Effect<ReadonlyArray<SyncClient.MatchResult>, SyncClient.SyncClientError>
    ): Effect.Effect<A, StoreError> =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const last = (yield* Ref.get(checked)).get(key)
        if (last !== undefined && now - last < maxAge) return yield* local
        const result = yield* refreshFlight(key, refresh(name, ask)).pipe(Effect.either)
        if (Either.isRight(result)) {
          yield* Ref.update(checked, (m) => new Map(m).set(key, now))
          return yield* local
        }
        const error = result.left
        const why = error.detail
        if (error.reason !== "Unreachable") {
          // The upstream answered with something we refuse (bad signature, conflict): say so, serve what is held.
          yield* Effect.logWarning("upstream release refused").pipe(Effect.annotateLogs({ upstream: where, reason: error.reason, detail: why }))
          yield* Ref.update(checked, (m) => new Map(m).set(key, now))
          return yield* local
        }
        const held = yield* local
        if (holds(held)) {
          yield* Effect.logWarning("upstream unreachable; serving what is held").pipe(Effect.annotateLogs({ upstream: where, detail: why }))
          return held
        }
        return yield* Effect.fail(new StoreError({
          op: "listRefs",
          detail: `upstream ${where} could not be reached (${why}); nothing held here matches ${what}`,
          cause: null
        }))
      })

    const match = (name: PackageName, range: Range | undefined): Effect.Effect<Option.Option<Release>, StoreError> =>
      throughUpstream(
        `match ${name} ${range ?? ""}`, name, `${name}${range === undefined ? "" : ` ${range}`}`,
        inner.match(name, range), Option.isSome,
        (session) => Effect.map(session.match(name, range), (found) => Option.toArray(found))
      )

    /**
     * Every version: the upstream's versions not held here are fetched (the install path asks `versions`).
     * With the upstream down this answers what is held, even nothing: a publish lists the versions it has
     * and must keep working; `match` is where a client is told the upstream could not be reached.
     */
    const versions = (name: PackageName): Effect.Effect<ReadonlyArray<Release>, StoreError> =>
      throughUpstream(`versions ${name}`, name, name, inner.versions(name), () => true, (session) => session.versions(name))

    return Registry.of({ ...inner, match, versions })
  })

/** Decorates the Registry underneath with the pull-through cache. */
export const layer = (config: UpstreamConfig): Layer.Layer<Registry, never, Registry | ObjectStore | Verifier | Owners | Network> =>
  Layer.scoped(Registry, make(config))
