/**
 * A throwaway PostgreSQL cluster for tests and benchmarks: `initdb` in a temp directory, `pg_ctl start` on a
 * free 127.0.0.1 port (its unix socket in the same directory), stopped and deleted when the scope closes,
 * whether the tests passed or not. As root (CI here), the server runs as the `postgres` user through
 * `runuser`, because initdb refuses root.
 *
 * Binaries are looked up on PATH, then in /usr/local/bin, then /usr/lib/postgresql/<newest>/bin. Without
 * them the layer fails with a message saying what to install; tests skip PostgreSQL only when
 * UPM_TEST_PG=off (`pgTestsEnabled`).
 */
import { execFileSync } from "node:child_process"
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { randomUUID } from "node:crypto"
import * as Reactivity from "@effect/experimental/Reactivity"
import * as PgClient from "@effect/sql-pg/PgClient"
import { Context, Data, Effect, Exit, Redacted, Scope } from "effect"

export const pgTestsEnabled = process.env["UPM_TEST_PG"] !== "off"
export const pgSkipMessage = "PostgreSQL tests skipped: UPM_TEST_PG=off"

export class PgTestError extends Data.TaggedError("PgTestError")<{ readonly message: string }> {}

export interface PgCluster {
  readonly port: number
  /** The socket directory (for `psql -h`). */
  readonly socketDir: string
  readonly binDir: string
  /** A connection URL for `database` over TCP on 127.0.0.1. */
  readonly url: (database: string) => string
  /** Creates a fresh, empty database and returns its URL. */
  readonly createDatabase: (database: string) => Effect.Effect<string, PgTestError>
}

export class PgTest extends Context.Tag("test/PgTest")<PgTest, PgCluster>() {}

const versionOf = (dir: string) => Number.parseInt(dir, 10) || 0

/** The directory holding initdb, pg_ctl and createdb, or undefined. */
export const findPgBin = (): string | undefined => {
  const candidates: Array<string> = []
  for (const dir of (process.env["PATH"] ?? "").split(":")) if (dir !== "") candidates.push(dir)
  candidates.push("/usr/local/bin")
  if (existsSync("/usr/lib/postgresql")) {
    for (const v of readdirSync("/usr/lib/postgresql").sort((a, b) => versionOf(b) - versionOf(a))) {
      candidates.push(join("/usr/lib/postgresql", v, "bin"))
    }
  }
  return candidates.find((dir) => ["initdb", "pg_ctl", "createdb"].every((b) => existsSync(join(dir, b))))
}

