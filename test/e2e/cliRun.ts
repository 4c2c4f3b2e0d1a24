/**
 * Runs `node bin/upm.js …` as a real process for the CLI's end-to-end tests: its exit code, stdout and stderr.
 * Each "user" is an environment with its own HOME, UPM_HOME and XDG_CONFIG_HOME, so two users on one machine
 * share nothing but the server.
 */
import { execFile } from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { Effect } from "effect"
import { BIN } from "./server.js"

export interface CliResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

export interface User {
  readonly env: Record<string, string>
  readonly home: string
}

/** A fresh user under `root/name`: HOME, UPM_HOME and XDG_CONFIG_HOME of its own. */
export const makeUser = (root: string, name: string, server: string): User => {
  const home = Path.join(root, name)
  Fs.mkdirSync(home, { recursive: true })
  return {
    home,
    env: {
      HOME: home,
      UPM_HOME: Path.join(home, ".upm"),
      XDG_CONFIG_HOME: Path.join(home, ".config"),
      UPM_SERVER: server,
      UPM_NAME: name,
      UPM_EMAIL: `${name}@example.com`
    }
  }
}

/** Runs `file args…` in the user's environment (PATH kept); never fails: the test looks at the code. */
export const runAs = (user: User, cwd: string, file: string, args: ReadonlyArray<string>): Effect.Effect<CliResult> =>
  Effect.async<CliResult>((resume) => {
    const env: Record<string, string> = { PATH: process.env["PATH"] ?? "", ...user.env }
    const child = execFile(file, [...args], { cwd, env, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
      resume(Effect.succeed({ code, stdout: stdout.toString(), stderr: stderr.toString() }))
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/** Runs the CLI; never fails: the test looks at the code. */
export const upm = (user: User, cwd: string, ...args: ReadonlyArray<string>): Effect.Effect<CliResult> =>
  runAs(user, cwd, process.execPath, [BIN, ...args])

/** A shell word: the text in single quotes. */
export const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`

/**
 * Runs the CLI on a pseudo-terminal (stdin, stdout and stderr) through `script` (util-linux): everything it wrote,
 * as the terminal got it, is `stdout`.
 */
export const upmOnTerminal = (user: User, cwd: string, ...args: ReadonlyArray<string>): Effect.Effect<CliResult> =>
  runAs({ ...user, env: { TERM: "xterm", ...user.env } }, cwd, "script", ["-qfec", [process.execPath, BIN, ...args].map(shellQuote).join(" "), "/dev/null"])

/** Writes files (relative path → content) under `dir`. */
export const writeFiles = (dir: string, files: Record<string, string>) => {
  for (const [name, content] of Object.entries(files)) {
    Fs.mkdirSync(Path.dirname(Path.join(dir, name)), { recursive: true })
    Fs.writeFileSync(Path.join(dir, name), content)
  }
}
