/** `upm owner list|add|remove|claim <owner>` over the sync protocol's owner queries (src/services/OwnerChanges.ts). */
import type { Command } from "@effect/cli"
import { FileSystem } from "@effect/platform"
import { Console, Effect, Either, Option } from "effect"
import { fingerprint, formatPublicKey, parsePublicKeyLine } from "../../domain/SshKey.js"
import { KeyError } from "../../services/Keys.js"
import * as OwnerChanges from "../../services/OwnerChanges.js"
import type { Change, OwnerState } from "../../services/Owners.js"
import { loadKey, taggerFor } from "../../services/Publish.js"
import { Remote } from "../../services/Remote.js"
import { CliError, ExitCode, usage } from "../errors.js"
import type { changeConfig, claimConfig, listConfig } from "../owner.js"
import { clientLayer, note, printJson } from "./client.js"

/** What `list` and the changes print: every key with its fingerprint, and the members. */
const view = (state: OwnerState) => ({
  owner: state.owner,
  seq: state.seq,
  head: state.head,
  keys: state.keys.map((line) => ({
    fingerprint: Either.match(parsePublicKeyLine(line), { onLeft: () => "?", onRight: (k) => fingerprint(k.key) }),
    key: line
  })),
  members: state.members
})

const show = (state: OwnerState) =>
  Effect.gen(function* () {
    const v = view(state)
    yield* Console.log(`${v.owner} (record #${v.seq}, ${v.head})`)
    yield* Console.log(`keys:${v.keys.length === 0 ? " none" : ""}`)
    for (const k of v.keys) yield* Console.log(`  ${k.fingerprint}  ${k.key}`)
    yield* Console.log(`members:${v.members.length === 0 ? " none" : ""}`)
    for (const m of v.members) yield* Console.log(`  ${m}`)
  })

const unclaimed = (owner: string) =>
  new CliError({
    code: ExitCode.NotFound,
    detail: `nobody owns the namespace ${owner} yet`,
    hint: `the first release published in it claims it for its signer; or claim it now: upm owner claim ${owner}`
  })

export const list = (o: Command.Command.ParseConfig<typeof listConfig>) =>
  Effect.gen(function* () {
    const session = yield* (yield* Remote).session
    const state = yield* OwnerChanges.current(session, o.owner)
    if (Option.isNone(state)) return yield* unclaimed(o.owner)
    yield* o.json ? printJson(view(state.value)) : show(state.value)
  }).pipe(Effect.provide(clientLayer(o.server)))

/**
 * `--key`: a public key line, or a file holding one (a `.pub`). A private key, a PuTTY key or an unsupported
 * type is refused with the file, what is wrong and what to run.
 */
const publicKeyArg = (value: string) =>
  Effect.gen(function* () {
    const looksLikeLine = /^\S+\s+[A-Za-z0-9+/]{16,}={0,2}(\s|$)/.test(value.trim())
    const fs = yield* FileSystem.FileSystem
    const source = looksLikeLine ? "the --key value" : value
    const text = looksLikeLine ? value : yield* fs.readFileString(value).pipe(Effect.mapError((e) =>
      new KeyError({
        file: value,
        reason: e._tag === "SystemError" && e.reason === "NotFound" ? "NotFound" : "Unreadable",
        detail: e._tag === "SystemError" && e.reason === "NotFound" ? "no such file (--key takes a .pub file or the public key line itself)" : `cannot read it (${e.message})`,
        fix: "pass the public key: upm owner add <owner> --key ~/.ssh/id_ed25519.pub (or the line \"ssh-ed25519 AAAA…\")"
      })))
    const line = text.split(/\r?\n/).map((l) => l.trim()).find((l) => l !== "" && !l.startsWith("#")) ?? ""
    return yield* Either.match(parsePublicKeyLine(line), {
      onLeft: (e) => Effect.fail(new KeyError({
        file: source,
        reason: e.reason === "UnsupportedType" ? "UnsupportedType" : "Malformed",
        detail: e.detail,
        fix: line.startsWith("-----BEGIN") ? `pass the public key instead: ssh-keygen -y -f ${value} > ${value}.pub` : "pass an OpenSSH public key (.pub) of type ssh-ed25519 or ssh-rsa; make one with: upm keygen"
      })),
      onRight: (k) => Effect.succeed(formatPublicKey(k.key))
    })
  })

/** The change `--key` / `--member` ask for: exactly one of them. */
const changeOf = (o: Command.Command.ParseConfig<typeof changeConfig>, op: "add" | "remove") =>
  Effect.gen(function* () {
    if (Option.isSome(o.key) === Option.isSome(o.member)) {
      return yield* usage(`upm owner ${op} needs either --key or --member (one at a time)`,
        `e.g. upm owner ${op} ${o.owner} --key ~/.ssh/id_ed25519.pub, or upm owner ${op} ${o.owner} --member bob`)
    }
    if (Option.isSome(o.member)) {
      return { op: op === "add" ? "add-member" : "remove-member", member: o.member.value } as Change
    }
    const key = yield* publicKeyArg(Option.getOrElse(o.key, () => ""))
    return { op: op === "add" ? "add-key" : "remove-key", key } as Change
  })

const describeChange = (c: Change): string =>
  "key" in c
    ? `${c.op === "add-key" ? "added" : c.op === "remove-key" ? "removed" : "claimed with"} key ${Either.match(parsePublicKeyLine(c.key), { onLeft: () => "?", onRight: (k) => fingerprint(k.key) })}`
    : "member" in c ? `${c.op === "add-member" ? "added" : "removed"} member ${c.member}` : c.op

/** Signs `change` with the user's key on top of the server's head, sends it, prints the new state. */
const apply = (o: { readonly owner: string; readonly signingKey: Option.Option<string>; readonly json: boolean }, change: (signer: string) => Change) =>
  Effect.gen(function* () {
    const key = yield* loadKey(o.signingKey)
    const session = yield* (yield* Remote).session
    const who = taggerFor(key, o.owner)
    const what = change(formatPublicKey(key.publicKey))
    const applied = yield* OwnerChanges.change(session, key, o.owner, what, `${who.name} <${who.email}>`)
    if (o.json) return yield* printJson({ ...view(applied.after), change: what, record: applied.record, signer: key.fingerprint })
    yield* note(`${o.owner}: ${describeChange(what)} (record #${applied.after.seq} ${applied.record}, signed by ${key.fingerprint})`)
    yield* show(applied.after)
  })

export const add = (o: Command.Command.ParseConfig<typeof changeConfig>) =>
  Effect.flatMap(changeOf(o, "add"), (c) => apply(o, () => c)).pipe(Effect.provide(clientLayer(o.server)))

export const remove = (o: Command.Command.ParseConfig<typeof changeConfig>) =>
  Effect.flatMap(changeOf(o, "remove"), (c) => apply(o, () => c)).pipe(Effect.provide(clientLayer(o.server)))

export const claim = (o: Command.Command.ParseConfig<typeof claimConfig>) =>
  apply(o, (signer) => ({ op: "claim", key: signer })).pipe(Effect.provide(clientLayer(o.server)))
