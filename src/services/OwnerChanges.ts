/**
 * OwnerChanges: how a namespace's ownership (keys and members, src/services/Owners.ts) is read and changed over
 * the sync protocol (version 2 queries; docs/protocol.md):
 *
 *   ?owner <owner>\n\n                        →  !head <hash> <seq>\nkey <line>…\nmember <ns>…\n\n   (empty: unclaimed)
 *   ?owner-change <owner> <base64 record>\n\n →  the new state, same format, once the record is applied
 *
 * A change is one signed record (a small git tag object, SSHSIG namespace "upm-owners") built by the client with
 * `Owners.makeChange` against the head it read; the server checks it with `Owners.apply` (signature by a key the
 * namespace holds now, the record follows the current head, the state it states is what the change gives) and
 * moves `refs/upm/owners/<owner>` by compare-and-set. A stale head (someone changed the namespace meanwhile) is
 * a Conflict. A refused change ends the session with `!error owners <Reason>: <detail>`, which the client turns
 * back into the OwnersError it was.
 *
 * The state a client reads is only used to build the next record: a server that lied about it could not make
 * the client's signature count for anything but the change the client asked for on the real chain (the record
 * names its previous record by hash, and `Owners.history` re-verifies every record).
 */
import { Effect, Either, Option, Schema } from "effect"
import { type ObjectHash, parseHash } from "../domain/ObjectHash.js"
import { Segment } from "../domain/Package.js"
import { parsePublicKeyLine, sameKey } from "../domain/SshKey.js"
import type { SigningKey } from "./Keys.js"
import { ObjectStore } from "./ObjectStore.js"
import {
  makeChange, type Change, make as makeOwners, Owners, OwnersError, ownersRefName, type OwnerState
} from "./Owners.js"
import type { SyncClientError, SyncSession } from "./SyncClient.js"

export const OWNER_QUERY = "owner"
export const OWNER_CHANGE_QUERY = "owner-change"

/** A record travels base64-encoded in one query; records are small (at most 32 keys, 256 members). */
const MAX_RECORD_BASE64 = 60 * 1024
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/

const fail = (owner: string, reason: OwnersError["reason"], detail: string) => new OwnersError({ owner, reason, detail })

// ---------------------------------------------------------------------------------------------
// The reply: a namespace's state as text

/** `head <hash> <seq>`, then `key <line>` per key, then `member <ns>` per member; "" for no owner. */
export const formatState = (state: Option.Option<OwnerState>): string =>
  Option.match(state, {
    onNone: () => "",
    onSome: (s) => [`head ${s.head} ${s.seq}`, ...s.keys.map((k) => `key ${k}`), ...s.members.map((m) => `member ${m}`)].join("\n")
  })

export const parseState = (owner: string, text: string): Either.Either<Option.Option<OwnerState>, OwnersError> => {
  if (text === "") return Either.right(Option.none())
  const bad = (line: string) => Either.left(fail(owner, "Malformed", `malformed owner reply line ${JSON.stringify(line)}`))
  const [first = "", ...rest] = text.split("\n")
  const head = /^head ([0-9a-f]{40}) (\d{1,6})$/.exec(first)
  if (head === null) return bad(first)
  const hash = parseHash(head[1]!)
  if (Either.isLeft(hash)) return bad(first)
  const keys: Array<string> = []
  const members: Array<string> = []
  for (const line of rest) {
    if (line.startsWith("key ") && Either.isRight(parsePublicKeyLine(line.slice(4)))) keys.push(line.slice(4))
    else if (line.startsWith("member ") && Schema.is(Segment)(line.slice(7))) members.push(line.slice(7))
    else return bad(line)
  }
  return Either.right(Option.some({ owner, seq: Number(head[2]), head: hash.right, keys, members }))
}

// ---------------------------------------------------------------------------------------------
// Errors on the wire

/** The text after `!error ` for a refused change: the reason survives the trip. */
export const errorText = (e: OwnersError): string => `owners ${e.reason}: ${e.detail}`

const REASONS: ReadonlyArray<OwnersError["reason"]> = [
  "Malformed", "Unsigned", "BadSignature", "NotOwner", "Conflict", "Invalid", "NotFound", "Store"
]

/** The OwnersError an `!error owners <Reason>: …` reply stands for, if it is one. */
export const parseErrorText = (owner: string, text: string): Option.Option<OwnersError> => {
  const m = /^owners ([A-Za-z]+): ([\s\S]*)$/.exec(text)
  const reason = REASONS.find((r) => r === m?.[1])
  return m === null || reason === undefined ? Option.none() : Option.some(fail(owner, reason, m[2]!))
}

// ---------------------------------------------------------------------------------------------
// Server side

/** How a refused change ends a sync session (SyncSessionError's reason). */
export const sessionReason = (e: OwnersError): "Verification" | "Conflict" | "BadQuery" | "NotFound" | "Store" => {
  switch (e.reason) {
    case "Unsigned":
    case "BadSignature":
    case "NotOwner":
      return "Verification"
    case "Conflict":
      return "Conflict"
    case "NotFound":
      return "NotFound"
    case "Store":
      return "Store"
    default:
      return "BadQuery"
  }
}

/** The queries over the server's Owners (in the session's context on a server), else over `store` alone. */
export const queriesFor = (store: ObjectStore["Type"]) =>
  Effect.serviceOption(Owners).pipe(
    Effect.flatMap(Option.match({
      onSome: (owners) => Effect.succeed(owners),
      onNone: () => Effect.provideService(makeOwners, ObjectStore, store)
    })),
    Effect.map(makeQueries)
  )

