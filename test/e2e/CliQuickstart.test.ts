/**
 * The README's Quickstart, run literally: the ```sh block under "## Quickstart" is extracted from README.md and
 * run by bash in an empty directory with an empty HOME, `upm` on the PATH. The only help the harness gives is
 * the patience of a person: after a line that starts something in the background (`&`), it waits until the
 * server listens. If the README drifts from what works, this fails.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { BIN, ROOT } from "./server.js"

/** The commands of the first ```sh block after `## Quickstart`. */
export const quickstartCommands = (readme: string): ReadonlyArray<string> => {
  const section = readme.slice(readme.indexOf("## Quickstart"))
  const match = /```sh\n([\s\S]*?)```/.exec(section)
  if (section.length === readme.length + 1 || match === null) return []
  return match[1]!.split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"))
}

const freePort = Effect.async<number>((resume) => {
  const server = Net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

describe("README quickstart", () => {
  it("has at most ten commands", () => {
    const commands = quickstartCommands(Fs.readFileSync(Path.join(ROOT, "README.md"), "utf8"))
    assert.isAbove(commands.length, 0, "no ```sh block under ## Quickstart")
    assert.isAtMost(commands.length, 10)
  })

  it.scopedLive("works exactly as written", () =>
    Effect.gen(function* () {
      const commands = quickstartCommands(Fs.readFileSync(Path.join(ROOT, "README.md"), "utf8"))
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "upm-quickstart-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true })))
      const home = Path.join(dir, "home")
      const work = Path.join(dir, "work")
      const bin = Path.join(dir, "bin")
      for (const d of [home, work, bin]) Fs.mkdirSync(d)
      Fs.writeFileSync(Path.join(bin, "upm"), `#!/bin/sh\nexec "${process.execPath}" "${BIN}" "$@"\n`, { mode: 0o755 })
      const port = yield* freePort
      const script = [
        "set -eu",
        // Stop whatever the quickstart started in the background, whatever happens.
        "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT",
        `wait_for_server() { for i in $(seq 1 600); do (echo > /dev/tcp/127.0.0.1/${port}) 2>/dev/null && return 0; sleep 0.1; done; echo "server did not start" >&2; return 1; }`,
        ...commands.flatMap((c) => (c.replace(/\s+#.*$/, "").endsWith("&") ? [c, "wait_for_server"] : [c]))
      ].join("\n")
      const env = {
        PATH: `${bin}:${process.env["PATH"] ?? ""}`,
        HOME: home,
        UPM_PORT: String(port),
        UPM_SERVER: `127.0.0.1:${port}`
      }
      const result = yield* Effect.async<{ code: number; stdout: string; stderr: string }>((resume) => {
        const child = execFile("bash", ["-c", script], { cwd: work, env, timeout: 240_000 }, (error, stdout, stderr) =>
          resume(Effect.succeed({ code: error === null ? 0 : typeof error.code === "number" ? error.code : 1, stdout, stderr })))
        return Effect.sync(() => child.kill("SIGKILL"))
      })
      assert.strictEqual(result.code, 0, `the quickstart failed:\n${script}\n--- stdout ---\n${result.stdout}\n--- stderr ---\n${result.stderr}`)
      // The last command shows the installed file.
      assert.include(result.stdout, `export const hello = () => "hello"`)
      assert.isTrue(Fs.existsSync(Path.join(work, "app", "upm.lock")))
    }), { timeout: 300_000 })
})
