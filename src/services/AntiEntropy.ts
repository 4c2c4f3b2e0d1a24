/**
 * Anti-entropy: two servers compare the release sets they hold with a cost proportional to their difference,
 * not to their size (docs/peers.md).
 *
 * The release set is the set of pairs (release `owner/name/v<version>`, tag hash). Each release has a key: the
 * SHA-1 of its name in hex, so releases spread evenly over a 16-ary tree of key prefixes. The digest of a prefix
 * is the SHA-1 of the lines `<release> <hash>\n` of the releases under it, in key order. Three sync-protocol
 * queries expose the tree (SyncServer answers them through `makeQueries`):
 *
 *   ?digest [prefix]   →  !<digest> <count>
 *   ?digests [prefix]  →  !<prefix+c> <digest> <count>   one line per non-empty child c of 0…f
 *   ?refs <prefix>     →  !<release> <hash>              one per release under the prefix (at most MAX_REFS)
 *
 * Ownership chains (`refs/upm/owners/<owner>`) are in the tree too, as entries named `@owners/<owner>`.
 *
 * Two servers holding the same set exchange one `?digest` and its reply (< 100 bytes whatever the size);
 * otherwise `compare` descends only into the children whose digests differ and lists releases at the leaves.
 * `?peers` reports the peer state (PeerStatus) for `upm peers status`.
 */
import { createHash } from "node:crypto"
import { Context, Effect, Either, Option, Schema } from "effect"
import { type ObjectHash, parseHash } from "../domain/ObjectHash.js"
import { type PackageName, parseRelease, Segment, type Version } from "../domain/Package.js"
import { ObjectStore, type StoreError } from "./ObjectStore.js"
import { SyncClientError, type SyncSession } from "./SyncClient.js"

// ---------------------------------------------------------------------------------------------
// The index

export interface IndexEntry {
  /** SHA-1 (hex) of `release`. */
  readonly key: string
  /** `owner/name/v<version>` for a release, `@owners/<owner>` for a namespace's ownership chain (its head). */
  readonly release: string
  readonly hash: ObjectHash
}

/** The releases and ownership chains, sorted by key. */
export type ReleaseIndex = ReadonlyArray<IndexEntry>

export interface Summary {
  readonly digest: string
  readonly count: number
}

/** A prefix is at most 40 lowercase hex digits. */
const PREFIX = /^[0-9a-f]{0,40}$/
const HEX = "0123456789abcdef"

/** Releases at most listed by one `?refs` reply (a reply is at most 64 KiB: ~80 bytes a line). */
export const MAX_REFS = 512
/** `compare` lists releases once a subtree holds at most this many on the remote side. */
export const LEAF = 64

/** Index entries of ownership chains are named `@owners/<owner>` (no release name starts with "@"). */
export const OWNERS_LABEL = "@owners/"
const OWNERS_REFS = "refs/upm/owners/"

export const keyOf = (release: string): string => createHash("sha1").update(release, "utf8").digest("hex")

/** Release refs (`refs/tags/…`) and owner refs (`refs/upm/owners/<owner>`); anything else is skipped. */
export const buildIndex = (refs: ReadonlyArray<{ readonly name: string; readonly hash: ObjectHash }>): ReleaseIndex => {
  const entries: Array<IndexEntry> = []
  for (const ref of refs) {
    if (ref.name.startsWith(OWNERS_REFS)) {
      const owner = ref.name.slice(OWNERS_REFS.length)
      if (!Schema.is(Segment)(owner)) continue
      const label = `${OWNERS_LABEL}${owner}`
      entries.push({ key: keyOf(label), release: label, hash: ref.hash })
      continue
    }
    const parsed = parseRelease(ref.name)
    if (Either.isLeft(parsed)) continue
    const release = `${parsed.right.name}/v${parsed.right.version}`
    entries.push({ key: keyOf(release), release, hash: ref.hash })
  }
  return entries.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
}

/** Every sealed release and every ownership chain head of the store, indexed. */
export const listIndexed = (store: ObjectStore["Type"]) =>
  Effect.map(Effect.all([store.listRefs("refs/tags/"), store.listRefs(OWNERS_REFS)]), ([tags, owners]) => buildIndex([...tags, ...owners]))

export const loadIndex: Effect.Effect<ReleaseIndex, StoreError, ObjectStore> = Effect.flatMap(ObjectStore, listIndexed)

