/**
 * Storage backends benchmark: memory, fs, sqlite and postgres on the same corpora, with git doing the same work
 * in the same run as the reference.
 *
 *   npx tsx bench/stores.ts [--base /dev/shm] [--cas 300] [--sample 2000]
 *
 * Corpora: the unpacked `typescript@5.6.3` package (`npm pack` at bench time) and 10,000 small seeded text files.
 * For each backend, on a fresh store each time:
 *   import   importDirectory (files → blobs + trees, put per object) vs `git add -A && git write-tree`
 *   putMany  every object again into a fresh store, in batches of 1000 (the shape of a push)
 *   get      a shuffled sample of objects by hash, one at a time, verified  vs `git cat-file --batch`
 *   has      the sample plus as many absent hashes, one at a time        vs `git cat-file --batch-check`
 *   missing  the same hashes, in batches of 1000 (what sync asks)
 *   CAS      a ref advanced by compare-and-set, sequentially          vs `git update-ref --stdin`, one
 *            transaction per update
 * PostgreSQL runs a throwaway cluster (test/pg.ts) with its default durability settings under --base.
 * Prints objects/s, the ratio to git, sqlite/fs and postgres/sqlite for import, and the size on disk (sqlite:
 * the file plus its WAL; postgres: the tables with their TOAST and indexes).
 */
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Context, Effect, Layer, Option, Schema, type Scope } from "effect"
import { execFileSync } from "node:child_process"
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs"
import { loadavg } from "node:os"
import { join } from "node:path"
import { performance } from "node:perf_hooks"
import { hashOf } from "../src/domain/GitObject.js"
import type { ObjectHash } from "../src/domain/ObjectHash.js"
import { layerFs } from "../src/services/FsStore.js"
import { importDirectory } from "../src/services/Importer.js"
import { layerMemory, ObjectStore, RefName, type StoredObject } from "../src/services/ObjectStore.js"
import { layerPg } from "../src/services/PgStore.js"
import { layerSqlite } from "../src/services/SqliteStore.js"
import { startCluster } from "../test/pg.js"
import { fetchNpmPackage, makeSmallFiles as smallFiles } from "./corpus.js"

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback
}
const base = arg("base", "/dev/shm")
const casCount = Number(arg("cas", "300"))
/** get and has are timed on this many objects (a fixed shuffled sample), one call at a time. */
const sampleSize = Number(arg("sample", "2000"))

type Store = Context.Tag.Service<typeof ObjectStore>

// ------------------------------------------------------------------------------------------------- corpora

const fetchTypescript = (into: string) => fetchNpmPackage("typescript@5.6.3", into)

const makeSmallFiles = (into: string) => smallFiles(into, "small")

// ------------------------------------------------------------------------------------------------- helpers

const time = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const start = performance.now()
    const value = yield* effect
    return { value, seconds: (performance.now() - start) / 1000 }
  })

const timeSync = <A>(f: () => A) => {
  const start = performance.now()
  const value = f()
  return { value, seconds: (performance.now() - start) / 1000 }
}

const fileSize = (path: string) => statSync(path, { throwIfNoEntry: false })?.size ?? 0
const du = (path: string) => Number(execFileSync("du", ["-sb", path]).toString().split("\t")[0])

const shuffled = <A>(xs: ReadonlyArray<A>) => {
  const out = [...xs]
  let x = 7
  for (let i = out.length - 1; i > 0; i--) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    const j = x % (i + 1)
    ;[out[i], out[j]] = [out[j]!, out[i]!]
  }
  return out
}

const absentHashes = (n: number) => Array.from({ length: n }, (_, i) => hashOf("blob", new TextEncoder().encode(`absent ${i}`)))
const chunks = <A>(xs: ReadonlyArray<A>, n: number) =>
  Array.from({ length: Math.ceil(xs.length / n) }, (_, i) => xs.slice(i * n, i * n + n))

const ref = Schema.decodeSync(RefName)

/** The successive values of the CAS ref: stored objects (git refuses a ref to a missing one), never twice in a row. */
const casValues = (hashes: ReadonlyArray<ObjectHash>) => Array.from({ length: casCount + 1 }, (_, i) => hashes[i % hashes.length]!)

interface Row {
  readonly backend: string
  readonly import: number
  readonly putMany: number
  readonly get: number
  readonly has: number
  readonly missing: number
  readonly cas: number
  readonly bytes: number
  readonly tree: string
}

// ------------------------------------------------------------------------------------------------- git

