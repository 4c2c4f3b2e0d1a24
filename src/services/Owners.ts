/**
 * Owners: who may sign releases for an owner namespace (the `alice` of `alice/greetings`).
 *
 * Each namespace has a chain of ownership records, stored as git tag objects in the ObjectStore and pointed
 * to by `refs/upm/owners/<owner>` (moved with compare-and-set). A record's message holds the change and the
 * whole resulting state (keys and members) as one line of JSON; its `object` is the previous record, so the
 * chain is an ordinary object graph that syncs like releases do, and every backend can hold it.
 *
 * - **claim by release**: a fresh namespace is claimed by the first valid signer. The record is written when
 *   the release is sealed (never at verify time) and points at the release tag, whose signature is the proof.
 * - **claim** (explicit): a record signed by the claimed key itself, over a genesis blob.
 * - **add-key / remove-key / add-member / remove-member**: signed (SSHSIG, namespace "upm-owners") by a key
 *   the namespace holds at that point. The last key can never be removed, so a namespace is never orphaned;
 *   rotation is add new → remove old.
 * - **preseed**: the operator's file; unsigned, only written for namespaces that have no record yet.
 *
 * Members are other namespaces: their keys may publish releases here, but only the namespace's own keys may
 * change its record (so a record can be checked with the chain alone). See docs/signing.md.
 */
import { FileSystem } from "@effect/platform"
import { Clock, Context, Effect, Either, Layer, Option, ParseResult, Schema } from "effect"
import { decodeTag, encodeTag, encodeTagPayload, hashOf, type Tag } from "../domain/GitObject.js"
import type { ObjectHash } from "../domain/ObjectHash.js"
import { parseRelease, Segment } from "../domain/Package.js"
import {
  fingerprint, formatPublicKey, parsePublicKeyLine, type PublicKey, PublicKeyLine, sameKey
} from "../domain/SshKey.js"
import * as Sshsig from "../domain/Sshsig.js"
import type { KeyError, SigningKey } from "./Keys.js"
import { ObjectStore, RefName, type StoreError } from "./ObjectStore.js"

/** The SSHSIG namespace of ownership changes: a release signature can never pass for one, nor the reverse. */
export const OWNERS_NAMESPACE = "upm-owners"
export const MAX_KEYS = 32
export const MAX_MEMBERS = 256
export const MAX_CHAIN = 10_000
const MAX_RECORD_MESSAGE = 64 * 1024

export class OwnersError extends Schema.TaggedError<OwnersError>()("OwnersError", {
  owner: Schema.String,
  reason: Schema.Literal(
    "Malformed", "Unsigned", "BadSignature", "NotOwner", "Conflict", "Invalid", "NotFound", "Store"
  ),
  detail: Schema.String
}) {
  override get message(): string {
    return `namespace ${this.owner}: ${this.detail}`
  }
}

// ---------------------------------------------------------------------------------------------
// Records

export const Change = Schema.Union(
  Schema.Struct({ op: Schema.Literal("claim"), key: PublicKeyLine }),
  Schema.Struct({ op: Schema.Literal("claim-by-release"), release: Schema.String.pipe(Schema.pattern(/^[0-9a-f]{40}$/)) }),
  Schema.Struct({ op: Schema.Literal("preseed") }),
  Schema.Struct({ op: Schema.Literal("add-key"), key: PublicKeyLine }),
  Schema.Struct({ op: Schema.Literal("remove-key"), key: PublicKeyLine }),
  Schema.Struct({ op: Schema.Literal("add-member"), member: Segment }),
  Schema.Struct({ op: Schema.Literal("remove-member"), member: Segment })
)
export type Change = typeof Change.Type

/** The JSON line in a record's message. `keys` are OpenSSH lines without comment, sorted; `members` sorted. */
export const RecordBody = Schema.Struct({
  "upm-owners": Schema.Literal(1),
  owner: Segment,
  seq: Schema.Int.pipe(Schema.between(0, MAX_CHAIN)),
  change: Change,
  keys: Schema.Array(PublicKeyLine).pipe(Schema.maxItems(MAX_KEYS)),
  members: Schema.Array(Segment).pipe(Schema.maxItems(MAX_MEMBERS))
})
export type RecordBody = typeof RecordBody.Type

