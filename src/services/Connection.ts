/**
 * The two protocols that share the server's TCP port. The Listener sniffs the first bytes of a connection:
 * `lit?` goes to SyncProtocol, anything else to MessageProtocol. Each protocol is a function from the
 * connection's input bytes (including the sniffed bytes) to its output bytes, so tests drive it without
 * sockets. Layers that implement them capture their own dependencies.
 */
import { Context, Schema, type Stream } from "effect"

export interface ConnectionInfo {
  /** A process-unique connection number, for logs. */
  readonly id: number
  /** `127.0.0.1`, `::1`, …; "memory" for in-memory transports. */
  readonly remoteAddress: string
}

export class ConnectionError extends Schema.TaggedError<ConnectionError>()("ConnectionError", {
  reason: Schema.Literal("Socket", "Protocol", "Limit", "Timeout", "Closed"),
  detail: Schema.String
}) {}

export type Protocol = (
  input: Stream.Stream<Uint8Array, ConnectionError>,
  info: ConnectionInfo
) => Stream.Stream<Uint8Array, ConnectionError>

/** The sync protocol (seed 004): handshake, WANT/SEND/QUERY/REPLY. */
export class SyncProtocol extends Context.Tag("upm/SyncProtocol")<SyncProtocol, { readonly serve: Protocol }>() {}

/** The message protocol (seed 001): `[4-byte LE length][JSON]` frames. */
export class MessageProtocol extends Context.Tag("upm/MessageProtocol")<MessageProtocol, { readonly serve: Protocol }>() {}