const freePort = Effect.async<number, PgTestError>((resume) => {
  const server = createServer()
  server.once("error", (e) => resume(Effect.fail(new PgTestError({ message: `no free port: ${e.message}` }))))
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

const isRoot = typeof process.getuid === "function" && process.getuid() === 0

const run = (command: string, args: ReadonlyArray<string>, asPostgres: boolean) =>
  Effect.try({
    try: () =>
      execFileSync(
        asPostgres && isRoot ? "runuser" : command,
        asPostgres && isRoot ? ["-u", "postgres", "--", command, ...args] : [...args],
        { stdio: ["ignore", "pipe", "pipe"], timeout: 60_000 }
      ).toString(),
    catch: (e) => {
      const stderr = typeof e === "object" && e !== null && "stderr" in e ? String(e.stderr) : ""
      return new PgTestError({ message: `${command} ${args.join(" ")} failed: ${String(e)}\n${stderr}` })
    }
  })

export interface ClusterOptions {
  /** Turn off fsync (tests: nothing to keep). Benchmarks keep PostgreSQL's defaults. */
  readonly fsync?: boolean
  /** Where the cluster's temp directory goes (default: the OS temp dir). */
  readonly base?: string
}

/** Starts a cluster in the current scope; it is stopped and removed when the scope closes. */
export const startCluster = (options: ClusterOptions = {}) =>
  Effect.gen(function* () {
    const binDir = findPgBin()
    if (binDir === undefined) {
      return yield* new PgTestError({
        message: "PostgreSQL is not installed (initdb/pg_ctl not found on PATH, in /usr/local/bin or " +
          "/usr/lib/postgresql/*/bin): `apt-get install -y postgresql`, or set UPM_TEST_PG=off to skip these tests"
      })
    }
    const bin = (name: string) => join(binDir, name)
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => mkdtempSync(join(options.base ?? tmpdir(), "upm-pg-"))),
      (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
    )
    if (isRoot) {
      // initdb refuses to run as root: the cluster belongs to the `postgres` user Debian's package creates.
      yield* Effect.try({
        try: () => {
          const uid = Number(execFileSync("id", ["-u", "postgres"], { stdio: "pipe" }).toString().trim())
          const gid = Number(execFileSync("id", ["-g", "postgres"], { stdio: "pipe" }).toString().trim())
          chownSync(dir, uid, gid)
        },
        catch: (e) =>
          new PgTestError({ message: `running as root needs a "postgres" user to own the test cluster: ${String(e)}` })
      })
    }
    const data = join(dir, "data")
    yield* run(bin("initdb"), ["-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"], true)
    const port = yield* freePort
    const serverOptions = [
      "-c listen_addresses=127.0.0.1", `-p ${port}`, `-k ${dir}`, "-c max_connections=200",
      ...(options.fsync === false ? ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"] : [])
    ].join(" ")
    yield* Effect.acquireRelease(
      run(bin("pg_ctl"), ["-D", data, "-l", join(dir, "server.log"), "-w", "-t", "60", "-o", serverOptions, "start"], true)
        .pipe(Effect.mapError((e) => new PgTestError({ message: `${e.message}\n${readLog(dir)}` }))),
      () => Effect.ignore(run(bin("pg_ctl"), ["-D", data, "-m", "immediate", "-w", "stop"], true))
    )
    const url = (database: string) => urlOf(port, database)
    return PgTest.of({
      port,
      socketDir: dir,
      binDir,
      url,
      createDatabase: (database) =>
        run(bin("createdb"), ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", database], false).pipe(
          Effect.as(url(database))
        )
    })
  })

const readLog = (dir: string) => {
  try {
    return readFileSync(join(dir, "server.log"), "utf8")
  } catch {
    return "(no server log)"
  }
}

// ---------------------------------------------------------------------------------------------
// One cluster for the whole test run: started by test/globalSetup.ts, handed to test files with vitest's
// provide/inject (what tests get is plain data; each test makes its own database in it).

export type PgInfo =
  | { readonly status: "off" }
  | { readonly status: "error"; readonly message: string }
  | { readonly status: "up"; readonly port: number; readonly socketDir: string; readonly binDir: string }

declare module "vitest" {
  export interface ProvidedContext {
    upmPg: PgInfo
  }
}

/** For test/globalSetup.ts: starts the cluster (unless UPM_TEST_PG=off) and returns its teardown. */
export const setupPg = async (provide: (info: PgInfo) => void): Promise<() => Promise<void>> => {
  if (!pgTestsEnabled) {
    provide({ status: "off" })
    return async () => {}
  }
  const scope = Effect.runSync(Scope.make())
  const started = await Effect.runPromise(Effect.either(Scope.extend(startCluster({ fsync: false }), scope)))
  if (started._tag === "Left") {
    // Not thrown: tests that do not use PostgreSQL still run; those that do fail with this message.
    provide({ status: "error", message: started.left.message })
  } else {
    const { port, socketDir, binDir } = started.right
    provide({ status: "up", port, socketDir, binDir })
  }
  return () => Effect.runPromise(Scope.close(scope, Exit.void))
}

export const urlOf = (port: number, database: string) => `postgresql://postgres@127.0.0.1:${port}/${database}`

/**
 * A fresh empty database in the run's cluster, by URL. Dies with the setup's message when PostgreSQL could not
 * be started (tests guard with `pgTestsEnabled` and skip only when UPM_TEST_PG=off).
 */
export const freshDatabase = (info: PgInfo) =>
  Effect.gen(function* () {
    if (info.status !== "up") {
      return yield* Effect.dieMessage(info.status === "off" ? pgSkipMessage : info.message)
    }
    const name = `t_${randomUUID().replace(/-/g, "")}`
    yield* Effect.scoped(Effect.gen(function* () {
      const admin = yield* PgClient.make({ url: Redacted.make(urlOf(info.port, "postgres")), maxConnections: 1 })
      yield* admin.unsafe(`CREATE DATABASE ${name}`)
    })).pipe(Effect.provide(Reactivity.layer), Effect.orDie)
    return urlOf(info.port, name)
  })