export interface OwnerState {
  readonly owner: string
  readonly seq: number
  /** The head record's hash. */
  readonly head: ObjectHash
  readonly keys: ReadonlyArray<string>
  readonly members: ReadonlyArray<string>
}

export type Authorization =
  | { readonly _tag: "Owner"; readonly state: OwnerState }
  | { readonly _tag: "Member"; readonly via: string; readonly state: OwnerState }
  | { readonly _tag: "Fresh" }
  | { readonly _tag: "Denied"; readonly state: OwnerState }

export interface PreseedEntry {
  readonly owner: string
  readonly keys: ReadonlyArray<string>
  readonly members?: ReadonlyArray<string>
}

export const ownersRefName = (owner: string): RefName => RefName.make(`refs/upm/owners/${owner}`)
export const recordTagName = (owner: string, seq: number) => `upm-owners/${owner}/${seq}`
/** The blob every explicit claim or preseed chain starts from. */
export const genesisBlob = (owner: string): Uint8Array => new TextEncoder().encode(`upm-owners ${owner}\n`)

const SERVER_TAGGER = "upm <upm@localhost>"

// ---------------------------------------------------------------------------------------------
// Pure rules

const err = (owner: string, reason: OwnersError["reason"], detail: string) => new OwnersError({ owner, reason, detail })

/** The canonical text of a key line: `type base64`, comment dropped. */
export const canonicalKey = (line: string): Either.Either<string, string> =>
  Either.mapBoth(parsePublicKeyLine(line), { onLeft: (e) => e.detail, onRight: ({ key }) => formatPublicKey(key) })

const hasKey = (keys: ReadonlyArray<string>, key: PublicKey) =>
  keys.some((line) => Either.match(parsePublicKeyLine(line), { onLeft: () => false, onRight: (k) => sameKey(k.key, key) }))

/** The state after `change`, or why it does not apply. `previous` is None only for a first record. */
export const applyChange = (
  owner: string,
  previous: Option.Option<Pick<OwnerState, "keys" | "members">>,
  change: Change,
  preseed?: { readonly keys: ReadonlyArray<string>; readonly members: ReadonlyArray<string> }
): Either.Either<{ readonly keys: ReadonlyArray<string>; readonly members: ReadonlyArray<string> }, OwnersError> => {
  const invalid = (detail: string) => Either.left(err(owner, "Invalid", detail))
  const sorted = (xs: Iterable<string>) => [...new Set(xs)].sort()
  const canon = (line: string) => Either.mapLeft(canonicalKey(line), (d) => err(owner, "Malformed", d))
  const first = Option.isNone(previous)
  if (change.op === "claim" || change.op === "claim-by-release" || change.op === "preseed") {
    if (change.op === "preseed") {
      if (preseed === undefined) return invalid("a preseed record needs its keys")
      if (!first) return invalid("preseed only applies to a namespace without a record")
      if (preseed.keys.length === 0) return invalid("a preseeded namespace needs at least one key")
      return Either.all(preseed.keys.map(canon)).pipe(Either.map((keys) => ({ keys: sorted(keys), members: sorted(preseed.members) })))
    }
    if (!first) return invalid(`namespace ${owner} is already claimed`)
    if (change.op === "claim-by-release") return invalid("a claim by release carries its key in the record")
    return Either.map(canon(change.key), (key) => ({ keys: [key], members: [] }))
  }
  if (Option.isNone(previous)) return invalid(`namespace ${owner} has no owner yet; claim it first`)
  const state = previous.value
  switch (change.op) {
    case "add-key":
      return Either.flatMap(canon(change.key), (key) =>
        state.keys.includes(key) ? invalid("the key is already an owner key")
        : state.keys.length >= MAX_KEYS ? invalid(`a namespace holds at most ${MAX_KEYS} keys`)
        : Either.right({ keys: sorted([...state.keys, key]), members: state.members }))
    case "remove-key":
      return Either.flatMap(canon(change.key), (key) =>
        !state.keys.includes(key) ? invalid("the key is not an owner key")
        : state.keys.length === 1 ? invalid("the last key cannot be removed; add the new key first, then remove this one")
        : Either.right({ keys: state.keys.filter((k) => k !== key), members: state.members }))
    case "add-member":
      return change.member === owner ? invalid("a namespace cannot be its own member")
        : state.members.includes(change.member) ? invalid(`${change.member} is already a member`)
        : state.members.length >= MAX_MEMBERS ? invalid(`a namespace has at most ${MAX_MEMBERS} members`)
        : Either.right({ keys: state.keys, members: sorted([...state.members, change.member]) })
    case "remove-member":
      return !state.members.includes(change.member) ? invalid(`${change.member} is not a member`)
        : Either.right({ keys: state.keys, members: state.members.filter((m) => m !== change.member) })
  }
}

