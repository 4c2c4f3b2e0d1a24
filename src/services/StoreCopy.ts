/**
 * Copies every object and ref from one ObjectStore to another (any two backends), then verifies the copy.
 *
 * - Resumable: objects the target already has are skipped (asked in batches with `missing`), so a copy that was
 *   interrupted, or one into a store that shares history, only moves what is absent.
 * - Safe to interrupt at any point: refs are written last, and each only through `sealRef` (its whole graph is in
 *   the target), so the target never shows a release it cannot serve. A tag the target already holds with other
 *   content is never overwritten: that is a conflict to resolve by hand.
 * - Verified: afterwards every source ref must hold the same hash in the target, and every source object is read
 *   back from the target, which checks its hash.
 */
import { Context, Effect, Option, Schema } from "effect"
import type { ObjectHash } from "../domain/ObjectHash.js"
import { ObjectStore, sealRef, type StoredObject } from "./ObjectStore.js"

export class CopyError extends Schema.TaggedError<CopyError>()("CopyError", {
  reason: Schema.Literal("RefConflict", "IncompleteGraph", "VerifyRefs", "VerifyObjects"),
  detail: Schema.String
}) {}

export type Store = Context.Tag.Service<typeof ObjectStore>

export interface CopyOptions {
  /** Objects asked about with one `missing` call (default 1000). */
  readonly batch?: number
  /** Most bytes of object bodies held in memory before they are written (default 32 MiB). */
  readonly maxBatchBytes?: number
  /** Objects read from the source at once (default 8). */
  readonly concurrency?: number
  /** Called after each batch of objects and each phase, e.g. for a progress bar. */
  readonly onProgress?: (progress: CopyProgress) => Effect.Effect<void>
}

export interface CopyProgress {
  readonly phase: "objects" | "refs" | "verify"
  readonly done: number
  readonly total: number
}

export interface CopyReport {
  readonly objects: { readonly total: number; readonly copied: number; readonly alreadyPresent: number }
  readonly refs: { readonly total: number; readonly written: number; readonly unchanged: number }
  readonly verified: { readonly objects: number; readonly refs: number }
  /** Refs the target has that the source does not (left alone). */
  readonly extraTargetRefs: number
}

const chunks = <A>(items: ReadonlyArray<A>, size: number): Array<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size))
  return out
}

export const copyStore = (from: Store, to: Store, options: CopyOptions = {}) =>
  Effect.gen(function* () {
    const batch = options.batch ?? 1000
    const maxBatchBytes = options.maxBatchBytes ?? 32 * 1024 * 1024
    const concurrency = options.concurrency ?? 8
    const progress = options.onProgress ?? (() => Effect.void)

    // 1. Objects the target lacks, in batches; bodies are flushed with putMany whenever enough bytes are held.
    const all = yield* from.listObjects()
    let copied = 0
    let done = 0
    for (const hashes of chunks(all, batch)) {
      const absent = yield* to.missing(hashes)
      let pending: Array<StoredObject> = []
      let pendingBytes = 0
      for (const part of chunks(absent, concurrency)) {
        const objects = yield* Effect.forEach(part, (hash) => from.get(hash), { concurrency })
        for (const o of objects) {
          pending.push(o)
          pendingBytes += o.body.length
        }
        if (pendingBytes >= maxBatchBytes) {
          yield* to.putMany(pending)
          copied += pending.length
          pending = []
          pendingBytes = 0
        }
      }
      if (pending.length > 0) {
        yield* to.putMany(pending)
        copied += pending.length
      }
      done += hashes.length
      yield* progress({ phase: "objects", done, total: all.length })
    }

    // 2. Refs, each sealed only if its graph is complete in the target. A ref that cannot be sealed does not stop
    // the others; the copy fails at the end naming them.
    const refs = yield* from.listRefs("")
    let written = 0
    let unchanged = 0
    const problems: Array<CopyError> = []
    for (const [i, ref] of refs.entries()) {
      const current = yield* to.readRef(ref.name)
      if (Option.contains(current, ref.hash)) {
        unchanged++
      } else {
        const sealed = yield* sealRef(ref.name, ref.hash, current).pipe(
          Effect.provideService(ObjectStore, to),
          Effect.as(true),
          Effect.catchTags({
            IncompleteGraph: (e) =>
              Effect.as(Effect.sync(() => problems.push(new CopyError({
                reason: "IncompleteGraph",
                detail: `${ref.name} → ${ref.hash}: ${e.missing} reachable object(s) are missing from the source too`
              }))), false),
            RefConflict: (e) =>
              Effect.as(Effect.sync(() => problems.push(new CopyError({
                reason: "RefConflict",
                detail: `${ref.name}: the source has ${ref.hash}, the target ${e.actual ?? "nothing"}` +
                  (e.reason === "Immutable" ? " (a tag never changes once written)" : "")
              }))), false)
          })
        )
        if (sealed) written++
      }
      if ((i + 1) % 100 === 0 || i + 1 === refs.length) {
        yield* progress({ phase: "refs", done: i + 1, total: refs.length })
      }
    }
    if (problems.length > 0) {
      const first = problems[0]!
      return yield* new CopyError({
        reason: first.reason,
        detail: `${problems.length} ref(s) not copied: ${problems.slice(0, 5).map((p) => p.detail).join("; ")}` +
          (problems.length > 5 ? "; …" : "")
      })
    }

    // 3. Verify: the same refs, and every object read back (get checks its hash).
    const targetRefs = new Map((yield* to.listRefs("")).map((r) => [r.name as string, r.hash]))
    const wrong = refs.filter((r) => targetRefs.get(r.name) !== r.hash)
    if (wrong.length > 0) {
      return yield* new CopyError({
        reason: "VerifyRefs",
        detail: `${wrong.length} ref(s) differ in the target, first ${wrong[0]!.name}`
      })
    }
    let verified = 0
    for (const hashes of chunks(all, batch)) {
      const absent = yield* to.missing(hashes)
      if (absent.length > 0) {
        return yield* new CopyError({ reason: "VerifyObjects", detail: `${absent.length} object(s) missing, first ${absent[0]}` })
      }
      yield* Effect.forEach(hashes, (hash: ObjectHash) =>
        to.get(hash).pipe(
          Effect.catchTags({
            CorruptObject: (e) => new CopyError({ reason: "VerifyObjects", detail: `${hash} is corrupt in the target: ${e.detail}` }),
            ObjectNotFound: () => new CopyError({ reason: "VerifyObjects", detail: `${hash} is missing in the target` })
          })
        ), { concurrency, discard: true })
      verified += hashes.length
      yield* progress({ phase: "verify", done: verified, total: all.length })
    }

    return {
      objects: { total: all.length, copied, alreadyPresent: all.length - copied },
      refs: { total: refs.length, written, unchanged },
      verified: { objects: verified, refs: refs.length },
      extraTargetRefs: targetRefs.size - refs.length
    } satisfies CopyReport
  })
