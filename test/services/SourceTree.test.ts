/** The source walkers: node:fs (the default) and the platform FileSystem one agree, and both bound what they read. */
import { NodeContext } from "@effect/platform-node"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import { execFileSync } from "node:child_process"
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { importDirectory } from "../../src/services/Importer.js"
import * as ObjectStore from "../../src/services/ObjectStore.js"
import * as SourceTree from "../../src/services/SourceTree.js"
import { git } from "./ExportSnapshot.js"

const root = mkdtempSync(join(tmpdir(), "upm-sourcetree-"))
let n = 0

/** git's tree for `dir`, from a separate git dir. */
const gitTree = (dir: string) => {
  const gitDir = `${dir}.git`
  git(root, "init", "-q", "--bare", gitDir)
  git(dir, "--git-dir", gitDir, "--work-tree", dir, "add", "-A")
  return git(dir, "--git-dir", gitDir, "--work-tree", dir, "write-tree").trim()
}

/** A directory with one of each kind: file, executable, symlink (dangling, non-UTF-8 target), directory, FIFO. */
const sample = () => {
  const dir = join(root, `case-${n++}`)
  mkdirSync(join(dir, "sub"), { recursive: true })
  writeFileSync(join(dir, "plain.txt"), "plain\n")
  writeFileSync(join(dir, "run.sh"), "#!/bin/sh\n")
  chmodSync(join(dir, "run.sh"), 0o755)
  writeFileSync(join(dir, "sub", "x"), "x\n")
  symlinkSync("sub/x", join(dir, "link"))
  symlinkSync(Buffer.from([0x6e, 0xff, 0x6f]), join(dir, "odd-link")) // "n\xffo": not UTF-8
  execFileSync("mkfifo", [join(dir, "pipe")])
  return dir
}

const walkers = [
  ["node:fs", SourceTree.layer],
  ["platform FileSystem", SourceTree.layerPlatform.pipe(Layer.provide(NodeContext.layer))]
] as const

