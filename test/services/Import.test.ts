/** Importing directories: git's tree for the same files, ignore rules, manifest, and typed errors. */
import { NodeContext } from "@effect/platform-node"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { importDirectory } from "../../src/services/Importer.js"
import * as ObjectStore from "../../src/services/ObjectStore.js"
import { git } from "./ExportSnapshot.js"

const layer = ObjectStore.layerMemory.pipe(Layer.provideMerge(NodeContext.layer))
const root = mkdtempSync(join(tmpdir(), "upm-import-"))
let n = 0

/** Writes files (path → content; a `{ link }` makes a symlink, `{ exec }` an executable) into a fresh directory. */
const tree = (files: Record<string, string | { link: string } | { exec: string }>) => {
  const dir = join(root, `case-${n++}`)
  mkdirSync(dir)
  for (const [path, value] of Object.entries(files)) {
    const abs = join(dir, path)
    mkdirSync(dirname(abs), { recursive: true })
    if (typeof value === "string") writeFileSync(abs, value)
    else if ("link" in value) symlinkSync(value.link, abs)
    else {
      writeFileSync(abs, value.exec)
      chmodSync(abs, 0o755)
    }
  }
  return dir
}

/** git's tree for `dir` (with `.gitignore` files honoured), from a separate git dir so `dir` stays as it is. */
const gitTree = (dir: string) => {
  const gitDir = `${dir}.git`
  git(root, "init", "-q", "--bare", gitDir)
  git(dir, "--git-dir", gitDir, "--work-tree", dir, "add", "-A")
  return git(dir, "--git-dir", gitDir, "--work-tree", dir, "write-tree").trim()
}

/** The paths of the files in the imported tree, from git's point of view. */
const paths = (dir: string) => {
  const gitDir = `${dir}.git`
  return git(dir, "--git-dir", gitDir, "--work-tree", dir, "ls-files").trim().split("\n").filter((l) => l !== "")
}

