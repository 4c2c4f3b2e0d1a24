/**
 * The dependency resolver: from the root requirements (a project's `upm.json` dependencies and the command
 * line) to one exact version per package and compatibility class, over any `Source` of versions and manifests.
 *
 * Rules (Cargo's, which suit immutable semver releases):
 * - **Highest satisfying**: each requirement takes the highest version its range admits (prereleases only when
 *   the range names one), except that a version already chosen that satisfies it is reused.
 * - **One copy per compatible range**: versions fall into compatibility classes (`1.x.y` → `1`, `0.3.y` → `0.3`,
 *   `0.0.7` → `0.0.7`). At most one version per package and class is chosen; `^1.2` and `^1.4` share one copy,
 *   `^1` and `^2` get one each (the installer nests the second under the package that needs it).
 * - **Backtracking**: when a requirement cannot be met (no version in range, or its class already holds another
 *   version), the resolver goes back to the latest choice that has alternatives, in order. This is complete: if
 *   any assignment satisfies every requirement, it is found (bounded by `maxSteps`). Failing that, the error is
 *   the first conflict met on the all-highest path, explained with both requirement paths from the root.
 * - **Cycles** (a → b → a) are legal in a flat install; they are resolved and reported in `cycles`.
 * - **Preferences** (the lockfile's pins) are tried first, so an install with a lockfile changes nothing that
 *   still satisfies its requirements.
 *
 * Resolution is deterministic: the same source and requirements give the same result.
 */
import { Chunk, Effect, HashMap, Option, Schema } from "effect"
import semver from "semver"
import { PackageName, type Range, Version } from "../domain/Package.js"

// ---------------------------------------------------------------------------------------------
// Errors

const Step = Schema.Struct({ name: Schema.String, version: Schema.optional(Schema.String) })
/** A path from the root: each step a package and, for chosen packages, the version. */
const Path = Schema.Array(Step)
export type ResolvePath = typeof Path.Type

export class PackageNotFound extends Schema.TaggedError<PackageNotFound>()("PackageNotFound", {
  name: Schema.String,
  /** Who asked for it. */
  path: Path,
  /** Names that look like it (filled in by the caller, who can search). */
  suggestions: Schema.optionalWith(Schema.Array(Schema.String), { default: () => [] })
}) {}

export class NoMatchingVersion extends Schema.TaggedError<NoMatchingVersion>()("NoMatchingVersion", {
  name: Schema.String,
  range: Schema.String,
  path: Path,
  /** Every version that exists, lowest first. */
  available: Schema.Array(Schema.String)
}) {}

const Requirement = Schema.Struct({ path: Path, range: Schema.String })

export class DependencyConflict extends Schema.TaggedError<DependencyConflict>()("DependencyConflict", {
  name: Schema.String,
  /** The version already chosen in the contested compatibility class, and who required it. */
  chosen: Schema.String,
  first: Requirement,
  /** The requirement it cannot satisfy. */
  second: Requirement
}) {}

export class ResolutionTooComplex extends Schema.TaggedError<ResolutionTooComplex>()("ResolutionTooComplex", {
  steps: Schema.Number,
  /** The first conflict met, if any: usually the one to fix. */
  detail: Schema.String
}) {}

export type ResolveError = PackageNotFound | NoMatchingVersion | DependencyConflict | ResolutionTooComplex

/** Human text for a path: `(root) → alice/app@1.0.0 → bob/x@2.1.0`. */
export const formatPath = (path: ResolvePath): string =>
  ["(root)", ...path.map((s) => (s.version === undefined ? s.name : `${s.name}@${s.version}`))].join(" → ")

// ---------------------------------------------------------------------------------------------
// The interface it resolves over

/**
 * Where versions and manifests come from: the server, the local store, a lockfile, or a fake in tests.
 * `versions` returns every published version (empty when the package does not exist); `dependencies` the
 * dependency ranges of one release's manifest.
 */
export interface Source<E, R = never> {
  readonly versions: (name: PackageName) => Effect.Effect<ReadonlyArray<Version>, E, R>
  readonly dependencies: (
    name: PackageName,
    version: Version
  ) => Effect.Effect<Readonly<Record<string, Range>>, E, R>
}