/** Answers the two owner queries with the server's Owners; None when `command` is not one of them. */
export const makeQueries = (owners: Owners["Type"]) => ({
  answer: (command: string, words: ReadonlyArray<string>): Option.Option<Effect.Effect<string, OwnersError>> => {
    if (command !== OWNER_QUERY && command !== OWNER_CHANGE_QUERY) return Option.none()
    return Option.some(Effect.gen(function* () {
      const owner = words[0] ?? ""
      if (!Schema.is(Segment)(owner)) return yield* Effect.fail(fail(owner, "Invalid", `bad owner name ${JSON.stringify(owner)}`))
      if (command === OWNER_QUERY) {
        if (words.length !== 1) return yield* Effect.fail(fail(owner, "Invalid", "usage: owner <owner>"))
        return formatState(yield* owners.get(owner))
      }
      const encoded = words[1] ?? ""
      if (words.length !== 2 || encoded.length > MAX_RECORD_BASE64 || !BASE64.test(encoded)) {
        return yield* Effect.fail(fail(owner, "Malformed", "usage: owner-change <owner> <record, base64>"))
      }
      const state = yield* owners.apply(owner, new Uint8Array(Buffer.from(encoded, "base64")))
      yield* Effect.logInfo("ownership changed").pipe(Effect.annotateLogs({ owner, seq: state.seq, head: state.head }))
      return formatState(Option.some(state))
    }))
  }
})

// ---------------------------------------------------------------------------------------------
// Client side

const remoteToOwners = (owner: string) => (e: SyncClientError): SyncClientError | OwnersError =>
  e.reason === "Remote" ? Option.getOrElse(parseErrorText(owner, e.detail), () => e) : e

/** The namespace's state as the server holds it (None: nobody owns it yet). */
export const current = (session: SyncSession, owner: string): Effect.Effect<Option.Option<OwnerState>, SyncClientError | OwnersError> =>
  session.query(`${OWNER_QUERY} ${owner}`).pipe(
    Effect.mapError(remoteToOwners(owner)),
    Effect.flatMap((text) => parseState(owner, text))
  )

/** Sends a signed record; the state after it. */
export const submit = (session: SyncSession, owner: string, record: Uint8Array): Effect.Effect<OwnerState, SyncClientError | OwnersError> =>
  session.query(`${OWNER_CHANGE_QUERY} ${owner} ${Buffer.from(record).toString("base64")}`).pipe(
    Effect.mapError(remoteToOwners(owner)),
    Effect.flatMap((text) => parseState(owner, text)),
    Effect.flatMap(Option.match({
      onNone: () => Effect.fail(fail(owner, "Malformed", "the server answered the change with no state")),
      onSome: (s) => Effect.succeed(s)
    }))
  )

export interface Applied {
  readonly before: Option.Option<OwnerState>
  readonly after: OwnerState
  readonly record: ObjectHash
}

/**
 * Reads the head, signs `change` on top of it with `key` (refused here already when the rules forbid it, e.g.
 * removing the last key), and submits it. `tagger` is `Name <email>`.
 */
export const change = (session: SyncSession, key: SigningKey, owner: string, what: Change, tagger: string) =>
  Effect.gen(function* () {
    const before = yield* current(session, owner)
    const record = yield* makeChange(key, owner, before, what, tagger)
    const after = yield* submit(session, owner, record.body)
    return { before, after, record: record.hash } satisfies Applied
  })

/**
 * Client side, after a key change: whether the namespace's current keys descend from keys the user trusts. The
 * server's chain of records is pulled into the local store and verified from genesis (`Owners.history`: every
 * record signed by a key of the state before it); if a state on it holds one of `trusted`, every later change
 * was made by the namespace's keys of the time, so the current keys are as trustworthy as the pins. Some(the
 * current keys) then; None when the chain does not reach a trusted key (or the namespace has no record).
 */
export const followChain = (session: SyncSession, owner: string, trusted: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const store = yield* ObjectStore
    const head = yield* current(session, owner)
    if (Option.isNone(head)) return Option.none<ReadonlyArray<string>>()
    yield* session.pull(head.value.head)
    const ref = ownersRefName(owner)
    const local = yield* store.readRef(ref).pipe(Effect.mapError((e) => fail(owner, "Store", e._tag)))
    if (Option.getOrUndefined(local) !== head.value.head) {
      yield* store.setRef(ref, local, head.value.head).pipe(Effect.mapError((e) => fail(owner, "Store", e._tag)))
    }
    const owners = yield* makeOwners
    const history = yield* owners.history(owner)
    const pins = trusted.flatMap((line) => Either.match(parsePublicKeyLine(line), { onLeft: () => [], onRight: (k) => [k.key] }))
    const holdsPin = (keys: ReadonlyArray<string>) =>
      keys.some((line) => Either.match(parsePublicKeyLine(line), { onLeft: () => false, onRight: (k) => pins.some((p) => sameKey(p, k.key)) }))
    const last = history[history.length - 1]
    if (last === undefined || last.hash !== head.value.head || !history.some((h) => holdsPin(h.record.keys))) {
      return Option.none<ReadonlyArray<string>>()
    }
    return Option.some(last.record.keys)
  })