const summary = (body: RecordBody): string => {
  const c = body.change
  const what = "key" in c ? `${c.op} ${Either.match(parsePublicKeyLine(c.key), { onLeft: () => "?", onRight: (k) => fingerprint(k.key) })}`
    : "member" in c ? `${c.op} ${c.member}`
    : c.op
  return `upm-owners ${body.owner} #${body.seq}: ${what}`
}

export const encodeRecordMessage = (body: RecordBody): string => `${summary(body)}\n\n${JSON.stringify(body)}\n`

const decodeBody = Schema.decodeUnknownEither(Schema.parseJson(RecordBody), { errors: "all", onExcessProperty: "error" })

export const decodeRecordMessage = (owner: string, message: string): Either.Either<RecordBody, OwnersError> => {
  if (message.length > MAX_RECORD_MESSAGE) return Either.left(err(owner, "Malformed", "the record message is too large"))
  const blank = message.indexOf("\n\n")
  const json = blank < 0 ? "" : message.slice(blank + 2).trim()
  return Either.mapLeft(decodeBody(json), (e) =>
    err(owner, "Malformed", `bad ownership record: ${ParseResult.TreeFormatter.formatErrorSync(e)}`))
}

const taggerAt = (who: string) => Effect.map(Clock.currentTimeMillis, (ms) => `${who} ${Math.floor(ms / 1000)} +0000`)

/**
 * Builds and signs a change record (client side: `upm owner add-key …`). `head` is the namespace's current
 * state as the server reports it (None to claim a fresh namespace explicitly). Send `body` to the server.
 */
export const makeChange = (
  key: SigningKey,
  owner: string,
  head: Option.Option<OwnerState>,
  change: Change,
  tagger: string = `upm <upm@localhost>`
): Effect.Effect<{ readonly body: Uint8Array; readonly hash: ObjectHash }, OwnersError | KeyError> =>
  Effect.gen(function* () {
    const next = yield* applyChange(owner, head, change)
    const seq = Option.match(head, { onNone: () => 0, onSome: (s) => s.seq + 1 })
    const record: RecordBody = { "upm-owners": 1, owner, seq, change, keys: next.keys, members: next.members }
    const unsigned = {
      object: Option.match(head, { onNone: () => hashOf("blob", genesisBlob(owner)), onSome: (s) => s.head }),
      type: Option.isNone(head) ? "blob" as const : "tag" as const,
      tag: recordTagName(owner, seq),
      tagger: yield* taggerAt(tagger),
      message: encodeRecordMessage(record)
    }
    const signature = yield* key.sign(OWNERS_NAMESPACE, encodeTagPayload(unsigned))
    const body = encodeTag({ ...unsigned, signature })
    return { body, hash: hashOf("tag", body) }
  })

// ---------------------------------------------------------------------------------------------
// The contract