export interface RootRequirement {
  readonly name: PackageName
  readonly range: Range
}

export interface ResolveOptions {
  /** Versions to try first, per package (the lockfile's pins). */
  readonly prefer?: ReadonlyMap<PackageName, ReadonlyArray<Version>>
  /** Bound on the number of versions tried, backtracking included. */
  readonly maxSteps?: number
}

export interface ResolvedPackage {
  readonly name: PackageName
  readonly version: Version
  /** The package's dependencies, each with the exact version it resolved to. */
  readonly dependencies: ReadonlyMap<PackageName, Version>
}

export interface Resolution {
  /** The root's requirements, each with the exact version it resolved to. */
  readonly roots: ReadonlyMap<PackageName, Version>
  /** Every chosen package, sorted by name then version. */
  readonly packages: ReadonlyArray<ResolvedPackage>
  /** Dependency cycles among the chosen packages, each as a list of `name@version`, smallest first. */
  readonly cycles: ReadonlyArray<ReadonlyArray<string>>
}

// ---------------------------------------------------------------------------------------------
// Semver helpers

/** The compatibility class of a version: `1` for 1.x.y, `0.3` for 0.3.y, `0.0.7` for 0.0.7. */
export const compatClass = (version: string): string => {
  const v = semver.parse(version)
  if (v === null) return version
  if (v.major > 0) return `${v.major}`
  if (v.minor > 0) return `0.${v.minor}`
  return `0.0.${v.patch}`
}

export const satisfies = (version: string, range: string): boolean => semver.satisfies(version, range)

const byVersionDesc = (a: string, b: string) => semver.rcompare(a, b)

// ---------------------------------------------------------------------------------------------
// The search

/** A chosen package version: its key is `name@version`. */
interface Node {
  readonly name: PackageName
  readonly version: Version
  /** How the resolver first got here: the path to this node, itself included. */
  readonly path: ResolvePath
  /** The range of the requirement that chose it. */
  readonly range: string
}

interface Pending {
  /** Who requires it: a node key, or "" for the root. */
  readonly from: string
  readonly fromPath: ResolvePath
  readonly name: PackageName
  readonly range: Range
}

interface State {
  /** `name#class` → node. */
  readonly active: HashMap.HashMap<string, Node>
  /** `from` → (dependency name → chosen version). */
  readonly edges: HashMap.HashMap<string, HashMap.HashMap<PackageName, Version>>
  readonly queue: Chunk.Chunk<Pending>
}

type Failure = NoMatchingVersion | DependencyConflict

const nodeKey = (name: string, version: string) => `${name}@${version}`
const classKey = (name: string, version: string) => `${name}#${compatClass(version)}`

const addEdge = (state: State, from: string, name: PackageName, version: Version): State["edges"] =>
  HashMap.modifyAt(state.edges, from, (m) =>
    Option.some(HashMap.set(Option.getOrElse(m, () => HashMap.empty<PackageName, Version>()), name, version)))

const sortedRequirements = (deps: Readonly<Record<string, Range>>): Array<[PackageName, Range]> =>
  Object.entries(deps)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, range]) => [PackageName.make(name), range])

