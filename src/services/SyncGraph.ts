/**
 * Graph walking shared by both ends of the sync protocol: which objects below one that just arrived are still
 * missing from the local store. A child that is already stored is not trusted to be complete (a previous push
 * or pull may have been cut off below it), so stored trees are walked for missing descendants; subtrees found
 * complete are remembered for the rest of the session.
 */
import { Effect } from "effect"
import { children, type GitObject, type ObjectType } from "../domain/GitObject.js"
import type { ObjectHash } from "../domain/ObjectHash.js"
import { missingReachable, ObjectStore } from "./ObjectStore.js"

export interface Needed {
  readonly hash: ObjectHash
  /** The type its parent says it has (a tree entry's mode, a tag's `type`); undefined when unknown. */
  readonly type: ObjectType | undefined
}

export const makeFrontier = Effect.gen(function* () {
  const store = yield* ObjectStore
  const complete = new Set<string>()
  /** The missing objects below `object`: its absent children, and absent descendants of its stored children. */
  const below = (object: GitObject) =>
    Effect.gen(function* () {
      const kids = new Map<ObjectHash, ObjectType>()
      for (const child of children(object)) kids.set(child.hash, child.type)
      if (kids.size === 0) return [] as ReadonlyArray<Needed>
      const absent = new Set(yield* store.missing([...kids.keys()]))
      const needed: Array<Needed> = []
      for (const [hash, type] of kids) {
        if (absent.has(hash)) {
          needed.push({ hash, type })
        } else if (type !== "blob" && !complete.has(hash)) {
          const deep = yield* missingReachable(hash).pipe(Effect.provideService(ObjectStore, store))
          if (deep.length === 0) complete.add(hash)
          for (const h of deep) needed.push({ hash: h, type: undefined })
        }
      }
      return needed as ReadonlyArray<Needed>
    })
  return { below }
})