export class Owners extends Context.Tag("upm/Owners")<Owners, {
  /** The namespace's current state, None if nobody owns it. */
  readonly get: (owner: string) => Effect.Effect<Option.Option<OwnerState>, OwnersError>
  /** Whether `key` may sign releases for `owner`: its own key, a member's key, a fresh namespace, or denied. */
  readonly authorize: (owner: string, key: PublicKey) => Effect.Effect<Authorization, OwnersError>
  /** The keys that may sign releases for `owner` (own and members'): what the server reports to clients. */
  readonly releaseKeys: (owner: string) => Effect.Effect<ReadonlyArray<string>, OwnersError>
  /**
   * Claims a fresh namespace for the signer of a release tag already in the store. Called when the release
   * is being sealed, never before. If the namespace was claimed meanwhile, succeeds only when the signer is
   * allowed by the existing record.
   */
  readonly claimByRelease: (owner: string, releaseTag: ObjectHash) => Effect.Effect<OwnerState, OwnersError>
  /** Applies a signed change record made by `makeChange` (explicit claim, keys, members). */
  readonly apply: (owner: string, recordBody: Uint8Array) => Effect.Effect<OwnerState, OwnersError>
  /** Writes the operator's seed for namespaces without a record; returns which were written and skipped. */
  readonly preseed: (entries: ReadonlyArray<PreseedEntry>) => Effect.Effect<
    { readonly written: ReadonlyArray<string>; readonly skipped: ReadonlyArray<string> }, OwnersError
  >
  /** Walks the chain from head to genesis, checking every record and signature; oldest first. */
  readonly history: (owner: string) => Effect.Effect<ReadonlyArray<{ readonly hash: ObjectHash; readonly record: RecordBody }>, OwnersError>
  /**
   * Replication (a peer's chain, whose objects are already in the store): moves the namespace to `head` only
   * as a fast-forward, checking every record after the current head as `apply` does (preseed records, which
   * nobody signed, are refused). "Behind": `head` is an ancestor of ours. A fork is a Conflict: ours stays.
   */
  readonly adopt: (owner: string, head: ObjectHash) => Effect.Effect<"Adopted" | "Same" | "Behind", OwnersError>
}>() {}

// ---------------------------------------------------------------------------------------------
// The store-backed layer