describe("Importer", () => {
  afterAll(() => rmSync(root, { recursive: true, force: true }))

  it.effect("gives git's tree: exec bits, symlinks (never followed), nesting, empty dirs and .git skipped", () =>
    Effect.gen(function* () {
      const dir = tree({
        "a.txt": "a\n",
        "bin/run": { exec: "#!/bin/sh\n" },
        "link-to-dir": { link: "bin" },
        "dangling": { link: "does/not/exist" },
        "outside": { link: "/etc/passwd" },
        "deep/er/x": "x\n",
        "a-b": "sorts between a and a/\n",
        "a/x": "x\n"
      })
      mkdirSync(join(dir, "empty", "nested"), { recursive: true })
      const expected = gitTree(dir) // before .git exists in dir: git's own dir is elsewhere
      mkdirSync(join(dir, ".git"))
      writeFileSync(join(dir, ".git", "HEAD"), "ref: refs/heads/main\n")
      const result = yield* importDirectory(dir)
      assert.strictEqual(result.tree, expected)
      assert.strictEqual(result.files, 8)
      assert.isTrue(Option.isNone(result.manifest))
    }).pipe(Effect.provide(layer)))

  it.effect(".upmignore follows gitignore rules: same tree as git with the same patterns in .gitignore", () =>
    Effect.gen(function* () {
      const rules = "*.log\nbuild/\n!keep.log\n/root-only.txt\ndocs/**/draft-*\n"
      const nested = "*.tmp\n!important.tmp\n"
      const dir = tree({
        ".upmignore": rules,
        ".gitignore": rules,
        "src/.upmignore": nested,
        "src/.gitignore": nested,
        "a.log": "ignored",
        "keep.log": "re-included",
        "build/out.js": "ignored dir",
        "src/build/x": "ignored dir at any depth",
        "root-only.txt": "ignored at the root only",
        "src/root-only.txt": "kept",
        "docs/a/b/draft-1.md": "ignored",
        "docs/a/b/final.md": "kept",
        "src/x.tmp": "ignored by the nested file",
        "src/important.tmp": "re-included by the nested file",
        "x.tmp": "kept: the nested rule does not apply here",
        "index.js": "kept"
      })
      const expected = gitTree(dir)
      assert.deepStrictEqual(paths(dir), [
        ".gitignore", ".upmignore", "docs/a/b/final.md", "index.js", "keep.log", "src/.gitignore", "src/.upmignore",
        "src/important.tmp", "src/root-only.txt", "x.tmp"
      ])
      assert.strictEqual((yield* importDirectory(dir)).tree, expected)
    }).pipe(Effect.provide(layer)))

  it.effect("upm.json: decoded and returned; its ignore applies; its files selects, and upm.json is always kept", () =>
    Effect.gen(function* () {
      const manifest = { name: "alice/pkg", version: "1.0.0", files: ["lib/", "README.md"], ignore: ["*.map"] }
      const dir = tree({
        "upm.json": JSON.stringify(manifest),
        "README.md": "kept by files",
        "lib/index.js": "kept",
        "lib/index.js.map": "ignored",
        "test/x.test.js": "not in files",
        "notes.txt": "not in files"
      })
      const result = yield* importDirectory(dir)
      assert.strictEqual(Option.getOrThrow(result.manifest).name, "alice/pkg")
      const expected = tree({
        "upm.json": JSON.stringify(manifest),
        "README.md": "kept by files",
        "lib/index.js": "kept"
      })
      assert.strictEqual(result.tree, gitTree(expected))
      assert.strictEqual(result.files, 3)
      // options.ignore adds to the manifest's
      const less = yield* importDirectory(dir, { ignore: ["README.md"] })
      assert.strictEqual(less.files, 2)
    }).pipe(Effect.provide(layer)))

  it.effect("typed errors: not a directory, a bad manifest (naming the field), a file over the limit", () =>
    Effect.gen(function* () {
      const dir = tree({ "upm.json": JSON.stringify({ name: "Not Valid", version: "1.0" }), "f": "12345" })
      const bad = yield* Effect.flip(importDirectory(dir))
      assert.strictEqual(bad._tag === "ImportError" ? bad.reason : bad._tag, "BadManifest")
      assert.include(bad._tag === "ImportError" ? bad.detail : "", "name")
      symlinkSync(dir, `${dir}-link`)
      const viaLink = yield* Effect.flip(importDirectory(`${dir}-link`))
      assert.strictEqual(viaLink._tag === "ImportError" ? viaLink.reason : viaLink._tag, "BadManifest", "a symlinked root is followed")
      const notDir = yield* Effect.flip(importDirectory(join(dir, "f")))
      assert.strictEqual(notDir._tag === "ImportError" ? notDir.reason : notDir._tag, "NotADirectory")
      const missing = yield* Effect.flip(importDirectory(join(dir, "nope")))
      assert.strictEqual(missing._tag === "ImportError" ? missing.reason : missing._tag, "Unreadable")
      const big = tree({ "small": "1", "big": "123456789" })
      const tooLarge = yield* Effect.flip(importDirectory(big, { maxFileSize: 4 }))
      assert.strictEqual(tooLarge._tag === "ImportError" ? tooLarge.path : tooLarge._tag, "big")
      const many = yield* Effect.flip(importDirectory(big, { maxFiles: 1 }))
      assert.strictEqual(many._tag === "ImportError" ? many.reason : many._tag, "TooLarge")
    }).pipe(Effect.provide(layer)))

  it.effect("an empty directory is the empty tree, as git write-tree gives for an empty index", () =>
    Effect.gen(function* () {
      const dir = tree({})
      assert.strictEqual((yield* importDirectory(dir)).tree, "4b825dc642cb6eb9a060e54bf8d69288fbee4904")
    }).pipe(Effect.provide(layer)))
})
