/**
 * Import benchmark: the same trees into upm's fs store, upm's memory store, and a git repository with
 * `git add -A && git write-tree` (git writes loose objects too), measured in the same run, on tmpfs and on disk.
 *
 *   npx tsx bench/store.ts [--runs 3] [--bases /dev/shm,/tmp]
 *
 * Corpora: the unpacked `typescript@5.6.3` package (fetched with `npm pack` into a temp dir) and 10,000 small
 * seeded text files in nested folders. Every run starts from an empty store / empty git repository; the corpus
 * is copied onto the file system under test first (so reads are warm for both tools). Prints wall time (median of
 * the runs), files/s, MB/s and the ratio upm/git, and the load average (ratios are what to read on a shared
 * machine); checks that upm's tree hash equals git's.
 */
import { NodeContext } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { execFileSync } from "node:child_process"
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { loadavg } from "node:os"
import { join } from "node:path"
import { performance } from "node:perf_hooks"
import { layerFs } from "../src/services/FsStore.js"
import { importDirectory } from "../src/services/Importer.js"
import { layerMemory } from "../src/services/ObjectStore.js"
import { fetchNpmPackage, makeSmallFiles } from "./corpus.js"

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback
}
const runs = Number(arg("runs", "3"))
const bases = arg("bases", "/dev/shm,/tmp").split(",")

const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

// ------------------------------------------------------------------------------------------------- corpora

const fetchTypescript = (into: string) => fetchNpmPackage("typescript@5.6.3", into)

const makeSynthetic = (into: string) => makeSmallFiles(into, "synthetic")

// ------------------------------------------------------------------------------------------------- runners

const timeGit = (corpus: string, scratch: string) => {
  const gitDir = join(scratch, `git-${Math.random().toString(36).slice(2)}`)
  execFileSync("git", ["init", "-q", "--bare", gitDir])
  const env = { ...process.env, GIT_DIR: gitDir, GIT_WORK_TREE: corpus, GIT_INDEX_FILE: join(gitDir, "index") }
  const start = performance.now()
  execFileSync("git", ["add", "-A"], { cwd: corpus, env })
  const tree = execFileSync("git", ["write-tree"], { cwd: corpus, env }).toString().trim()
  const seconds = (performance.now() - start) / 1000
  rmSync(gitDir, { recursive: true, force: true })
  return { seconds, tree }
}

const timeUpm = async (corpus: string, store: "fs" | "memory", scratch: string) => {
  const root = join(scratch, `upm-${Math.random().toString(36).slice(2)}`)
  const layer = (store === "fs" ? layerFs(root) : layerMemory).pipe(Layer.provideMerge(NodeContext.layer))
  const program = Effect.gen(function* () {
    const start = performance.now()
    const result = yield* importDirectory(corpus)
    return { seconds: (performance.now() - start) / 1000, tree: result.tree, files: result.files, bytes: result.bytes }
  })
  const result = await Effect.runPromise(Effect.provide(program, layer))
  rmSync(root, { recursive: true, force: true })
  return result
}

// ------------------------------------------------------------------------------------------------- main

const main = async () => {
  const download = mkdtempSync("/tmp/upm-bench-dl-")
  const corpora = [
    { name: "typescript@5.6.3", dir: fetchTypescript(download) },
    { name: "10k small files", dir: makeSynthetic(download) }
  ]
  const load = () => loadavg().map((l) => l.toFixed(1)).join(" ")
  console.log(`upm store import bench: ${runs} run(s) each, median wall time; node ${process.version}; load average ${load()}`)
  console.log(execFileSync("git", ["--version"]).toString().trim())
  const rows: Array<Array<string>> = [["fs", "corpus", "files", "MB", "tool", "seconds", "files/s", "MB/s", "upm/git"]]
  for (const base of bases) {
    const scratch = mkdtempSync(join(base, "upm-bench-"))
    for (const corpus of corpora) {
      const local = join(scratch, "corpus")
      cpSync(corpus.dir, local, { recursive: true })
      const git: Array<number> = []
      const fs: Array<number> = []
      const memory: Array<number> = []
      let files = 0
      let bytes = 0
      for (let i = 0; i < runs; i++) {
        // alternate the order so neither tool always runs first
        const g0 = i % 2 === 0 ? timeGit(local, scratch) : undefined
        const f = await timeUpm(local, "fs", scratch)
        const m = await timeUpm(local, "memory", scratch)
        const g = g0 ?? timeGit(local, scratch)
        if (f.tree !== g.tree || m.tree !== g.tree) throw new Error(`tree mismatch: git ${g.tree}, upm fs ${f.tree}, memory ${m.tree}`)
        git.push(g.seconds)
        fs.push(f.seconds)
        memory.push(m.seconds)
        files = f.files
        bytes = f.bytes
      }
      const mb = bytes / 1e6
      const gitS = median(git)
      for (const [tool, seconds] of [["git", gitS], ["upm fs", median(fs)], ["upm memory", median(memory)]] as const) {
        rows.push([
          base, corpus.name, String(files), mb.toFixed(1), tool, seconds.toFixed(3),
          Math.round(files / seconds).toString(), (mb / seconds).toFixed(1),
          tool === "git" ? "1.00" : (seconds / gitS).toFixed(2)
        ])
      }
      rmSync(local, { recursive: true, force: true })
    }
    rmSync(scratch, { recursive: true, force: true })
  }
  rmSync(download, { recursive: true, force: true })
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)))
  for (const r of rows) console.log(r.map((cell, c) => cell.padEnd(widths[c]!)).join("  "))
  console.log(`load average at the end: ${load()}`)
}

main()
