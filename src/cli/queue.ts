/**
 * `upm queue list|accept|reject`: the maintainer's moderation queue (releases a `propose` policy queued), over the
 * message protocol as an authenticated user with the `maintainer` (or `admin`) role.
 *
 *   UPM_USER=alice UPM_PASSWORD=… upm queue list --server upm.example.org:4822
 *   upm queue accept alice/greetings 1.2.0
 *   upm queue reject alice/greetings 1.2.0 --reason "no license"
 */
import { Args, Command, Options, Prompt } from "@effect/cli"
import { Console, Effect, Option, Redacted } from "effect"
import type { MessageSession } from "../services/MessageClient.js"

/** Imported when used: the message client loads the socket platform, which other commands do not need. */
const connect = (...args: Parameters<typeof import("../services/MessageClient.js").connect>) =>
  Effect.flatMap(Effect.promise(() => import("../services/MessageClient.js")), (m) => m.connect(...args))

export const serverOption = Options.text("server").pipe(
  Options.withDescription("the server, host[:port] (default: UPM_SERVER, else 127.0.0.1:4822)"),
  Options.optional
)
export const userOption = Options.text("user").pipe(Options.withDescription("your account (default: UPM_USER)"), Options.optional)
const json = Options.boolean("json").pipe(Options.withDescription("print JSON"))

export const parseServer = (flag: Option.Option<string>) => {
  const text = Option.getOrElse(flag, () => process.env["UPM_SERVER"] ?? "127.0.0.1:4822")
  const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(text.replace(/^upm:\/\//, ""))
  const host = (m?.[1] ?? "127.0.0.1").replace(/^\[|\]$/g, "")
  return { host, port: m?.[2] !== undefined ? Number(m[2]) : 4822 }
}

/** The user name and password: flags/env, else asked on the terminal. */
export const credentials = (user: Option.Option<string>) =>
  Effect.gen(function* () {
    const username = Option.isSome(user)
      ? user.value
      : process.env["UPM_USER"] ?? (yield* Prompt.run(Prompt.text({ message: "user" })))
    const env = process.env["UPM_PASSWORD"]
    const password = env !== undefined ? env : Redacted.value(yield* Prompt.run(Prompt.password({ message: `password for ${username}` })))
    return { username, password }
  })

/** Runs `f` on an authenticated session; failures print one line and set exit code 1. */
export const withSession = <A, E>(
  server: Option.Option<string>,
  user: Option.Option<string>,
  f: (session: MessageSession) => Effect.Effect<A, E>,
  what: string
) =>
  Effect.scoped(Effect.gen(function* () {
    const { username, password } = yield* credentials(user)
    const session = yield* connect(parseServer(server))
    yield* session.authenticate(username, password)
    return yield* f(session)
  })).pipe(
    Effect.catchAll((e) =>
      Console.error(`upm ${what}: ${typeof e === "object" && e !== null && "message" in e ? String(e.message) : String(e)}`).pipe(
        Effect.zipRight(Effect.sync(() => {
          process.exitCode = 1
        }))
      ))
  )

const name = Args.text({ name: "owner/name" })
const version = Args.text({ name: "version" })

const list = Command.make("list", { server: serverOption, user: userOption, json }, ({ json, server, user }) =>
  withSession(server, user, (session) =>
    Effect.gen(function* () {
      const response = yield* session.expect("queue-list", null)
      const items = Array.isArray(response.payload.data) ? response.payload.data as ReadonlyArray<{ name: string; version: string; hash: string }> : []
      if (json) return yield* Console.log(JSON.stringify(items, null, 2))
      if (items.length === 0) return yield* Console.log("the queue is empty")
      for (const item of items) yield* Console.log(`${item.name}@${item.version}  ${item.hash}`)
    }), "queue list")).pipe(Command.withDescription("List releases waiting for a maintainer"))

const accept = Command.make("accept", { server: serverOption, user: userOption, name, version }, ({ name, server, user, version }) =>
  withSession(server, user, (session) =>
    Effect.flatMap(session.expect("queue-accept", { name, version }), () => Console.log(`accepted ${name}@${version}: sealed`)), "queue accept")
).pipe(Command.withDescription("Accept a queued release: verify and seal it"))

const reject = Command.make("reject", {
  server: serverOption,
  user: userOption,
  name,
  version,
  reason: Options.text("reason").pipe(Options.withDescription("why (logged on the server)"), Options.withDefault("rejected by a maintainer"))
}, ({ name, reason, server, user, version }) =>
  withSession(server, user, (session) =>
    Effect.flatMap(session.expect("queue-reject", { name, version, reason }), () => Console.log(`rejected ${name}@${version}`)), "queue reject")
).pipe(Command.withDescription("Reject a queued release (its objects are collected later)"))

export const queue = Command.make("queue").pipe(
  Command.withDescription("The moderation queue of proposed releases (maintainers)"),
  Command.withSubcommands([list, accept, reject])
)