export const resolve = <E, R>(
  source: Source<E, R>,
  roots: ReadonlyArray<RootRequirement>,
  options: ResolveOptions = {}
): Effect.Effect<Resolution, E | ResolveError, R> =>
  Effect.gen(function* () {
    const maxSteps = options.maxSteps ?? 20_000
    // Caches for this resolution only: each name and release is asked for once.
    const versionCache = new Map<string, ReadonlyArray<Version>>()
    const depsCache = new Map<string, ReadonlyArray<[PackageName, Range]>>()
    let steps = 0
    let firstFailure: Failure | undefined

    const versionsOf = (name: PackageName, fromPath: ResolvePath) =>
      Effect.gen(function* () {
        const cached = versionCache.get(name)
        if (cached !== undefined) return cached
        const all = [...(yield* source.versions(name))].sort(byVersionDesc)
        if (all.length === 0) return yield* new PackageNotFound({ name, path: fromPath, suggestions: [] })
        versionCache.set(name, all)
        return all as ReadonlyArray<Version>
      })

    const dependenciesOf = (name: PackageName, version: Version) =>
      Effect.gen(function* () {
        const key = nodeKey(name, version)
        const cached = depsCache.get(key)
        if (cached !== undefined) return cached
        const deps = sortedRequirements(yield* source.dependencies(name, version))
        depsCache.set(key, deps)
        return deps
      })

    /** The candidates for a requirement, preferred first, then highest first. */
    const ordered = (name: PackageName, matching: ReadonlyArray<Version>): ReadonlyArray<Version> => {
      const preferred = (options.prefer?.get(name) ?? []).filter((v) => matching.includes(v))
      return [...preferred, ...matching.filter((v) => !preferred.includes(v))]
    }

    const fail = (failure: Failure): Effect.Effect<Option.Option<State>> => {
      if (firstFailure === undefined) firstFailure = failure
      return Effect.succeed(Option.none())
    }

    // Depth-first over choices; the queue holds requirements not yet met, in breadth-first order.
    const search = (state: State): Effect.Effect<Option.Option<State>, E | PackageNotFound | ResolutionTooComplex, R> =>
      Effect.gen(function* () {
        let current = state
        while (true) {
          const next = Chunk.head(current.queue)
          if (Option.isNone(next)) return Option.some(current)
          const req = next.value
          const rest = Chunk.drop(current.queue, 1)
          // Reuse a chosen version that satisfies the range: the highest one.
          const reusable = [...HashMap.values(current.active)]
            .filter((n) => n.name === req.name && satisfies(n.version, req.range))
            .sort((a, b) => byVersionDesc(a.version, b.version))[0]
          if (reusable !== undefined) {
            current = { ...current, queue: rest, edges: addEdge(current, req.from, req.name, reusable.version) }
            continue
          }
          const all = yield* versionsOf(req.name, req.fromPath)
          const matching = all.filter((v) => satisfies(v, req.range))
          if (matching.length === 0) {
            return yield* fail(
              new NoMatchingVersion({
                name: req.name,
                range: req.range,
                path: req.fromPath,
                available: [...all].reverse()
              })
            )
          }
          const candidates = ordered(req.name, matching).filter((v) => !HashMap.has(current.active, classKey(req.name, v)))
          if (candidates.length === 0) {
            // Every matching version's class already holds another version: name the one in the highest class.
            const holder = Option.getOrThrow(HashMap.get(current.active, classKey(req.name, matching[0]!)))
            return yield* fail(
              new DependencyConflict({
                name: req.name,
                chosen: holder.version,
                first: { path: holder.path.slice(0, -1), range: holder.range },
                second: { path: req.fromPath, range: req.range }
              })
            )
          }
          for (const version of candidates) {
            steps++
            if (steps > maxSteps) {
              return yield* new ResolutionTooComplex({
                steps: maxSteps,
                detail: firstFailure === undefined ? "" : describeFailure(firstFailure)
              })
            }
            const key = nodeKey(req.name, version)
            const path: ResolvePath = [...req.fromPath, { name: req.name, version }]
            const deps = yield* dependenciesOf(req.name, version)
            const node: Node = { name: req.name, version, path, range: req.range }
            const chosen: State = {
              active: HashMap.set(current.active, classKey(req.name, version), node),
              edges: addEdge(current, req.from, req.name, version),
              queue: Chunk.appendAll(
                rest,
                Chunk.fromIterable(deps.map(([name, range]): Pending => ({ from: key, fromPath: path, name, range })))
              )
            }
            const solved = yield* search(chosen)
            if (Option.isSome(solved)) return solved
          }
          return Option.none()
        }
      })

    const initial: State = {
      active: HashMap.empty(),
      edges: HashMap.empty(),
      queue: Chunk.fromIterable(
        [...roots]
          .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
          .map((r): Pending => ({ from: "", fromPath: [], name: r.name, range: r.range }))
      )
    }
    const solved = yield* search(initial)
    if (Option.isNone(solved)) {
      // Unreachable without a recorded failure: every dead end records one.
      return yield* (firstFailure ?? new ResolutionTooComplex({ steps, detail: "no solution" }))
    }
    return toResolution(solved.value)
  })

