/**
 * The one place where failures become what a user sees: a message, often a hint, and an exit code.
 * No stack traces unless `--verbose` (or `UPM_VERBOSE=1`).
 *
 * Exit codes (docs/cli.md):
 *
 * | code | meaning |
 * | --- | --- |
 * | 0 | success |
 * | 1 | unexpected failure (a bug: run again with --verbose and report it) |
 * | 2 | usage: bad arguments, an invalid upm.json, upm.lock, config file or key file |
 * | 3 | network: the server is unreachable, timed out, or broke the protocol |
 * | 4 | not found: no such package, version, release or file |
 * | 5 | verification failed: bad signature, changed key, rollback, corrupt data |
 * | 6 | conflict: the version exists with other content, dependencies conflict, lockfile out of date |
 * | 7 | local filesystem: permission denied, disk full, unsafe path |
 * | 8 | refused: the server's policy rejected the request |
 * | 130 | interrupted (Ctrl-C) |
 */
import { ValidationError } from "@effect/cli"
import { Cause, Console, Effect, Exit, Option, Schema } from "effect"

export const ExitCode = {
  Ok: 0,
  Unexpected: 1,
  Usage: 2,
  Network: 3,
  NotFound: 4,
  Verification: 5,
  Conflict: 6,
  LocalIo: 7,
  Refused: 8,
  Interrupted: 130
} as const
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode]

/** A failure already shown to the user; only its exit code is left to apply. */
export class Reported extends Schema.TaggedError<Reported>()("Reported", { code: Schema.Number }) {}

/** A failure raised by the CLI itself, with its code and optional hint. */
export class CliError extends Schema.TaggedError<CliError>()("CliError", {
  code: Schema.Number,
  detail: Schema.String,
  hint: Schema.optional(Schema.String)
}) {
  override get message() {
    return this.detail
  }
}

export const usage = (detail: string, hint?: string) =>
  new CliError({ code: ExitCode.Usage, detail, ...(hint === undefined ? {} : { hint }) })

export interface Rendered {
  readonly code: number
  readonly message: string
  readonly hint?: string
}

const field = (e: object, name: string): unknown => (name in e ? (e as Record<string, unknown>)[name] : undefined)
const str = (e: object, name: string): string => {
  const v = field(e, name)
  return typeof v === "string" ? v : ""
}

const SYSTEM_CODES: Record<string, { code: number; what: string; hint: string }> = {
  ENOSPC: { code: ExitCode.LocalIo, what: "the disk is full", hint: "free some space and run the command again (nothing half-written is kept)" },
  EDQUOT: { code: ExitCode.LocalIo, what: "the disk quota is exceeded", hint: "free some space and run the command again" },
  EACCES: { code: ExitCode.LocalIo, what: "permission denied", hint: "check the owner and mode of the path (ls -ld), or choose another target" },
  EPERM: { code: ExitCode.LocalIo, what: "operation not permitted", hint: "check the owner and mode of the path (ls -ld)" },
  EROFS: { code: ExitCode.LocalIo, what: "the file system is read-only", hint: "choose a writable target" }
}

/** Looks through an error and its causes for a Node system error code such as ENOSPC. */
const systemCode = (e: unknown, depth = 0): { code: string; path: string } | undefined => {
  if (typeof e !== "object" || e === null || depth > 6) return undefined
  const code = field(e, "code")
  if (typeof code === "string" && code in SYSTEM_CODES) {
    return { code, path: str(e, "path") }
  }
  // @effect/platform's SystemError: reason "PermissionDenied", the path in pathOrDescriptor.
  if (field(e, "_tag") === "SystemError" && field(e, "reason") === "PermissionDenied") {
    return { code: "EACCES", path: String(field(e, "pathOrDescriptor") ?? "") }
  }
  const message = str(e, "message")
  for (const c of Object.keys(SYSTEM_CODES)) {
    if (message.includes(c)) return { code: c, path: "" }
  }
  return systemCode(field(e, "cause"), depth + 1)
}

