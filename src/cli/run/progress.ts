/**
 * Progress bars on a terminal (cli-progress, loaded only when stderr is a TTY); nothing at all otherwise,
 * so logs and pipes stay clean.
 */
import { Effect, type Scope } from "effect"
import { formatBytes, isTty } from "./client.js"

export interface Bar {
  readonly update: (value: number, total: number, payload?: Record<string, string>) => Effect.Effect<void>
}

const none: Bar = { update: () => Effect.void }

/**
 * An overall bar on stderr for the scope's lifetime; a no-op when stderr is not a terminal. `initial` fills the
 * format's own tokens until the first update (else the first frame shows `{bytes}`).
 */
export const bar = (format: string, initial: Record<string, string> = {}): Effect.Effect<Bar, never, Scope.Scope> =>
  isTty()
    ? Effect.gen(function* () {
      const { default: progress } = yield* Effect.promise(() => import("cli-progress"))
      const b = yield* Effect.acquireRelease(
        Effect.sync(() => {
          const instance = new progress.SingleBar(
            { format, stream: process.stderr, hideCursor: true, clearOnComplete: true, etaBuffer: 20 },
            progress.Presets.shades_classic
          )
          instance.start(1, 0, initial)
          return instance
        }),
        (instance) => Effect.sync(() => instance.stop())
      )
      return {
        update: (value, total, payload) =>
          Effect.sync(() => {
            b.setTotal(Math.max(total, 1))
            b.update(value, payload ?? {})
          })
      } satisfies Bar
    })
    : Effect.succeed(none)

/** Transfer payload for a bar: bytes and rate since `start` (ms, from the Clock). */
export const transferPayload = (bytes: number, elapsedMs: number): Record<string, string> => ({
  bytes: formatBytes(bytes),
  rate: elapsedMs > 0 ? `${formatBytes(Math.round((bytes * 1000) / elapsedMs))}/s` : "-"
})
