/**
 * A raw TCP test client for loopback tests: connect, write bytes, wait for bytes, see the close.
 * (Test code: it talks to the real server from outside, like a foreign client would.)
 */
import { Data, Deferred, Effect } from "effect"
import * as Net from "node:net"

export class TcpError extends Data.TaggedError("TcpError")<{ readonly code: string; readonly message: string }> {}

export interface TestConnection {
  readonly socket: Net.Socket
  /** Writes bytes (a string is UTF-8). */
  readonly write: (data: string | Uint8Array) => Effect.Effect<void>
  /** Half-closes our side. */
  readonly end: Effect.Effect<void>
  /** Everything received so far. */
  readonly received: () => Buffer
  /** Waits until at least `n` bytes have arrived (fails if the connection closes first). */
  readonly waitFor: (n: number) => Effect.Effect<Buffer, TcpError>
  /** Waits for the close; everything received. */
  readonly closed: Effect.Effect<Buffer>
}

export const connect = (port: number, options: { readonly localAddress?: string; readonly host?: string } = {}) =>
  Effect.acquireRelease(
    Effect.async<TestConnection, TcpError>((resume) => {
      const socket = Net.connect({
        host: options.host ?? "127.0.0.1",
        port,
        ...(options.localAddress !== undefined ? { localAddress: options.localAddress } : {})
      })
      const parts: Array<Buffer> = []
      let size = 0
      let isClosed = false
      const closed = Deferred.unsafeMake<Buffer>(undefined as never)
      let waiters: Array<() => void> = []
      const wake = () => {
        const ws = waiters
        waiters = []
        ws.forEach((w) => w())
      }
      socket.on("data", (d: Buffer) => {
        parts.push(d)
        size += d.length
        wake()
      })
      socket.on("close", () => {
        isClosed = true
        Deferred.unsafeDone(closed, Effect.succeed(Buffer.concat(parts)))
        wake()
      })
      let connected = false
      socket.on("error", (e: NodeJS.ErrnoException) => {
        if (!connected) resume(Effect.fail(new TcpError({ code: e.code ?? "unknown", message: e.message })))
      })
      socket.once("connect", () => {
        connected = true
        resume(Effect.succeed({
          socket,
          write: (data) => Effect.async<void>((done) => {
            socket.write(data, () => done(Effect.void))
          }),
          end: Effect.sync(() => { socket.end() }),
          received: () => Buffer.concat(parts),
          waitFor: (n) =>
            Effect.async<Buffer, TcpError>((done) => {
              const check = () => {
                if (size >= n) done(Effect.succeed(Buffer.concat(parts)))
                else if (isClosed) {
                  done(Effect.fail(new TcpError({ code: "closed", message: `closed after ${size} of ${n} bytes: ${Buffer.concat(parts).toString("latin1")}` })))
                } else waiters.push(check)
              }
              check()
            }),
          closed: Deferred.await(closed)
        }))
      })
    }),
    (c) => Effect.sync(() => c.socket.destroy())
  )

/** Connects, sends `data`, half-closes, and returns everything received until the server closes. */
export const exchange = (port: number, data: string | Uint8Array, options: { readonly localAddress?: string } = {}) =>
  Effect.scoped(Effect.gen(function* () {
    const c = yield* connect(port, options)
    yield* c.write(data)
    yield* c.end
    return yield* c.closed
  }))