/** Maps any failure to what the user sees. Every typed error of the client has a case here. */
export const render = (error: unknown): Rendered => {
  if (typeof error !== "object" || error === null) return { code: ExitCode.Unexpected, message: String(error) }
  const sys = systemCode(error)
  if (sys !== undefined) {
    const s = SYSTEM_CODES[sys.code]!
    return { code: s.code, message: `${s.what}${sys.path === "" ? "" : `: ${sys.path}`}`, hint: s.hint }
  }
  const tag = str(error, "_tag")
  const message = error instanceof Error ? error.message : str(error, "message")
  const detail = str(error, "detail")
  switch (tag) {
    case "CliError":
      return { code: Number(field(error, "code")), message, ...(str(error, "hint") === "" ? {} : { hint: str(error, "hint") }) }
    case "ConfigFileError":
    case "LockfileInvalid":
    case "ManifestInvalid":
    case "KnownKeysError":
      return { code: str(error, "reason") === "WriteFailed" ? ExitCode.LocalIo : ExitCode.Usage, message }
    case "InvalidServerAddress": {
      const where = { flag: "--server", env: "UPM_SERVER", config: "the config file (upm config set server …)", default: "the default" }
      return { code: ExitCode.Usage, message: `${detail} (from ${where[str(error, "source") as keyof typeof where] ?? "?"})` }
    }
    case "InvalidReleaseName":
      return { code: ExitCode.Usage, message: `"${str(error, "input")}": ${detail}`, hint: "write packages as owner/name or owner/name@range, e.g. alice/hello@^1.0.0" }
    case "KeyError":
      return {
        code: str(error, "reason") === "WriteFailed" ? ExitCode.LocalIo : ExitCode.Usage,
        message: `key ${str(error, "file")}: ${detail}`,
        hint: str(error, "fix")
      }
    case "SignerError":
      return { code: ExitCode.Usage, message: `cannot sign: ${detail}`, hint: "set your name and email with git config user.name / user.email, or UPM_NAME / UPM_EMAIL" }
    case "ServerUnreachable":
      return {
        code: ExitCode.Network,
        message: `cannot reach the upm server at ${str(error, "address")} (${detail})`,
        hint: `is it running? Start one with \`upm serve\`, or point to another with --server, UPM_SERVER or \`upm config set server HOST:PORT\` (the address came from ${str(error, "source")})`
      }
    case "SyncClientError": {
      const reason = str(error, "reason")
      if (reason === "Remote") return renderRemote(detail)
      if (reason === "BadObject" || reason === "Unsolicited") {
        return { code: ExitCode.Verification, message: `the server sent bad data: ${detail}`, hint: "nothing was kept; try again or another server" }
      }
      if (reason === "Store") return { code: ExitCode.LocalIo, message: `the local store failed: ${detail}`, hint: "run `upm fsck`" }
      return {
        code: ExitCode.Network,
        message: `network: ${detail}`,
        hint: reason === "Timeout" ? "the server is slow or stuck; try again later" : "check the server address and that the server is running"
      }
    }
    case "MessageClientError":
      return { code: ExitCode.Network, message: `message session: ${detail || message}` }
    case "VerificationError": {
      const reason = str(error, "reason")
      if (reason === "VersionExists") return { code: ExitCode.Conflict, message: detail }
      return {
        code: ExitCode.Verification,
        message: `verification failed (${reason}): ${detail}`,
        ...(reason === "KeyChanged" ? {} : { hint: "nothing was installed from this release" })
      }
    }
    case "PackageNotFound": {
      const suggestions = field(error, "suggestions")
      const list = Array.isArray(suggestions) ? suggestions.map(String) : []
      return {
        code: ExitCode.NotFound,
        message: `package ${str(error, "name")} not found${pathText(error)}`,
        ...(list.length > 0 ? { hint: `did you mean ${list.join(", ")}?` } : { hint: "check the name with `upm search <text>`" })
      }
    }
    case "NoMatchingVersion": {
      const available = field(error, "available")
      const list = Array.isArray(available) ? available.map(String) : []
      return {
        code: ExitCode.NotFound,
        message: `no version of ${str(error, "name")} matches "${str(error, "range")}"${pathText(error)}`,
        hint: list.length > 0 ? `versions that exist: ${list.join(", ")}` : "no version is published yet"
      }
    }
    case "ReleaseNotFound":
    case "ObjectNotFound":
    case "NotFound":
      return { code: ExitCode.NotFound, message }
    case "DependencyConflict":
    case "ResolutionTooComplex":
    case "LockfileOutOfDate":
    case "RepublishConflict":
    case "RefConflict":
      return { code: ExitCode.Conflict, message, ...(str(error, "hint") === "" ? {} : { hint: str(error, "hint") }) }
    case "CorruptObject":
    case "IncompleteGraph":
      return { code: ExitCode.Verification, message: `local store: ${message}`, hint: "run `upm fsck`; `upm gc` then a new install fetches damaged packages again" }
    case "StoreError":
      return { code: ExitCode.LocalIo, message: `local store: ${message}` }
    case "ImportError":
    case "ExportError":
    case "UnsafePath":
      return { code: ExitCode.LocalIo, message }
    case "PolicyRefused":
      return { code: ExitCode.Refused, message }
    case "OwnersError":
      return renderOwners(str(error, "owner"), str(error, "reason"), detail)
    case "SystemError":
    case "BadArgument":
      return { code: ExitCode.LocalIo, message }
    default:
      if (ValidationError.isValidationError(error)) return { code: ExitCode.Usage, message: "" }
      // A typed error without its own case: its message is meant for people; code 1.
      return tag === ""
        ? { code: ExitCode.Unexpected, message, hint: "this is a bug in upm: run again with --verbose and report the output" }
        : { code: ExitCode.Unexpected, message: message === "" ? tag : message }
  }
}

