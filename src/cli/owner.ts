/**
 * `upm owner list|add|remove|claim`: who owns a namespace (its keys, and member namespaces whose keys may publish
 * in it), changed by records signed with a key the namespace holds (implementations: run/owner.ts).
 *
 *   upm owner list alice
 *   upm owner add alice --key ~/.ssh/laptop.pub        # another key may publish and manage alice/*
 *   upm owner remove alice --key "ssh-ed25519 AAAA…"  # never the last key
 *   upm owner add alice --member bob                  # bob's keys may publish in alice/*
 */
import { Args, Command, HelpDoc, Options } from "@effect/cli"
import { Effect, Schema } from "effect"
import { Segment } from "../domain/Package.js"
import { json, lazy, server, verbose } from "./options.js"

const load = () => import("./run/owner.js")

const owner = Args.text({ name: "owner" }).pipe(
  Args.withDescription("the namespace (the alice of alice/hello)"),
  Args.mapEffect((text) =>
    Schema.is(Segment)(text)
      ? Effect.succeed(text)
      : Effect.fail(HelpDoc.p(`"${text}" is not an owner name (lower case a-z 0-9 . _ -, e.g. alice)`)))
)

/** The key that signs the change (the `--key` of publish, named apart from the key being added or removed). */
export const signingKey = Options.text("signing-key").pipe(
  Options.withDescription("the SSH private key that signs the change, one of the namespace's keys (default: UPM_KEY, the config file, UPM_HOME/id_ed25519, ~/.ssh/id_ed25519, ~/.ssh/id_rsa)"),
  Options.optional
)
const keyArg = Options.text("key").pipe(
  Options.withDescription("a public key: a .pub file, or the line itself (\"ssh-ed25519 AAAA… [comment]\")"),
  Options.optional
)
const member = Options.text("member").pipe(
  Options.withDescription("another namespace whose keys may publish in this one"),
  Options.optional
)

export const listConfig = { owner, server, json, verbose }
const list = Command.make("list", listConfig, lazy(load, (m) => m.list)).pipe(
  Command.withDescription("The namespace's keys (with fingerprints) and members")
)

export const changeConfig = { owner, key: keyArg, member, signingKey, server, json, verbose }
const add = Command.make("add", changeConfig, lazy(load, (m) => m.add)).pipe(
  Command.withDescription("Add a key (--key) or a member namespace (--member); signed with one of the namespace's keys")
)
const remove = Command.make("remove", changeConfig, lazy(load, (m) => m.remove)).pipe(
  Command.withDescription("Remove a key (--key; never the last one) or a member namespace (--member)")
)

export const claimConfig = { owner, signingKey, server, json, verbose }
const claim = Command.make("claim", claimConfig, lazy(load, (m) => m.claim)).pipe(
  Command.withDescription("Claim a namespace nobody owns yet for your key, before publishing in it (a first publish claims it too)")
)

export const ownerCommand = Command.make("owner").pipe(
  Command.withDescription("Who may publish in a namespace: list, add or remove keys and member namespaces"),
  Command.withSubcommands([list, add, remove, claim])
)