const benchGit = (corpus: string, scratch: string, hashes: ReadonlyArray<ObjectHash>): Row => {
  const gitDir = join(scratch, "git")
  execFileSync("git", ["init", "-q", "--bare", gitDir])
  const env = { ...process.env, GIT_DIR: gitDir, GIT_WORK_TREE: corpus, GIT_INDEX_FILE: join(scratch, "git-index") }
  const imported = timeSync(() => {
    execFileSync("git", ["add", "-A"], { env })
    return execFileSync("git", ["write-tree"], { env }).toString().trim()
  })
  const order = shuffled(hashes).slice(0, sampleSize)
  const input = order.join("\n") + "\n"
  const get = timeSync(() => execFileSync("git", ["cat-file", "--batch"], { env, input, maxBuffer: 2 ** 31 - 1 }))
  const withAbsent = input + absentHashes(order.length).join("\n") + "\n"
  const has = timeSync(() => execFileSync("git", ["cat-file", "--batch-check"], { env, input: withAbsent, maxBuffer: 2 ** 30 }))
  const values = casValues(hashes)
  let script = `start\ncreate refs/upm/bench ${values[0]}\ncommit\n`
  for (let i = 1; i <= casCount; i++) script += `start\nupdate refs/upm/bench ${values[i]} ${values[i - 1]}\ncommit\n`
  const cas = timeSync(() => execFileSync("git", ["update-ref", "--stdin"], { env, input: script }))
  return {
    backend: "git",
    import: hashes.length / imported.seconds,
    putMany: NaN,
    get: order.length / get.seconds,
    has: (2 * order.length) / has.seconds,
    missing: NaN,
    cas: casCount / cas.seconds,
    bytes: du(join(gitDir, "objects")),
    tree: imported.value
  }
}

// ------------------------------------------------------------------------------------------------- upm stores

/** A fresh, empty store of one backend, and how many bytes it takes on disk (0: not on disk). */
interface Fresh {
  readonly store: Store
  readonly size: () => number
}

const benchStore = <E>(
  backend: string,
  fresh: () => Effect.Effect<Fresh, E, Scope.Scope>,
  corpus: string,
  objects: ReadonlyArray<StoredObject>,
  hashes: ReadonlyArray<ObjectHash>
) =>
  Effect.scoped(Effect.gen(function* () {
    const { store, size } = yield* fresh()
    const imported = yield* time(importDirectory(corpus).pipe(Effect.provideService(ObjectStore, store)))
    const bytes = size()

    const order = shuffled(hashes).slice(0, sampleSize)
    const get = yield* time(Effect.forEach(order, (h) => store.get(h), { discard: true }))
    const probes = [...order, ...absentHashes(order.length)]
    const has = yield* time(Effect.forEach(probes, (h) => store.has(h), { discard: true }))
    const missing = yield* time(Effect.forEach(chunks(probes, 1000), (c) => store.missing(c), { discard: true }))

    const values = casValues(hashes)
    const name = ref("refs/upm/bench")
    yield* store.setRef(name, Option.none(), values[0]!)
    const cas = yield* time(Effect.forEach(values.slice(1), (v, i) => store.setRef(name, Option.some(values[i]!), v), { discard: true }))

    const { store: again } = yield* fresh()
    const putMany = yield* time(Effect.forEach(chunks(objects, 1000), (c) => again.putMany(c), { discard: true }))

    return {
      backend,
      import: hashes.length / imported.seconds,
      putMany: objects.length / putMany.seconds,
      get: order.length / get.seconds,
      has: probes.length / has.seconds,
      missing: probes.length / missing.seconds,
      cas: casCount / cas.seconds,
      bytes,
      tree: imported.value.tree
    } satisfies Row
  }))

const fmt = (n: number) => (Number.isNaN(n) ? "—" : n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(1))
const mb = (n: number) => (n / 1e6).toFixed(1)

