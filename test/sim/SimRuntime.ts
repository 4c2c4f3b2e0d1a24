/**
 * A discrete-event runtime for the simulation: a Scheduler that runs every fiber step in one FIFO queue and a
 * Clock whose time only moves when nothing is runnable, straight to the next pending sleep.
 *
 * Why not the TestClock: `TestClock.adjust` must first decide that every fiber is suspended, which it does by
 * polling the status of every supervised fiber with real `setTimeout(0)`s, at every wake-up; a simulated run has
 * thousands of wake-ups (every chunk on the simulated network sleeps for its latency), so a seed cost seconds of
 * waiting. Here quiescence is exact and free: the scheduler's queue is empty. Everything in a simulated run is
 * synchronous Effect code (memory stores, node crypto's sync calls, the in-memory network), so no real I/O is
 * waited for; time advances only in the simulation. Ties (several sleeps due at the same instant) wake in the
 * order they were registered, so a run is a pure function of its seed.
 */
import { Cause, Clock, Duration, Effect, Exit, FiberRef, type Scheduler } from "effect"

interface Timer {
  readonly at: number
  readonly seq: number
  readonly wake: () => void
  cancelled: boolean
}

export class SimulationStuck extends Error {}

export interface SimRunOptions {
  /** Simulated ms after which the run is abandoned (a livelock: timers forever, the program never ends). */
  readonly maxTime?: number
  /** Real fiber steps after which the run is abandoned (a busy loop that never sleeps). */
  readonly maxTasks?: number
}

export interface SimRunStats {
  /** Simulated ms at the end. */
  readonly time: number
  /** Fiber steps run and timers fired. */
  readonly tasks: number
  readonly wakeUps: number
}

/** Runs `effect` to completion on simulated time; rejects if it deadlocks, livelocks or fails. */
export const runSimulated = <A, E>(effect: Effect.Effect<A, E>, options: SimRunOptions = {}): Promise<{ readonly value: A; readonly stats: SimRunStats }> =>
  new Promise((resolve, reject) => {
    const maxTime = options.maxTime ?? 24 * 3600_000
    const maxTasks = options.maxTasks ?? 50_000_000
    let now = 0
    let seq = 0
    let tasks = 0
    let wakeUps = 0
    // A FIFO of runnable steps (array + head index; compacted now and then).
    let queue: Array<Scheduler.Task> = []
    let head = 0
    // Timers: a binary min-heap on (at, seq).
    const heap: Array<Timer> = []
    const less = (a: Timer, b: Timer) => a.at < b.at || (a.at === b.at && a.seq < b.seq)
    const push = (t: Timer) => {
      heap.push(t)
      let i = heap.length - 1
      while (i > 0) {
        const p = (i - 1) >> 1
        if (!less(heap[i]!, heap[p]!)) break
        ;[heap[i], heap[p]] = [heap[p]!, heap[i]!]
        i = p
      }
    }
    const pop = (): Timer | undefined => {
      const top = heap[0]
      const last = heap.pop()
      if (top === undefined || last === undefined || heap.length === 0) return top
      heap[0] = last
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        const r = l + 1
        let m = i
        if (l < heap.length && less(heap[l]!, heap[m]!)) m = l
        if (r < heap.length && less(heap[r]!, heap[m]!)) m = r
        if (m === i) break
        ;[heap[i], heap[m]] = [heap[m]!, heap[i]!]
        i = m
      }
      return top
    }

    let finished = false
    let draining = false
    const scheduler: Scheduler.Scheduler = {
      shouldYield: (fiber) =>
        fiber.currentOpCount > fiber.getFiberRef(FiberRef.currentMaxOpsBeforeYield) ? fiber.getFiberRef(FiberRef.currentSchedulingPriority) : false,
      scheduleTask: (task) => {
        queue.push(task)
        if (!draining) {
          draining = true
          setImmediate(drain)
        }
      }
    }

    const fail = (error: unknown) => {
      finished = true
      reject(error)
    }

    /** Runs steps until none is runnable, then moves time to the next timer; yields to the real loop now and then. */
    function drain() {
      let budget = 20_000
      for (;;) {
        if (finished) {
          draining = false
          return
        }
        if (head < queue.length) {
          const task = queue[head++]!
          tasks++
          task()
          if (head > 4096 && head * 2 > queue.length) {
            queue = queue.slice(head)
            head = 0
          }
          if (tasks > maxTasks) return fail(new SimulationStuck(`more than ${maxTasks} steps at ${now} ms simulated`))
          if (--budget === 0) {
            setImmediate(drain) // let the real event loop breathe (test timeouts, stdout)
            return
          }
          continue
        }
        const timer = pop()
        if (timer === undefined) {
          draining = false
          queue = []
          head = 0
          // Nothing runnable, nothing sleeping: the program waits for something that will never come.
          if (!finished) setImmediate(() => { if (!finished && !draining && heap.length === 0) fail(new SimulationStuck(`deadlock at ${now} ms simulated: every fiber waits and no timer is set`)) })
          return
        }
        if (timer.cancelled) continue
        if (timer.at > maxTime) return fail(new SimulationStuck(`still running after ${maxTime} ms simulated`))
        now = Math.max(now, timer.at)
        wakeUps++
        timer.wake()
      }
    }

    const clock: Clock.Clock = {
      [Clock.ClockTypeId]: Clock.ClockTypeId,
      unsafeCurrentTimeMillis: () => now,
      unsafeCurrentTimeNanos: () => BigInt(now) * 1_000_000n,
      currentTimeMillis: Effect.sync(() => now),
      currentTimeNanos: Effect.sync(() => BigInt(now) * 1_000_000n),
      sleep: (duration: Duration.Duration) =>
        Effect.async<void>((resume) => {
          const timer: Timer = { at: now + Math.max(0, Duration.toMillis(duration)), seq: seq++, wake: () => resume(Effect.void), cancelled: false }
          push(timer)
          return Effect.sync(() => { timer.cancelled = true })
        })
    }

    const fiber = Effect.runFork(Effect.withClock(effect, clock), { scheduler })
    fiber.addObserver((exit) => {
      if (finished) return
      finished = true
      if (Exit.isSuccess(exit)) resolve({ value: exit.value, stats: { time: now, tasks, wakeUps } })
      else reject(new Error(`simulation failed: ${Cause.pretty(exit.cause)}`))
    })
  })
