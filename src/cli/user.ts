/**
 * `upm user add|passwd|role|remove|list`: the server operator's account commands. They work on the server's
 * store directly (`--store`, else UPM_STORE, else fs:./data), so the first maintainer can be created before anyone
 * can log in; accounts live behind `refs/upm/accounts` (src/services/Accounts.ts), which a running server reads
 * on every login, so no restart is needed. The password comes from UPM_PASSWORD or is asked on the terminal.
 *
 *   upm user add alice --role maintainer --store fs:/var/lib/upm/data
 */
import { Args, Command, Options, Prompt } from "@effect/cli"
import { Console, Effect, Layer, Option, Redacted } from "effect"
import { Accounts, layer as accountsLayer, type Role } from "../services/Accounts.js"
import { layerFromSpec, StoreSpecFromString } from "../services/StoreConfig.js"
import { Schema } from "effect"

const store = Options.text("store").pipe(
  Options.withDescription("the server's store (default: UPM_STORE, else fs:./data)"),
  Options.optional
)
const username = Args.text({ name: "username" })
const roles = Options.choice("role", ["maintainer", "admin"]).pipe(
  Options.repeated,
  Options.withDescription("a role: maintainer (may decide the queue), admin")
)

const password = (name: string) =>
  process.env["UPM_PASSWORD"] !== undefined
    ? Effect.succeed(process.env["UPM_PASSWORD"])
    : Effect.map(Prompt.run(Prompt.password({ message: `password for ${name}` })), Redacted.value)

const withAccounts = <A, E, R>(flag: Option.Option<string>, f: (accounts: Accounts["Type"]) => Effect.Effect<A, E, R>, what: string) =>
  Effect.gen(function* () {
    const spec = yield* Schema.decode(StoreSpecFromString)(Option.getOrElse(flag, () => process.env["UPM_STORE"] ?? "fs:./data"))
    const layer = accountsLayer().pipe(Layer.provide(layerFromSpec(spec)))
    return yield* Effect.flatMap(Accounts, f).pipe(Effect.provide(layer))
  }).pipe(
    Effect.catchAll((e) =>
      Console.error(`upm user ${what}: ${typeof e === "object" && e !== null && "message" in e ? String(e.message) : String(e)}`).pipe(
        Effect.zipRight(Effect.sync(() => {
          process.exitCode = 1
        }))
      ))
  )

const add = Command.make("add", { username, roles, store }, ({ roles, store, username }) =>
  withAccounts(store, (accounts) =>
    Effect.flatMap(password(username), (pw) => accounts.create(username, pw, roles as ReadonlyArray<Role>)).pipe(
      Effect.flatMap((a) => Console.log(`created ${a.username}${a.roles.length > 0 ? ` (${a.roles.join(", ")})` : ""}`))
    ), "add")).pipe(Command.withDescription("Create an account"))

const passwd = Command.make("passwd", { username, store }, ({ store, username }) =>
  withAccounts(store, (accounts) =>
    Effect.flatMap(password(username), (pw) => accounts.setPassword(username, pw)).pipe(
      Effect.zipRight(Console.log(`password of ${username} changed`))
    ), "passwd")).pipe(Command.withDescription("Set an account's password"))

const role = Command.make("role", { username, roles, store }, ({ roles, store, username }) =>
  withAccounts(store, (accounts) =>
    Effect.flatMap(accounts.setRoles(username, roles as ReadonlyArray<Role>), (a) =>
      Console.log(`${a.username}: ${a.roles.length > 0 ? a.roles.join(", ") : "no roles"}`)), "role")
).pipe(Command.withDescription("Set an account's roles (repeat --role; none clears them)"))

const remove = Command.make("remove", { username, store }, ({ store, username }) =>
  withAccounts(store, (accounts) => Effect.zipRight(accounts.remove(username), Console.log(`removed ${username}`)), "remove")
).pipe(Command.withDescription("Delete an account"))

const list = Command.make("list", { store }, ({ store }) =>
  withAccounts(store, (accounts) =>
    Effect.flatMap(accounts.list(), (all) =>
      Effect.forEach(all, (a) => Console.log(`${a.username}${a.roles.length > 0 ? `  ${a.roles.join(", ")}` : ""}`), { discard: true })), "list")
).pipe(Command.withDescription("List accounts"))

export const user = Command.make("user").pipe(
  Command.withDescription("Accounts of the message protocol (server operator)"),
  Command.withSubcommands([add, passwd, role, remove, list])
)