const main = Effect.gen(function* () {
  const scratch = mkdtempSync(join(base, "upm-bench-stores-"))
  chmodSync(scratch, 0o755) // the PostgreSQL cluster inside runs as the postgres user when we are root
  yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(scratch, { recursive: true, force: true })))
  const cluster = yield* startCluster({ base: scratch })
  const corpora = [
    { name: "typescript@5.6.3", dir: fetchTypescript(scratch) },
    { name: "10,000 small files", dir: makeSmallFiles(scratch) }
  ]
  console.log(`stores on ${base}; node ${process.version}; ${casCount} CAS per backend; postgres ${cluster.binDir}`)

  let n = 0
  for (const corpus of corpora) {
    // The corpus as objects, for putMany and as the list of hashes every backend reads back.
    const memory = Context.get(yield* Layer.build(layerMemory), ObjectStore)
    const { tree } = yield* importDirectory(corpus.dir).pipe(Effect.provideService(ObjectStore, memory))
    const hashes = yield* memory.listObjects()
    const objects = yield* Effect.forEach(hashes, (h) => memory.get(h))
    const megabytes = objects.reduce((s, o) => s + o.body.length, 0) / 1e6
    console.log(`\n## ${corpus.name}: ${hashes.length} objects, ${megabytes.toFixed(1)} MB`)

    const git = benchGit(corpus.dir, join(scratch, `g${n++}`), hashes)
    if (git.tree !== tree) console.log(`!! git's tree ${git.tree} differs from upm's ${tree}`)
    const rows: Array<Row> = [git]
    const build = <E>(layer: Layer.Layer<ObjectStore, E, never>, size: () => number) =>
      Effect.map(Layer.build(layer), (context) => ({ store: Context.get(context, ObjectStore), size }))
    const next = (prefix: string) => join(scratch, `${prefix}${n++}`)
    rows.push(yield* benchStore("memory", () => build(layerMemory, () => 0), corpus.dir, objects, hashes))
    rows.push(yield* benchStore("fs", () => {
      const dir = next("fs")
      return build(layerFs(dir).pipe(Layer.provide(NodeContext.layer)), () => du(dir))
    }, corpus.dir, objects, hashes))
    rows.push(yield* benchStore("sqlite", () => {
      const file = next("sqlite")
      return build(layerSqlite(file).pipe(Layer.provide(NodeContext.layer)), () => fileSize(file) + fileSize(`${file}-wal`))
    }, corpus.dir, objects, hashes))
    rows.push(yield* benchStore("postgres", () =>
      Effect.gen(function* () {
        const db = `bench${n++}`
        const url = yield* cluster.createDatabase(db)
        const psql = (query: string) =>
          execFileSync(join(cluster.binDir, "psql"), ["-At", "-h", "127.0.0.1", "-p", String(cluster.port), "-U", "postgres", "-c", query, db])
            .toString().trim()
        return yield* build(layerPg({ url, maxConnections: 10 }), () => Number(psql("SELECT pg_total_relation_size('objects') + pg_total_relation_size('refs')")))
      }), corpus.dir, objects, hashes))

    console.log(`(rss ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB; load average ${loadavg().map((l) => l.toFixed(1)).join(" ")})`)
    for (const row of rows) if (row.backend !== "git" && row.tree !== tree) console.log(`!! ${row.backend} made tree ${row.tree}`)
    console.log("| backend | import obj/s | ×git | putMany obj/s | get obj/s | ×git | has/s | ×git | missing/s | CAS/s | ×git | size MB |")
    console.log("| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |")
    for (const r of rows) {
      const x = (a: number, b: number) => (r.backend === "git" ? "1" : (a / b).toFixed(2))
      console.log(`| ${r.backend} | ${fmt(r.import)} | ${x(r.import, git.import)} | ${fmt(r.putMany)} | ${fmt(r.get)} | ${x(r.get, git.get)} | ` +
        `${fmt(r.has)} | ${x(r.has, git.has)} | ${fmt(r.missing)} | ${fmt(r.cas)} | ${x(r.cas, git.cas)} | ${r.bytes === 0 ? "—" : mb(r.bytes)} |`)
    }
    const by = (name: string) => rows.find((r) => r.backend === name)!
    console.log(`\nsqlite import / fs import = ${(by("sqlite").import / by("fs").import).toFixed(2)}× (target ≥ 5×); ` +
      `putMany ${(by("sqlite").putMany / by("fs").putMany).toFixed(2)}×; ` +
      // no store imports faster than memory, which does no storage work: the bound of the import ratio
      `memory import / fs import = ${(by("memory").import / by("fs").import).toFixed(2)}×`)
    console.log(`postgres import / sqlite import = ${(by("postgres").import / by("sqlite").import).toFixed(2)}× (target ≥ 0.33×); ` +
      `putMany ${(by("postgres").putMany / by("sqlite").putMany).toFixed(2)}×`)
  }
})

// runMain: Ctrl-C interrupts, and the scope still stops the PostgreSQL cluster and removes the scratch directory.
Effect.scoped(main).pipe(Effect.provide(NodeContext.layer), NodeRuntime.runMain)