const lowerBound = (index: ReleaseIndex, key: string) => {
  let lo = 0
  let hi = index.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (index[mid]!.key < key) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** The entries whose key starts with `prefix`. */
export const under = (index: ReleaseIndex, prefix: string): ReleaseIndex => {
  if (prefix.length === 0) return index
  const start = lowerBound(index, prefix)
  let end = start
  while (end < index.length && index[end]!.key.startsWith(prefix)) end++
  return index.slice(start, end)
}

export const summarize = (entries: ReleaseIndex): Summary => {
  const h = createHash("sha1")
  for (const e of entries) h.update(`${e.release} ${e.hash}\n`, "utf8")
  return { digest: h.digest("hex"), count: entries.length }
}

export const childSummaries = (index: ReleaseIndex, prefix: string): ReadonlyArray<Summary & { readonly prefix: string }> => {
  const all = under(index, prefix)
  const out: Array<Summary & { readonly prefix: string }> = []
  if (prefix.length >= 40) return out
  for (const c of HEX) {
    const child = under(all, prefix + c)
    if (child.length > 0) out.push({ prefix: prefix + c, ...summarize(child) })
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Server side: the queries

export class DigestQueryError extends Schema.TaggedError<DigestQueryError>()("DigestQueryError", {
  reason: Schema.Literal("BadQuery", "TooMany", "Store"),
  detail: Schema.String
}) {}

/** One line per conflict and per peer; what `?peers` answers and `upm peers status` prints. */
export interface PeerReport {
  readonly name: string
  readonly address: string
  /** "up" after a successful exchange, "down" after a failed one, "unknown" before any. */
  readonly state: "up" | "down" | "unknown"
  /** Clock millis of the last completed anti-entropy round with this peer, if any. */
  readonly lastSync: Option.Option<number>
  /** Releases we hold that the peer lacked at the last round. */
  readonly lag: Option.Option<number>
  /** Releases the peer held that we lacked at the last round (being pulled). */
  readonly behind: Option.Option<number>
  readonly lastError: Option.Option<string>
}

export interface ConflictReport {
  readonly release: string
  /** The hash sealed here, which stays. */
  readonly kept: ObjectHash
  /** The other hash, seen at `peer`. */
  readonly other: ObjectHash
  readonly peer: string
  readonly at: number
}

export class PeerStatus extends Context.Tag("upm/PeerStatus")<PeerStatus, {
  readonly self: string
  readonly peers: Effect.Effect<ReadonlyArray<PeerReport>>
  readonly conflicts: Effect.Effect<ReadonlyArray<ConflictReport>>
}>() {}

const word = (s: string) => s.replace(/\s+/g, "_").slice(0, 200)

/** `?peers`: `self <name>`, then `peer …` and `conflict …` lines (docs/peers.md). */
export const peersReply: Effect.Effect<string> = Effect.flatMap(Effect.serviceOption(PeerStatus), Option.match({
  onNone: () => Effect.succeed(""),
  onSome: (status) =>
    Effect.gen(function* () {
      const peers = yield* status.peers
      const conflicts = yield* status.conflicts
      const opt = (o: Option.Option<number>) => Option.match(o, { onNone: () => "-", onSome: String })
      return [
        `self ${word(status.self)}`,
        ...peers.map((p) =>
          `peer ${word(p.name)} ${word(p.address)} ${p.state} ${opt(p.lastSync)} ${opt(p.lag)} ${opt(p.behind)}${
            Option.match(p.lastError, { onNone: () => "", onSome: (e) => ` ${e.replace(/\s*\n\s*/g, " ")}` })}`),
        ...conflicts.map((c) => `conflict ${c.release} ${c.kept} ${c.other} ${word(c.peer)} ${c.at}`)
      ].join("\n")
    })
}))

export interface PeersReply {
  readonly self: string
  readonly peers: ReadonlyArray<PeerReport>
  readonly conflicts: ReadonlyArray<ConflictReport>
}

/** Reads a `?peers` reply (what `peersReply` writes); lines it does not know are skipped. */
export const parsePeersReply = (text: string): PeersReply => {
  let self = ""
  const peers: Array<PeerReport> = []
  const conflicts: Array<ConflictReport> = []
  const num = (w: string | undefined) => (w === undefined || w === "-" || !/^\d+$/.test(w) ? Option.none<number>() : Option.some(Number(w)))
  for (const line of text.length === 0 ? [] : text.split("\n")) {
    const w = line.split(" ")
    if (w[0] === "self" && w[1] !== undefined) self = w[1]
    else if (w[0] === "peer" && w.length >= 7) {
      const state = w[3] === "up" || w[3] === "down" ? w[3] : "unknown"
      const error = w.slice(7).join(" ")
      peers.push({
        name: w[1]!, address: w[2]!, state, lastSync: num(w[4]), lag: num(w[5]), behind: num(w[6]),
        lastError: error.length > 0 ? Option.some(error) : Option.none()
      })
    } else if (w[0] === "conflict" && w.length === 6) {
      const kept = parseHash(w[2]!)
      const other = parseHash(w[3]!)
      if (Either.isRight(kept) && Either.isRight(other)) {
        conflicts.push({ release: w[1]!, kept: kept.right, other: other.right, peer: w[4]!, at: Number(w[5]) })
      }
    }
  }
  return { self, peers, conflicts }
}

/**
 * The digest queries for one sync session. The index is built at the first digest query and reused for the
 * session (a comparison is a handful of queries in one session; a new session sees new releases).
 */
export const makeQueries = (store: ObjectStore["Type"]) => {
  let index: ReleaseIndex | undefined
  const getIndex = Effect.suspend(() =>
    index !== undefined
      ? Effect.succeed(index)
      : listIndexed(store).pipe(
        Effect.tap((i) => Effect.sync(() => { index = i })),
        Effect.mapError((e) => new DigestQueryError({ reason: "Store", detail: `storage failed (${e._tag})` }))
      ))
  const prefixOf = (words: ReadonlyArray<string>, required: boolean) => {
    const p = words[0] ?? ""
    if (words.length > 1 || !PREFIX.test(p) || (required && p.length === 0 && words.length === 0)) {
      return Effect.fail(new DigestQueryError({ reason: "BadQuery", detail: `bad key prefix ${JSON.stringify(words.join(" "))}: up to 40 hex digits` }))
    }
    return Effect.succeed(p)
  }
  /** None when `command` is not one of these queries. */
  const answer = (command: string, words: ReadonlyArray<string>): Option.Option<Effect.Effect<string, DigestQueryError>> => {
    switch (command) {
      case "digest":
        return Option.some(Effect.gen(function* () {
          const prefix = yield* prefixOf(words, false)
          const s = summarize(under(yield* getIndex, prefix))
          return `${s.digest} ${s.count}`
        }))
      case "digests":
        return Option.some(Effect.gen(function* () {
          const prefix = yield* prefixOf(words, false)
          return childSummaries(yield* getIndex, prefix).map((c) => `${c.prefix} ${c.digest} ${c.count}`).join("\n")
        }))
      case "refs":
        return Option.some(Effect.gen(function* () {
          const prefix = yield* prefixOf(words, false)
          const entries = under(yield* getIndex, prefix)
          if (entries.length > MAX_REFS) {
            return yield* Effect.fail(new DigestQueryError({
              reason: "TooMany", detail: `${entries.length} releases under "${prefix}": more than ${MAX_REFS}, narrow with ?digests`
            }))
          }
          return entries.map((e) => `${e.release} ${e.hash}`).join("\n")
        }))
      case "peers":
        return Option.some(peersReply)
      default:
        return Option.none()
    }
  }
  return { answer }
}

// ---------------------------------------------------------------------------------------------
// Client side: comparing with a peer

export interface Difference {
  /** Releases the remote holds and we lack. */
  readonly missing: ReadonlyArray<{ readonly name: PackageName; readonly version: Version; readonly hash: ObjectHash }>
  /** Releases both hold with different hashes: `local` stays. */
  readonly conflicts: ReadonlyArray<{ readonly release: string; readonly local: ObjectHash; readonly remote: ObjectHash }>
  /** Ownership chains whose heads differ (or that we lack): `local` undefined when we have none. */
  readonly owners: ReadonlyArray<{ readonly owner: string; readonly remote: ObjectHash; readonly local: ObjectHash | undefined }>
  /** How many releases we hold that the remote lacks. */
  readonly lag: number
  /** Queries sent. */
  readonly queries: number
}

const protocolError = (detail: string) => new SyncClientError({ reason: "Protocol", detail })

const parseSummary = (text: string): Either.Either<Summary, string> => {
  const m = /^([0-9a-f]{40}) (\d+)$/.exec(text.trim())
  return m === null ? Either.left(`malformed digest reply ${JSON.stringify(text.slice(0, 100))}`) : Either.right({ digest: m[1]!, count: Number(m[2]) })
}

/**
 * Compares `local` with the remote end of `session` by descending the digest tree where they differ.
 * Bytes exchanged: one `?digest` round trip when equal; otherwise about (16 lines per level + LEAF lines) per
 * differing leaf.
 */
export const compare = (session: SyncSession, local: ReleaseIndex) =>
  Effect.gen(function* () {
    let queries = 0
    const ask = (text: string) => {
      queries++
      return session.query(text)
    }
    const missing: Array<Difference["missing"][number]> = []
    const conflicts: Array<Difference["conflicts"][number]> = []
    const owners: Array<Difference["owners"][number]> = []
    let lag = 0
    const fail = (detail: string) => Effect.fail(protocolError(detail))

    const leaf = (prefix: string, mine: ReleaseIndex): Effect.Effect<void, SyncClientError> =>
      Effect.gen(function* () {
        const text = yield* ask(`refs ${prefix}`)
        const theirs = new Map<string, ObjectHash>()
        for (const line of text.length === 0 ? [] : text.split("\n")) {
          const [release, hash, extra] = line.split(" ")
          const h = parseHash(hash ?? "")
          if (release !== undefined && release.startsWith(OWNERS_LABEL)) {
            const owner = release.slice(OWNERS_LABEL.length)
            if (extra !== undefined || Either.isLeft(h) || !Schema.is(Segment)(owner) || !keyOf(release).startsWith(prefix)) {
              return yield* fail(`malformed refs line ${JSON.stringify(line.slice(0, 200))}`)
            }
            theirs.set(release, h.right)
            const here = mine.find((e) => e.release === release)
            if (here === undefined || here.hash !== h.right) owners.push({ owner, remote: h.right, local: here?.hash })
            continue
          }
          const r = parseRelease(release ?? "")
          if (extra !== undefined || Either.isLeft(h) || Either.isLeft(r) || !keyOf(release!).startsWith(prefix)) {
            return yield* fail(`malformed refs line ${JSON.stringify(line.slice(0, 200))}`)
          }
          theirs.set(release!, h.right)
          const here = mine.find((e) => e.release === release)
          if (here === undefined) missing.push({ name: r.right.name, version: r.right.version, hash: h.right })
          else if (here.hash !== h.right) conflicts.push({ release: release!, local: here.hash, remote: h.right })
        }
        for (const e of mine) if (!theirs.has(e.release) && !e.release.startsWith(OWNERS_LABEL)) lag++
      })

    const walk = (prefix: string, remote: Summary, mine: ReleaseIndex): Effect.Effect<void, SyncClientError> =>
      Effect.gen(function* () {
        const here = summarize(mine)
        if (here.digest === remote.digest && here.count === remote.count) return
        if (remote.count === 0) {
          lag += mine.filter((e) => !e.release.startsWith(OWNERS_LABEL)).length
          return
        }
        if (remote.count <= LEAF || prefix.length >= 40) return yield* leaf(prefix, mine)
        const text = yield* ask(prefix.length === 0 ? "digests" : `digests ${prefix}`)
        const kids = new Map<string, Summary>()
        for (const line of text.length === 0 ? [] : text.split("\n")) {
          const m = /^([0-9a-f]{1,40}) ([0-9a-f]{40}) (\d+)$/.exec(line)
          if (m === null || m[1]!.length !== prefix.length + 1 || !m[1]!.startsWith(prefix)) {
            return yield* fail(`malformed digests line ${JSON.stringify(line.slice(0, 200))}`)
          }
          kids.set(m[1]!, { digest: m[2]!, count: Number(m[3]) })
        }
        for (const c of HEX) {
          const child = prefix + c
          yield* walk(child, kids.get(child) ?? { digest: "", count: 0 }, under(mine, child))
        }
      })

    const root = yield* Effect.flatMap(ask("digest"), (text) =>
      Either.match(parseSummary(text), { onLeft: fail, onRight: Effect.succeed }))
    yield* walk("", root, local)
    return { missing, conflicts, owners, lag, queries } satisfies Difference
  })
