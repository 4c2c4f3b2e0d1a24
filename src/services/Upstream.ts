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

    /** Asks the upstream for the best match and, when it is not held, fetches it. */
    const refresh = (name: PackageName, range: Range | undefined) =>
      Effect.scoped(Effect.gen(function* () {
        const session = yield* client.connect(config.address).pipe(
          Effect.timeoutFail({ duration: config.timeout, onTimeout: () => unreachable(`no handshake within ${Duration.format(config.timeout)}`) }),
          Effect.mapError((e) => (e._tag === "ReplicationError" ? e : unreachable(e.detail)))
        )
        const found = yield* session.match(name, range).pipe(Effect.mapError((e) => unreachable(e.detail)))
        if (Option.isNone(found)) return
        const release = { name, version: found.value.version, hash: found.value.hash }
        yield* fetchFlight(release.hash, fetchAndSeal(session, release).pipe(Effect.provide(context), Effect.asVoid)).pipe(
          Effect.tap(() => Effect.logInfo("release fetched from upstream").pipe(
            Effect.annotateLogs({ release: releaseTagName(release.name, release.version), tag: release.hash, upstream: where })))
        )
      }))

    const match = (name: PackageName, range: Range | undefined): Effect.Effect<Option.Option<Release>, StoreError> =>
      Effect.gen(function* () {
        const local = yield* inner.match(name, range)
        const key = `${name} ${range ?? ""}`
        const now = yield* Clock.currentTimeMillis
        const last = (yield* Ref.get(checked)).get(key)
        if (last !== undefined && now - last < maxAge) return local
        const result = yield* refreshFlight(key, refresh(name, range)).pipe(Effect.either)
        if (Either.isRight(result)) {
          yield* Ref.update(checked, (m) => new Map(m).set(key, now))
          return yield* inner.match(name, range)
        }
        const error = result.left
        const why = error.detail
        if (error.reason !== "Unreachable") {
          // The upstream answered with something we refuse (bad signature, conflict): say so, serve what is held.
          yield* Effect.logWarning("upstream release refused").pipe(Effect.annotateLogs({ upstream: where, reason: error.reason, detail: why }))
          yield* Ref.update(checked, (m) => new Map(m).set(key, now))
          return local
        }
        if (Option.isSome(local)) {
          yield* Effect.logWarning("upstream unreachable; serving what is held").pipe(Effect.annotateLogs({ upstream: where, detail: why }))
          return local
        }
        return yield* Effect.fail(new StoreError({
          op: "listRefs",
          detail: `upstream ${where} could not be reached (${why}); nothing held here matches ${name}${range === undefined ? "" : ` ${range}`}`,
          cause: null
        }))
      })

    return Registry.of({ ...inner, match })
  })

/** Decorates the Registry underneath with the pull-through cache. */
export const layer = (config: UpstreamConfig): Layer.Layer<Registry, never, Registry | ObjectStore | Verifier | Owners | Network> =>
  Layer.scoped(Registry, make(config))