export const make = Effect.gen(function* () {
  const store = yield* ObjectStore
  const storeErr = (owner: string) => (e: StoreError | { readonly _tag: string }) =>
    err(owner, "Store", `the object store failed (${e._tag}${"detail" in e && typeof e.detail === "string" ? `: ${e.detail}` : ""})`)

  const readRecord = (owner: string, hash: ObjectHash) =>
    Effect.gen(function* () {
      const stored = yield* store.get(hash).pipe(Effect.mapError(storeErr(owner)))
      if (stored.type !== "tag") return yield* Effect.fail(err(owner, "Malformed", `record ${hash} is a ${stored.type}, not a tag`))
      const tag = yield* Either.mapLeft(decodeTag(stored.body), (e) => err(owner, "Malformed", `record ${hash}: ${e.detail}`))
      const body = yield* decodeRecordMessage(owner, tag.message)
      if (body.owner !== owner || tag.tag !== recordTagName(owner, body.seq)) {
        return yield* Effect.fail(err(owner, "Malformed", `record ${hash} belongs to ${tag.tag}, not namespace ${owner}`))
      }
      return { tag, body, raw: stored.body }
    })

  const get = (owner: string) =>
    Effect.gen(function* () {
      const head = yield* store.readRef(ownersRefName(owner)).pipe(Effect.mapError(storeErr(owner)))
      if (Option.isNone(head)) return Option.none<OwnerState>()
      const { body } = yield* readRecord(owner, head.value)
      return Option.some<OwnerState>({ owner, seq: body.seq, head: head.value, keys: body.keys, members: body.members })
    })

  const authorize = (owner: string, key: PublicKey) =>
    Effect.gen(function* () {
      const state = yield* get(owner)
      if (Option.isNone(state)) return { _tag: "Fresh" } as Authorization
      if (hasKey(state.value.keys, key)) return { _tag: "Owner", state: state.value } as Authorization
      for (const member of state.value.members) {
        const m = yield* get(member)
        if (Option.isSome(m) && hasKey(m.value.keys, key)) return { _tag: "Member", via: member, state: state.value } as Authorization
      }
      return { _tag: "Denied", state: state.value } as Authorization
    })

  const releaseKeys = (owner: string) =>
    Effect.gen(function* () {
      const state = yield* get(owner)
      if (Option.isNone(state)) return []
      const all = [...state.value.keys]
      for (const member of state.value.members) {
        const m = yield* get(member)
        if (Option.isSome(m)) all.push(...m.value.keys)
      }
      return [...new Set(all)]
    })

  /** Stores a record and moves the ref from `expected`; a lost race is a Conflict. */
  const commit = (owner: string, expected: Option.Option<ObjectHash>, body: Uint8Array, extra: ReadonlyArray<Uint8Array>) =>
    Effect.gen(function* () {
      for (const blob of extra) yield* store.put("blob", blob).pipe(Effect.mapError(storeErr(owner)))
      const hash = yield* store.put("tag", body).pipe(Effect.mapError(storeErr(owner)))
      yield* store.setRef(ownersRefName(owner), expected, hash).pipe(Effect.mapError((e) =>
        e._tag === "RefConflict"
          ? err(owner, "Conflict", "the namespace's ownership changed meanwhile; fetch its current state and retry")
          : storeErr(owner)(e)))
      return hash
    })

  /** The signer of a stored release tag in namespace `owner` (checked in the "git" namespace). */
  const releaseSigner = (owner: string, releaseTag: ObjectHash) =>
    Effect.gen(function* () {
      const stored = yield* store.get(releaseTag).pipe(Effect.mapError(storeErr(owner)))
      const tag = stored.type === "tag" ? Either.getOrUndefined(decodeTag(stored.body)) : undefined
      if (tag === undefined) return yield* Effect.fail(err(owner, "Malformed", `${releaseTag} is not a tag`))
      const release = Either.getOrUndefined(parseRelease(tag.tag))
      if (release === undefined || release.name.split("/")[0] !== owner) {
        return yield* Effect.fail(err(owner, "Invalid", `${tag.tag} is not a release in namespace ${owner}`))
      }
      if (tag.signature === undefined) return yield* Effect.fail(err(owner, "Unsigned", `release ${tag.tag} is not signed`))
      const verified = Sshsig.verify(tag.signature, encodeTagPayload(tag), Sshsig.GIT_NAMESPACE)
      if (Either.isLeft(verified)) return yield* Effect.fail(err(owner, "BadSignature", `release ${tag.tag}: ${verified.left.detail}`))
      return verified.right.publicKey
    })

  const claimByRelease = (owner: string, releaseTag: ObjectHash) =>
    Effect.gen(function* () {
      const key = yield* releaseSigner(owner, releaseTag)
      const existing = yield* get(owner)
      if (Option.isSome(existing)) {
        const auth = yield* authorize(owner, key)
        if (auth._tag === "Owner" || auth._tag === "Member") return existing.value
        return yield* Effect.fail(err(owner, "NotOwner", `namespace ${owner} was claimed by another key (${fingerprint(key)} is not among its keys)`))
      }
      const keyLine = formatPublicKey(key)
      const record: RecordBody = {
        "upm-owners": 1, owner, seq: 0, change: { op: "claim-by-release", release: releaseTag }, keys: [keyLine], members: []
      }
      const tag: Tag = {
        object: releaseTag, type: "tag", tag: recordTagName(owner, 0), tagger: yield* taggerAt(SERVER_TAGGER),
        message: encodeRecordMessage(record), signature: undefined
      }
      const head = yield* commit(owner, Option.none(), encodeTag(tag), []).pipe(
        Effect.catchIf((e) => e.reason === "Conflict", () =>
          // Someone claimed it between our read and write: accept only if their record allows this key.
          Effect.flatMap(authorize(owner, key), (auth) =>
            auth._tag === "Owner" || auth._tag === "Member"
              ? Effect.map(get(owner), (s) => Option.match(s, { onNone: () => releaseTag, onSome: (x) => x.head }))
              : Effect.fail(err(owner, "NotOwner", `namespace ${owner} was claimed by another key just now`))))
      )
      return yield* Effect.map(get(owner), Option.getOrElse((): OwnerState => ({ owner, seq: 0, head, keys: [keyLine], members: [] })))
    })

  /** Checks one record against the state before it. Used by `apply` and by `history`. */
  const checkRecord = (
    owner: string,
    previous: Option.Option<OwnerState>,
    hash: ObjectHash,
    tag: Tag,
    body: RecordBody,
    operatorTrusted: boolean
  ) =>
    Effect.gen(function* () {
      const expectedSeq = Option.match(previous, { onNone: () => 0, onSome: (p) => p.seq + 1 })
      if (body.seq !== expectedSeq) return yield* Effect.fail(err(owner, "Conflict", `record ${hash} is #${body.seq}, expected #${expectedSeq}`))
      if (Option.isSome(previous) && (tag.object !== previous.value.head || tag.type !== "tag")) {
        return yield* Effect.fail(err(owner, "Conflict", `record ${hash} does not follow the current head ${previous.value.head}; fetch it and retry`))
      }
      const change = body.change
      if (change.op === "claim-by-release") {
        if (Option.isSome(previous) || tag.object !== change.release || tag.type !== "tag") {
          return yield* Effect.fail(err(owner, "Invalid", "a claim by release must be the first record and point at the release"))
        }
        const key = yield* releaseSigner(owner, tag.object)
        if (body.keys.length !== 1 || body.members.length !== 0 || !hasKey(body.keys, key)) {
          return yield* Effect.fail(err(owner, "Invalid", "a claim by release holds exactly the release signer's key"))
        }
        return
      }
      if (Option.isNone(previous) && (tag.type !== "blob" || tag.object !== hashOf("blob", genesisBlob(owner)))) {
        return yield* Effect.fail(err(owner, "Invalid", "a first record must point at the namespace's genesis blob"))
      }
      const next = yield* applyChange(owner, previous, change, change.op === "preseed" ? body : undefined)
      if (next.keys.join("\n") !== body.keys.join("\n") || next.members.join("\n") !== body.members.join("\n")) {
        return yield* Effect.fail(err(owner, "Invalid", "the record's keys and members are not what its change gives"))
      }
      if (change.op === "preseed") {
        if (!operatorTrusted) return yield* Effect.fail(err(owner, "Unsigned", "preseed records are written by the operator only"))
        return
      }
      if (tag.signature === undefined) return yield* Effect.fail(err(owner, "Unsigned", "ownership changes must be signed by an owner key"))
      const verified = Sshsig.verify(tag.signature, encodeTagPayload(tag), OWNERS_NAMESPACE)
      if (Either.isLeft(verified)) return yield* Effect.fail(err(owner, "BadSignature", verified.left.detail))
      const signer = verified.right.publicKey
      const allowed = change.op === "claim" ? body.keys : Option.match(previous, { onNone: () => [], onSome: (p) => p.keys })
      if (!hasKey(allowed, signer)) {
        return yield* Effect.fail(err(owner, "NotOwner", change.op === "claim"
          ? "an explicit claim must be signed by the claimed key"
          : `${fingerprint(signer)} is not an owner key of ${owner}`))
      }
    })

  const apply = (owner: string, recordBody: Uint8Array) =>
    Effect.gen(function* () {
      if (!Schema.is(Segment)(owner)) return yield* Effect.fail(err(owner, "Invalid", "not a valid owner name"))
      if (recordBody.length > MAX_RECORD_MESSAGE + 16 * 1024) return yield* Effect.fail(err(owner, "Malformed", "the record is too large"))
      const tag = yield* Either.mapLeft(decodeTag(recordBody), (e) => err(owner, "Malformed", e.detail))
      const body = yield* decodeRecordMessage(owner, tag.message)
      if (body.owner !== owner || tag.tag !== recordTagName(owner, body.seq)) {
        return yield* Effect.fail(err(owner, "Malformed", `the record names ${tag.tag}, not namespace ${owner}`))
      }
      if (body.change.op === "claim-by-release" || body.change.op === "preseed") {
        return yield* Effect.fail(err(owner, "Invalid", `${body.change.op} records are written by the server only`))
      }
      if (body.change.op === "add-member") {
        const member = yield* get(body.change.member)
        if (Option.isNone(member)) return yield* Effect.fail(err(owner, "Invalid", `${body.change.member} has no owner yet; it must be claimed before it can be a member`))
      }
      const previous = yield* get(owner)
      const hash = hashOf("tag", recordBody)
      yield* checkRecord(owner, previous, hash, tag, body, false)
      yield* commit(owner, Option.map(previous, (p) => p.head), recordBody, Option.isNone(previous) ? [genesisBlob(owner)] : [])
      return { owner, seq: body.seq, head: hash, keys: body.keys, members: body.members } satisfies OwnerState
    })

  const preseed = (entries: ReadonlyArray<PreseedEntry>) =>
    Effect.gen(function* () {
      const written: Array<string> = []
      const skipped: Array<string> = []
      for (const entry of entries) {
        const owner = entry.owner
        if (!Schema.is(Segment)(owner)) return yield* Effect.fail(err(owner, "Invalid", "not a valid owner name"))
        const change: Change = { op: "preseed" }
        const next = yield* applyChange(owner, Option.none(), change, { keys: entry.keys, members: entry.members ?? [] })
        if (Option.isSome(yield* get(owner))) {
          skipped.push(owner)
          continue
        }
        const record: RecordBody = { "upm-owners": 1, owner, seq: 0, change, keys: next.keys, members: next.members }
        const tag: Tag = {
          object: hashOf("blob", genesisBlob(owner)), type: "blob", tag: recordTagName(owner, 0),
          tagger: yield* taggerAt(SERVER_TAGGER), message: encodeRecordMessage(record), signature: undefined
        }
        const ok = yield* commit(owner, Option.none(), encodeTag(tag), [genesisBlob(owner)]).pipe(
          Effect.as(true),
          Effect.catchIf((e) => e.reason === "Conflict", () => Effect.succeed(false))
        )
        ;(ok ? written : skipped).push(owner)
      }
      return { written, skipped }
    })

  const history = (owner: string) =>
    Effect.gen(function* () {
      const head = yield* store.readRef(ownersRefName(owner)).pipe(Effect.mapError(storeErr(owner)))
      if (Option.isNone(head)) return yield* Effect.fail(err(owner, "NotFound", `namespace ${owner} has no owner`))
      const chain: Array<{ hash: ObjectHash; tag: Tag; body: RecordBody }> = []
      let at: ObjectHash = head.value
      for (;;) {
        if (chain.length >= MAX_CHAIN) return yield* Effect.fail(err(owner, "Malformed", `the chain is longer than ${MAX_CHAIN} records`))
        const { tag, body } = yield* readRecord(owner, at)
        chain.push({ hash: at, tag, body })
        if (body.seq === 0) break
        if (tag.type !== "tag") return yield* Effect.fail(err(owner, "Malformed", `record #${body.seq} does not point at the previous record`))
        at = tag.object
      }
      chain.reverse()
      let previous = Option.none<OwnerState>()
      for (const item of chain) {
        yield* checkRecord(owner, previous, item.hash, item.tag, item.body, true)
        previous = Option.some({ owner, seq: item.body.seq, head: item.hash, keys: item.body.keys, members: item.body.members })
      }
      return chain.map(({ hash, body }) => ({ hash, record: body }))
    })

  const adopt = (owner: string, head: ObjectHash) =>
    Effect.gen(function* () {
      if (!Schema.is(Segment)(owner)) return yield* Effect.fail(err(owner, "Invalid", "not a valid owner name"))
      const current = yield* get(owner)
      if (Option.isSome(current) && current.value.head === head) return "Same" as const
      const fork = (detail: string) => Effect.fail(err(owner, "Conflict", `the peer's chain ${head} forks from ours (${detail}); ours stays`))
      // Walk the new chain back to our head (or its genesis when we have none).
      const newer: Array<{ hash: ObjectHash; tag: Tag; body: RecordBody }> = []
      let at = head
      for (;;) {
        if (Option.isSome(current) && at === current.value.head) break
        if (newer.length >= MAX_CHAIN) return yield* Effect.fail(err(owner, "Malformed", `the chain is longer than ${MAX_CHAIN} records`))
        const { tag, body } = yield* readRecord(owner, at)
        if (Option.isSome(current) && body.seq <= current.value.seq) {
          if (newer.length > 0) return yield* fork(`record #${body.seq} is not ours`)
          // Their head is no newer than ours: behind if it is on our chain, else a fork.
          let mine = current.value.head
          for (let seq = current.value.seq; seq > body.seq; seq--) {
            const r = yield* readRecord(owner, mine)
            if (r.tag.type !== "tag") return yield* fork("our chain ends early")
            mine = r.tag.object
          }
          return mine === at ? "Behind" as const : yield* fork(`their #${body.seq} is not ours`)
        }
        newer.push({ hash: at, tag, body })
        if (body.seq === 0) {
          if (Option.isSome(current)) return yield* fork("it starts anew")
          break
        }
        if (tag.type !== "tag") return yield* Effect.fail(err(owner, "Malformed", `record #${body.seq} does not point at the previous record`))
        at = tag.object
      }
      newer.reverse()
      let previous = current
      for (const item of newer) {
        yield* checkRecord(owner, previous, item.hash, item.tag, item.body, false)
        previous = Option.some({ owner, seq: item.body.seq, head: item.hash, keys: item.body.keys, members: item.body.members })
      }
      yield* store.setRef(ownersRefName(owner), Option.map(current, (c) => c.head), head).pipe(Effect.mapError((e) =>
        e._tag === "RefConflict" ? err(owner, "Conflict", "the namespace's ownership changed meanwhile") : storeErr(owner)(e)))
      return "Adopted" as const
    })

  return Owners.of({ get, authorize, releaseKeys, claimByRelease, apply, preseed, history, adopt })
})

