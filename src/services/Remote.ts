/**
 * Remote: the client's connection to its server, opened lazily and at most once per command. A command that
 * finds everything it needs in the local store never connects (`upm install` with a current lockfile does no
 * network work at all). Independent transfers (an install's packages) borrow up to `connections` further
 * connections, since one session runs its operations one at a time.
 */
import { Context, Duration, Effect, Layer, type Option, Schema, Scope } from "effect"
import { ClientConfig, type InvalidServerAddress, type ServerAddress, type Source } from "./ClientConfig.js"
import { SyncClient, type SyncClientError, type SyncSession } from "./SyncClient.js"

const CONNECT_TIMEOUT = Duration.seconds(10)

export class ServerUnreachable extends Schema.TaggedError<ServerUnreachable>()("ServerUnreachable", {
  address: Schema.String,
  source: Schema.String,
  detail: Schema.String
}) {}

export class Remote extends Context.Tag("upm/Remote")<Remote, {
  /** Where the server is, and where that setting came from. */
  readonly address: Effect.Effect<{ readonly address: ServerAddress; readonly source: Source }, InvalidServerAddress>
  /** The sync session, connected on first use and shared by the rest of the command. */
  readonly session: Effect.Effect<SyncSession, ServerUnreachable | SyncClientError | InvalidServerAddress>
  /**
   * Runs `f` on one of up to `connections` pooled connections (opened on first need, reused, closed with the
   * command), so that independent operations run side by side. A connection whose operation failed is not reused.
   */
  readonly withConnection: <A, E>(
    f: (session: SyncSession) => Effect.Effect<A, E>
  ) => Effect.Effect<A, E | ServerUnreachable | SyncClientError | InvalidServerAddress>
  /** Whether a connection has been opened (for tests and for "did we touch the network?"). */
  readonly connected: Effect.Effect<boolean>
}>() {}

/** Pooled connections of one command (`withConnection`): a few, to overlap round trips without crowding the server. */
export const DEFAULT_CONNECTIONS = 4

/** The remote for one command, given its `--server` flag; the connections close with the layer's scope. */
export const layer = (flag: Option.Option<string>, connections = DEFAULT_CONNECTIONS): Layer.Layer<Remote, never, ClientConfig | SyncClient> =>
  Layer.scoped(Remote, make(flag, connections))

export const make = (
  flag: Option.Option<string>,
  connections = DEFAULT_CONNECTIONS
): Effect.Effect<Remote["Type"], never, ClientConfig | SyncClient | Scope.Scope> =>
  Effect.gen(function* () {
    const config = yield* ClientConfig
    const client = yield* SyncClient
    const scope = yield* Effect.scope
    let opened = false
    const address = config.server(flag)
    const open = Effect.gen(function* () {
      const { address: at, source } = yield* address
      const session = yield* client.connect({ host: at.host, port: at.port }).pipe(
        // A server that accepts but never completes the handshake (stuck, or shutting down) is unreachable too.
        Effect.timeoutFail({
          duration: CONNECT_TIMEOUT,
          onTimeout: () => new ServerUnreachable({ address: at.toString(), source: sourceText[source], detail: `no handshake within ${Duration.format(CONNECT_TIMEOUT)}` })
        }),
        Effect.mapError((e) =>
          e._tag === "ServerUnreachable" ? e :
          e.reason === "Connect" || (e.reason === "Closed" && !opened)
            ? new ServerUnreachable({ address: at.toString(), source: sourceText[source], detail: e.detail })
            : e),
        Scope.extend(scope)
      )
      opened = true
      return session
    })
    const session = yield* Effect.cached(open)
    const idle: Array<SyncSession> = []
    const permits = yield* Effect.makeSemaphore(Math.max(1, connections))
    const withConnection = <A, E>(f: (session: SyncSession) => Effect.Effect<A, E>) =>
      permits.withPermits(1)(Effect.gen(function* () {
        const borrowed = idle.pop() ?? (yield* open)
        const result = yield* f(borrowed)
        idle.push(borrowed)
        return result
      }))
    return Remote.of({ address, session, withConnection, connected: Effect.sync(() => opened) })
  })

const sourceText: Record<Source, string> = {
  flag: "--server",
  env: "UPM_SERVER",
  config: "the config file",
  default: "the default address"
}

/** Whether an error means "the server is not there" (as opposed to a server that answered badly). */
export const isUnreachable = (e: { readonly _tag: string }): e is ServerUnreachable => e._tag === "ServerUnreachable"