const pathText = (error: object): string => {
  const path = field(error, "path")
  if (!Array.isArray(path) || path.length === 0) return ""
  const steps = path.map((s: unknown) =>
    typeof s === "object" && s !== null ? `${str(s, "name")}${str(s, "version") === "" ? "" : `@${str(s, "version")}`}` : String(s))
  return ` (required by ${steps.join(" → ")})`
}

/** A namespace ownership change refused (by the rules, checked before sending, or by the server). */
const renderOwners = (owner: string, reason: string, detail: string): Rendered => {
  const list = `upm owner list ${owner}`
  switch (reason) {
    case "NotOwner":
    case "BadSignature":
    case "Unsigned":
      return {
        code: ExitCode.Verification,
        message: `the server refused the change to ${owner}: ${detail}`,
        hint: `only a key of the namespace may change it: compare \`upm whoami\` with \`${list}\`, or sign with another key (--signing-key FILE)`
      }
    case "Conflict":
      return { code: ExitCode.Conflict, message: `${owner} changed meanwhile: ${detail}`, hint: `look at \`${list}\` and run the command again` }
    case "Invalid":
      return { code: ExitCode.Usage, message: `cannot change ${owner}: ${detail}`, hint: list }
    case "NotFound":
      return { code: ExitCode.NotFound, message: `namespace ${owner}: ${detail}` }
    default:
      return { code: ExitCode.Network, message: `the server could not change ${owner} (${reason}): ${detail}` }
  }
}

/** `!error …` replies carry the server's reason as text; the first word is its tag when the server names one. */
const renderRemote = (detail: string): Rendered => {
  const lower = detail.toLowerCase()
  if (/versionexists|already (published|sealed|exists)|immutable|conflict/.test(lower)) {
    return { code: ExitCode.Conflict, message: `the server refused: ${detail}` }
  }
  if (/signature|notowner|not an owner|unsigned|keychanged|namespace/.test(lower)) {
    return { code: ExitCode.Verification, message: `the server refused the signature: ${detail}`, hint: "check `upm whoami` and `upm owner list <owner>`" }
  }
  if (/rejected|refused|policy/.test(lower)) return { code: ExitCode.Refused, message: `the server refused: ${detail}` }
  if (/not found|unknown/.test(lower)) return { code: ExitCode.NotFound, message: `the server says: ${detail}` }
  return { code: ExitCode.Network, message: `the server reported an error: ${detail}` }
}

/** The text for stderr: `upm: <message>` and the hint, plus the full cause when verbose. */
export const format = (r: Rendered, cause: Cause.Cause<unknown> | undefined, verbose: boolean): string => {
  const lines = r.message === "" ? [] : [`upm: ${r.message.replace(/\n/g, "\n  ")}`]
  if (r.hint !== undefined && r.hint !== "") lines.push(`  hint: ${r.hint}`)
  if (verbose && cause !== undefined) lines.push("", Cause.pretty(cause, { renderErrorCause: true }))
  return lines.join("\n")
}

/**
 * Runs a command's effect at the edge: reports its failure once (message, hint, code) and turns it into
 * `Reported`, whose code `teardown` applies. Interruption passes through (exit 130).
 */
export const reportFailures = (verbose: boolean) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, Reported, R> =>
  effect.pipe(
    Effect.catchAllCause((cause) => {
      if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause as Cause.Cause<never>)
      const failure = Cause.failureOption(cause)
      const error = Option.isSome(failure) ? failure.value : Option.getOrUndefined(Cause.dieOption(cause))
      if (typeof error === "object" && error !== null && field(error, "_tag") === "Reported") {
        return Effect.fail(new Reported({ code: Number(field(error, "code")) }))
      }
      const r = Option.isSome(failure)
        ? render(error)
        : { code: ExitCode.Unexpected, message: `internal error: ${error instanceof Error ? error.message : String(error)}`, hint: "this is a bug in upm: run again with --verbose and report the output" }
      const text = format(r, cause, verbose)
      return Effect.zipRight(
        text === "" ? Effect.void : Console.error(text),
        Effect.fail(new Reported({ code: r.code }))
      )
    })
  )

/** For `NodeRuntime.runMain({ teardown })`: the exit code of the program's Exit. */
export const exitCodeOf = (exit: Exit.Exit<unknown, unknown>): number => {
  if (Exit.isSuccess(exit)) return ExitCode.Ok
  if (Cause.isInterruptedOnly(exit.cause)) return ExitCode.Interrupted
  const failure = Cause.failureOption(exit.cause)
  if (Option.isSome(failure) && typeof failure.value === "object" && failure.value !== null && field(failure.value, "_tag") === "Reported") {
    return Number(field(failure.value, "code"))
  }
  return ExitCode.Unexpected
}