const toResolution = (state: State): Resolution => {
  const edgesOf = (from: string): ReadonlyMap<PackageName, Version> =>
    new Map(
      [...Option.getOrElse(HashMap.get(state.edges, from), () => HashMap.empty<PackageName, Version>())]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    )
  const packages = [...HashMap.values(state.active)]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : semver.compare(a.version, b.version)))
    .map((n): ResolvedPackage => ({
      name: n.name,
      version: n.version,
      dependencies: edgesOf(nodeKey(n.name, n.version))
    }))
  return { roots: edgesOf(""), packages, cycles: findCycles(packages) }
}

/** Strongly connected components with more than one node, or a node depending on itself (Tarjan). */
export const findCycles = (packages: ReadonlyArray<ResolvedPackage>): ReadonlyArray<ReadonlyArray<string>> => {
  const graph = new Map(packages.map((p) => [nodeKey(p.name, p.version), [...p.dependencies].map(([n, v]) => nodeKey(n, v))]))
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const onStack = new Set<string>()
  const stack: Array<string> = []
  const cycles: Array<Array<string>> = []
  let counter = 0
  // Iterative Tarjan: a deep chain of dependencies must not overflow the call stack.
  for (const start of [...graph.keys()].sort()) {
    if (index.has(start)) continue
    const work: Array<{ node: string; next: number }> = [{ node: start, next: 0 }]
    index.set(start, counter)
    low.set(start, counter++)
    stack.push(start)
    onStack.add(start)
    while (work.length > 0) {
      const frame = work[work.length - 1]!
      const successors = graph.get(frame.node) ?? []
      if (frame.next < successors.length) {
        const succ = successors[frame.next++]!
        if (!index.has(succ)) {
          index.set(succ, counter)
          low.set(succ, counter++)
          stack.push(succ)
          onStack.add(succ)
          work.push({ node: succ, next: 0 })
        } else if (onStack.has(succ)) {
          low.set(frame.node, Math.min(low.get(frame.node)!, index.get(succ)!))
        }
        continue
      }
      work.pop()
      const parent = work[work.length - 1]
      if (parent !== undefined) low.set(parent.node, Math.min(low.get(parent.node)!, low.get(frame.node)!))
      if (low.get(frame.node) === index.get(frame.node)) {
        const component: Array<string> = []
        let member: string | undefined
        do {
          member = stack.pop()!
          onStack.delete(member)
          component.push(member)
        } while (member !== frame.node)
        const selfLoop = component.length === 1 && (graph.get(frame.node) ?? []).includes(frame.node)
        if (component.length > 1 || selfLoop) cycles.push(component.sort())
      }
    }
  }
  return cycles.sort((a, b) => (a[0]! < b[0]! ? -1 : 1))
}

/** One line (or a few) a user can act on. */
export const describeFailure = (e: ResolveError): string => {
  switch (e._tag) {
    case "PackageNotFound":
      return `package ${e.name} does not exist (required by ${formatPath(e.path)})` +
        (e.suggestions.length > 0 ? `; did you mean ${e.suggestions.join(", ")}?` : "")
    case "NoMatchingVersion":
      return `no version of ${e.name} matches "${e.range}" (required by ${formatPath(e.path)}); ` +
        `versions that exist: ${e.available.length > 0 ? e.available.join(", ") : "none"}`
    case "DependencyConflict":
      return `conflicting requirements for ${e.name}:\n` +
        `  ${formatPath(e.first.path)} requires ${e.name}@${e.first.range} → chose ${e.chosen}\n` +
        `  ${formatPath(e.second.path)} requires ${e.name}@${e.second.range}, which ${e.chosen} does not satisfy\n` +
        `  and no other version satisfies both in the same compatibility class (${compatClass(e.chosen)}.x)`
    case "ResolutionTooComplex":
      return `dependency resolution gave up after ${e.steps} steps` + (e.detail.length > 0 ? `; first problem: ${e.detail}` : "")
  }
}