describe("SourceTree", () => {
  afterAll(() => rmSync(root, { recursive: true, force: true }))

  for (const [name, layer] of walkers) {
    it.effect(`${name}: lists kinds without following links, reads files, exec bits and link text as bytes`, () =>
      Effect.gen(function* () {
        const tree = yield* SourceTree.SourceTree
        const dir = sample()
        assert.strictEqual(yield* tree.stat(dir), "directory")
        const listed = [...(yield* tree.list(dir))].sort((a, b) => (a.name < b.name ? -1 : 1))
        assert.deepStrictEqual(listed, [
          { name: "link", kind: "symlink" },
          { name: "odd-link", kind: "symlink" },
          { name: "pipe", kind: "other" },
          { name: "plain.txt", kind: "file" },
          { name: "run.sh", kind: "file" },
          { name: "sub", kind: "directory" }
        ])
        const leaves = yield* tree.readLeaves([
          { path: join(dir, "plain.txt"), kind: "file" },
          { path: join(dir, "run.sh"), kind: "file" },
          { path: join(dir, "link"), kind: "symlink" },
          { path: join(dir, "odd-link"), kind: "symlink" }
        ], { maxFileSize: 1024, maxBytes: 1 << 20 })
        const hex = (s: string) => Buffer.from(s).toString("hex")
        // the platform FileSystem reads link text as a string: only the node:fs walker keeps bytes that are not UTF-8
        assert.deepStrictEqual(
          leaves.map((l) =>
            l.kind === "file" ? [l.kind, l.executable, hex(Buffer.from(l.content).toString())]
            : l.kind === "symlink" ? [l.kind, Buffer.from(l.target).toString("hex")]
            : [l.kind]),
          [
            ["file", false, hex("plain\n")],
            ["file", true, hex("#!/bin/sh\n")],
            ["symlink", hex("sub/x")],
            ["symlink", name === "node:fs" ? "6eff6f" : hex("n\ufffdo")]
          ]
        )
        assert.deepStrictEqual(yield* tree.readText(join(dir, "plain.txt"), 100), Option.some("plain\n"))
        assert.deepStrictEqual(yield* tree.readText(join(dir, "absent"), 100), Option.none())
      }).pipe(Effect.provide(layer)))

    it.effect(`${name}: batches stop at maxBytes; too large, missing and not-a-directory are typed errors`, () =>
      Effect.gen(function* () {
        const tree = yield* SourceTree.SourceTree
        const dir = join(root, `case-${n++}`)
        mkdirSync(dir)
        const files = Array.from({ length: 40 }, (_, i) => {
          writeFileSync(join(dir, `f${i}`), "0123456789")
          return { path: join(dir, `f${i}`), kind: "file" as const }
        })
        const first = yield* tree.readLeaves(files, { maxFileSize: 100, maxBytes: 25 })
        assert.isAtLeast(first.length, 3, "reads until the bytes reach maxBytes")
        assert.isBelow(first.length, files.length, "and stops there")
        assert.strictEqual((yield* tree.readLeaves(files, { maxFileSize: 100, maxBytes: 1 })).length >= 1, true)
        const big = yield* Effect.flip(tree.readLeaves(files, { maxFileSize: 5, maxBytes: 1000 }))
        assert.deepStrictEqual([big.reason, big.path], ["TooLarge", files[0]!.path])
        const gone = yield* Effect.flip(tree.readLeaves([{ path: join(dir, "nope"), kind: "file" }], { maxFileSize: 5, maxBytes: 5 }))
        assert.strictEqual(gone.reason, "NotFound")
        assert.strictEqual((yield* Effect.flip(tree.list(join(dir, "nope")))).reason, "NotFound")
        assert.strictEqual(yield* tree.stat(files[0]!.path), "file")
        assert.strictEqual((yield* Effect.flip(tree.readText(join(dir, "f1"), 4))).reason, "TooLarge")
      }).pipe(Effect.provide(layer)))

    it.effect(`${name}: the Importer gives git's tree through it`, () =>
      Effect.gen(function* () {
        const dir = join(root, `case-${n++}`)
        mkdirSync(join(dir, "sub", "deeper"), { recursive: true })
        mkdirSync(join(dir, "empty"))
        writeFileSync(join(dir, "plain.txt"), "plain\n")
        writeFileSync(join(dir, "run.sh"), "#!/bin/sh\n")
        chmodSync(join(dir, "run.sh"), 0o755)
        writeFileSync(join(dir, "sub", "deeper", "x"), "x\n")
        writeFileSync(join(dir, "sub", "skip.log"), "ignored\n")
        symlinkSync("sub/deeper", join(dir, "link"))
        symlinkSync("../nowhere", join(dir, "dangling"))
        for (const ignoreFile of [".upmignore", ".gitignore"]) writeFileSync(join(dir, ignoreFile), "*.log\n")
        if (name === "node:fs") symlinkSync(Buffer.from([0x6e, 0xff, 0x6f]), join(dir, "odd-link")) // git keeps the bytes
        const result = yield* importDirectory(dir).pipe(Effect.provide(layer))
        assert.strictEqual(result.tree, gitTree(dir))
        assert.strictEqual(result.files, name === "node:fs" ? 8 : 7)
      }).pipe(Effect.provide(ObjectStore.layerMemory.pipe(Layer.provideMerge(NodeContext.layer)))))
  }

  it.effect("node:fs: a listed file that became a symlink is read as the symlink, never followed; a FIFO is skipped", () =>
    Effect.gen(function* () {
      const tree = yield* SourceTree.SourceTree
      const dir = join(root, `case-${n++}`)
      mkdirSync(dir)
      writeFileSync(join(dir, "secret"), "not to be read through a link\n")
      symlinkSync("secret", join(dir, "was-a-file"))
      execFileSync("mkfifo", [join(dir, "was-a-file-too")])
      const leaves = yield* tree.readLeaves([
        { path: join(dir, "was-a-file"), kind: "file" },
        { path: join(dir, "was-a-file-too"), kind: "file" }
      ], { maxFileSize: 1000, maxBytes: 1000 })
      assert.deepStrictEqual(leaves.map((l) => l.kind === "symlink" ? Buffer.from(l.target).toString() : l.kind), ["secret", "other"])
      unlinkSync(join(dir, "was-a-file-too"))
    }).pipe(Effect.provide(SourceTree.layer)))
})