export const layer: Layer.Layer<Owners, never, ObjectStore> = Layer.effect(Owners, make)

// ---------------------------------------------------------------------------------------------
// The operator's preseed file

/**
 * Either JSON — `{ "owners": { "alice": { "keys": ["ssh-ed25519 AAAA…"], "members": [] } } }` — or lines in
 * git's allowed-signers style, `alice ssh-ed25519 AAAA… [comment]` (several lines per owner add keys).
 */
export const PreseedJson = Schema.Struct({
  owners: Schema.Record({
    key: Segment,
    value: Schema.Struct({
      keys: Schema.Array(PublicKeyLine).pipe(Schema.minItems(1), Schema.maxItems(MAX_KEYS)),
      members: Schema.optional(Schema.Array(Segment).pipe(Schema.maxItems(MAX_MEMBERS)))
    })
  })
})

export class PreseedFileError extends Schema.TaggedError<PreseedFileError>()("PreseedFileError", {
  file: Schema.String,
  detail: Schema.String
}) {}

export const parsePreseed = (file: string, text: string): Either.Either<ReadonlyArray<PreseedEntry>, PreseedFileError> => {
  if (text.length > 4 * 1024 * 1024) return Either.left(new PreseedFileError({ file, detail: "the file is larger than 4 MiB" }))
  if (text.trimStart().startsWith("{")) {
    return Either.mapBoth(Schema.decodeUnknownEither(Schema.parseJson(PreseedJson), { errors: "all", onExcessProperty: "error" })(text), {
      onLeft: (e) => new PreseedFileError({ file, detail: ParseResult.TreeFormatter.formatErrorSync(e) }),
      onRight: (json) => Object.entries(json.owners).map(([owner, v]) => ({ owner, keys: v.keys, members: v.members ?? [] }))
    })
  }
  const byOwner = new Map<string, Array<string>>()
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? "").trim()
    if (line === "" || line.startsWith("#")) continue
    const space = line.search(/\s/)
    const owner = space < 0 ? line : line.slice(0, space)
    const key = space < 0 ? "" : line.slice(space + 1)
    if (!Schema.is(Segment)(owner)) return Either.left(new PreseedFileError({ file, detail: `line ${i + 1}: "${owner}" is not an owner name` }))
    const parsed = parsePublicKeyLine(key)
    if (Either.isLeft(parsed)) return Either.left(new PreseedFileError({ file, detail: `line ${i + 1}: ${parsed.left.detail}` }))
    byOwner.set(owner, [...(byOwner.get(owner) ?? []), key])
  }
  return Either.right([...byOwner].map(([owner, keys]) => ({ owner, keys, members: [] })))
}

/** Reads the operator's file and preseeds from it (server start-up). */
export const preseedFromFile = (file: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(file).pipe(Effect.mapError((e) => new PreseedFileError({ file, detail: e.message })))
    const entries = yield* parsePreseed(file, text)
    return yield* Effect.flatMap(Owners, (o) => o.preseed(entries))
  })
