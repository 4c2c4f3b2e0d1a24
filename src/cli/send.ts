/**
 * `upm send <handle> <message>` and `upm receive <handle> [prompt]`: what a maintainer's handler runs to talk with
 * the user whose request it is handling (seed 000). The handle comes from `UPM_HANDLE` (per-request handlers) or
 * the request frame's `header.handle`; the server's handle socket from `UPM_HANDLE_SOCKET` (or `--socket`).
 * `receive` prints the user's answer on stdout. Exit code 1 with a message on stderr when the handle is unknown,
 * expired, or the user went away.
 */
import { Args, Command, Options } from "@effect/cli"
import { Console, Effect, Option } from "effect"
/** Imported when used: the message client loads the socket platform, which other commands do not need. */
const handleRequest = (...args: Parameters<typeof import("../services/MessageClient.js").handleRequest>) =>
  Effect.flatMap(Effect.promise(() => import("../services/MessageClient.js")), (m) => m.handleRequest(...args))

const handle = Args.text({ name: "handle" }).pipe(Args.withDescription("the handle the server gave the handler (UPM_HANDLE)"))
const socket = Options.text("socket").pipe(
  Options.withDescription("the server's handle socket (default: UPM_HANDLE_SOCKET)"),
  Options.optional
)

const socketPath = (flag: Option.Option<string>) =>
  Option.match(flag, {
    onSome: Effect.succeed,
    onNone: () => {
      const env = process.env["UPM_HANDLE_SOCKET"]
      return env === undefined || env === ""
        ? Effect.fail("no handle socket: set UPM_HANDLE_SOCKET (the server sets it for per-request handlers) or pass --socket")
        : Effect.succeed(env)
    }
  })

const fail = (command: string) => (e: { readonly message: string } | string) =>
  Console.error(`upm ${command}: ${typeof e === "string" ? e : e.message}`).pipe(
    Effect.zipRight(Effect.sync(() => {
      process.exitCode = 1
    }))
  )

export const send = Command.make("send", {
  handle,
  message: Args.text({ name: "message" }).pipe(Args.withDescription("the line to show the user")),
  socket
}, ({ handle, message, socket }) =>
  Effect.flatMap(socketPath(socket), (path) => handleRequest(path, { handle, op: "send", message })).pipe(
    Effect.asVoid,
    Effect.catchAll(fail("send"))
  )).pipe(Command.withDescription("Show a message to the user a handler is serving (handlers only)"))

export const receive = Command.make("receive", {
  handle,
  prompt: Args.text({ name: "prompt" }).pipe(Args.withDescription("what to ask (shown before the user answers)"), Args.withDefault("")),
  socket
}, ({ handle, prompt, socket }) =>
  Effect.flatMap(socketPath(socket), (path) => handleRequest(path, { handle, op: "receive", message: prompt })).pipe(
    Effect.flatMap((reply) => Console.log(reply.answer ?? "")),
    Effect.catchAll(fail("receive"))
  )).pipe(Command.withDescription("Read the answer of the user a handler is serving, printed on stdout (handlers only)"))
