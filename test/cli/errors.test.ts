import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit } from "effect"
import { LockfileInvalid } from "../../src/domain/Lockfile.js"
import { CliError, ExitCode, exitCodeOf, render, reportFailures } from "../../src/cli/errors.js"
import { KeyError } from "../../src/services/Keys.js"
import { OwnersError } from "../../src/services/Owners.js"
import { ServerUnreachable } from "../../src/services/Remote.js"
import { DependencyConflict, NoMatchingVersion, PackageNotFound } from "../../src/services/Resolver.js"
import { VerificationError } from "../../src/services/Verifier.js"

describe("CLI errors", () => {
  it("maps each kind of failure to its exit code, with a hint", () => {
    const unreachable = render(new ServerUnreachable({ address: "127.0.0.1:4822", source: "UPM_SERVER", detail: "refused" }))
    assert.strictEqual(unreachable.code, ExitCode.Network)
    assert.include(unreachable.message, "127.0.0.1:4822")
    assert.include(unreachable.hint ?? "", "UPM_SERVER")
    const missing = render(new PackageNotFound({ name: "alice/helo", path: [], suggestions: ["alice/hello"] }))
    assert.strictEqual(missing.code, ExitCode.NotFound)
    assert.include(missing.hint ?? "", "alice/hello")
    const noMatch = render(new NoMatchingVersion({ name: "a/x", range: "^9", path: [], available: ["1.0.0", "2.0.0"] }))
    assert.strictEqual(noMatch.code, ExitCode.NotFound)
    assert.include(noMatch.hint ?? "", "1.0.0, 2.0.0")
    assert.strictEqual(render(new VerificationError({ reason: "KeyChanged", detail: "x" })).code, ExitCode.Verification)
    assert.strictEqual(render(new VerificationError({ reason: "VersionExists", detail: "x" })).code, ExitCode.Conflict)
    assert.strictEqual(render(new DependencyConflict({ name: "c/z", chosen: "1.2.0", first: { path: [], range: "~1.2" }, second: { path: [], range: "^1.5" } })).code, ExitCode.Conflict)
    const key = render(new KeyError({ file: "/k", reason: "Permissions", detail: "readable by others", fix: "run: chmod 600 /k" }))
    assert.strictEqual(key.code, ExitCode.Usage)
    assert.include(key.message, "/k")
    assert.include(key.hint ?? "", "chmod 600")
    assert.strictEqual(render(new LockfileInvalid({ path: "upm.lock", detail: "bad" })).code, ExitCode.Usage)
  })

  it("maps refused ownership changes: not an owner 5, stale head 6, against the rules (last key) 2", () => {
    const owners = (reason: OwnersError["reason"], detail: string) => render(new OwnersError({ owner: "alice", reason, detail }))
    const notOwner = owners("NotOwner", "SHA256:x is not an owner key of alice")
    assert.strictEqual(notOwner.code, ExitCode.Verification)
    assert.include(notOwner.hint ?? "", "upm owner list alice")
    assert.strictEqual(owners("Conflict", "stale").code, ExitCode.Conflict)
    const last = owners("Invalid", "the last key cannot be removed; add the new key first, then remove this one")
    assert.strictEqual(last.code, ExitCode.Usage)
    assert.include(last.message, "last key cannot be removed")
  })

  it("recognises disk full and permission denied anywhere in the cause chain", () => {
    const enospc = Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC", path: "/x/y" })
    const r = render({ _tag: "ExportError", detail: "writing", cause: enospc })
    assert.strictEqual(r.code, ExitCode.LocalIo)
    assert.include(r.message, "disk is full")
    assert.strictEqual(render({ _tag: "SystemError", reason: "PermissionDenied", pathOrDescriptor: "/root/x", message: "denied" }).code, ExitCode.LocalIo)
  })

  it.effect("reports once and carries the code to the exit", () =>
    Effect.gen(function* () {
      const exit = yield* reportFailures(false)(Effect.fail(new CliError({ code: 6, detail: "nope" }))).pipe(Effect.exit)
      assert.strictEqual(exitCodeOf(exit), 6)
      assert.strictEqual(exitCodeOf(Exit.succeed(1)), 0)
      assert.strictEqual(exitCodeOf(Exit.failCause(Cause.interrupt("x" as never))), 130)
      const defect = yield* reportFailures(false)(Effect.die(new Error("boom"))).pipe(Effect.exit)
      assert.strictEqual(exitCodeOf(defect), 1)
    }))
})
