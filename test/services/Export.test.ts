/** Exporting trees safely: hostile trees are refused before anything is written, and nothing is half-written. */
import { NodeContext } from "@effect/platform-node"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Chunk, Effect, Layer, Stream } from "effect"
import { execFileSync } from "node:child_process"
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import yauzl from "yauzl"
import { encodeTree, type TreeEntry } from "../../src/domain/GitObject.js"
import { ObjectHash } from "../../src/domain/ObjectHash.js"
import { exportTarGz, exportTree, exportZip, unsafeTarget } from "../../src/services/Exporter.js"
import * as ObjectStore from "../../src/services/ObjectStore.js"
import { snapshot } from "./ExportSnapshot.js"

const layer = ObjectStore.layerMemory.pipe(Layer.provideMerge(NodeContext.layer))
const text = (s: string) => new TextEncoder().encode(s)

/** A tree description: a string is a file, { exec } an executable, { link } a symlink, an object a directory. */
type Spec = { readonly [name: string]: string | { readonly exec: string } | { readonly link: string } | Spec }

const put = (spec: Spec): Effect.Effect<ObjectHash, ObjectStore.StoreError, ObjectStore.ObjectStore> =>
  Effect.gen(function* () {
    const store = yield* ObjectStore.ObjectStore
    const entries: Array<TreeEntry> = []
    for (const [name, value] of Object.entries(spec)) {
      if (typeof value === "string") entries.push({ mode: "100644", name, hash: yield* store.put("blob", text(value)) })
      else if ("exec" in value && typeof value.exec === "string") entries.push({ mode: "100755", name, hash: yield* store.put("blob", text(value.exec)) })
      else if ("link" in value && typeof value.link === "string") entries.push({ mode: "120000", name, hash: yield* store.put("blob", text(value.link)) })
      else entries.push({ mode: "40000", name, hash: yield* put(value as Spec) })
    }
    return yield* store.put("tree", encodeTree(entries))
  })

/** A tree with one raw entry, bypassing every check encodeTree's callers would make. */
const rawTree = (mode: string, name: string, hash: ObjectHash) =>
  Effect.flatMap(ObjectStore.ObjectStore, (store) =>
    store.put("tree", Buffer.concat([Buffer.from(`${mode} ${name}\0`), Buffer.from(hash, "hex")])))

const root = mkdtempSync(join(tmpdir(), "upm-export-"))
let n = 0
/** A fresh parent directory, and the target path inside it. */
const fresh = () => {
  const parent = join(root, `case-${n++}`)
  mkdirSync(parent)
  return { parent, target: join(parent, "out") }
}

const failure = <A, E extends { readonly _tag: string }, R>(effect: Effect.Effect<A, E, R>) => Effect.flip(effect)

describe("Exporter", () => {
  afterAll(() => rmSync(root, { recursive: true, force: true }))

  it.effect("exports files, modes, nested directories and in-tree symlinks", () =>
    Effect.gen(function* () {
      const tree = yield* put({
        "README.md": "hello\n",
        bin: { run: { exec: "#!/bin/sh\necho hi\n" }, "readme": { link: "../README.md" } },
        lib: { deep: { "x.js": "x\n" } },
        here: { link: "lib/deep" }
      })
      const { target } = fresh()
      const result = yield* exportTree(tree, target)
      assert.deepStrictEqual(result, { files: 3, symlinks: 2, directories: 3, bytes: 6 + 18 + 2 })
      assert.deepStrictEqual(snapshot(target).map((e) => `${e.kind} ${e.path}`), [
        "file README.md", "directory bin", "symlink bin/readme", "exec bin/run", "symlink here", "directory lib",
        "directory lib/deep", "file lib/deep/x.js"
      ])
      assert.strictEqual(readlinkSync(join(target, "here")), "lib/deep")
      assert.strictEqual(readFileSync(join(target, "bin", "readme"), "utf8"), "hello\n")
    }).pipe(Effect.provide(layer)))

  const hostile: Array<[string, Effect.Effect<ObjectHash, unknown, ObjectStore.ObjectStore>, string, string]> = [
    ["a symlink out of the tree", put({ ok: "fine", evil: { link: "../../../../etc" } }), "UnsafeSymlink", "evil"],
    ["a nested symlink climbing out", put({ a: { b: { up: { link: "../../../x" } } } }), "UnsafeSymlink", "a/b/up"],
    ["an absolute symlink", put({ passwd: { link: "/etc/passwd" } }), "UnsafeSymlink", "passwd"],
    ["a symlink through another symlink", put({ s: { link: "." }, t: { link: "s/../x" } }), "UnsafeSymlink", "t"],
    ["a symlink into .git", put({ g: { link: ".git/config" } }), "UnsafeSymlink", "g"],
    ["a symlink and a directory that a case-insensitive disk merges", put({ Link: { link: "." }, link: { x: "below the symlink" } }), "NameCollision", "link"],
    ["a file under a symlink's name in other case", put({ A: { link: "/tmp" }, a: "x" }), "NameCollision", "a"]
  ]
  for (const [what, make, reason, path] of hostile) {
    it.effect(`refuses ${what}, naming the entry, writing nothing`, () =>
      Effect.gen(function* () {
        const tree = yield* make
        const { parent, target } = fresh()
        const error = yield* failure(exportTree(tree, target))
        assert.strictEqual(error._tag, "ExportError")
        if (error._tag !== "ExportError") return
        assert.strictEqual(error.reason, reason)
        assert.strictEqual(error.path, path)
        assert.deepStrictEqual(readdirSync(parent), [])
        const tar = yield* failure(Stream.runDrain(exportTarGz(tree)))
        assert.strictEqual(tar._tag === "ExportError" ? tar.reason : tar._tag, reason)
        const zip = yield* failure(Stream.runDrain(exportZip(tree)))
        assert.strictEqual(zip._tag === "ExportError" ? zip.reason : zip._tag, reason)
      }).pipe(Effect.provide(layer)))
  }

  const raw: Array<[string, string, string]> = [
    ["100644", "..", "BadEntry"],
    ["100644", ".git", "BadEntry"],
    ["40000", ".GIT", "BadEntry"],
    ["100644", "a/b", "BadEntry"],
    ["160000", "submodule", "BadEntry"],
    ["100664", "odd-mode", "BadEntry"]
  ]
  for (const [mode, name, reason] of raw) {
    it.effect(`refuses a crafted entry ${mode} "${name}"`, () =>
      Effect.gen(function* () {
        const store = yield* ObjectStore.ObjectStore
        const blob = yield* store.put("blob", text("payload"))
        const inner = yield* rawTree(mode, name, blob)
        const outer = yield* store.put("tree", encodeTree([{ mode: "40000", name: "pkg", hash: inner }]))
        const { parent, target } = fresh()
        const error = yield* failure(exportTree(outer, target))
        assert.strictEqual(error._tag === "ExportError" ? error.reason : error._tag, reason)
        assert.strictEqual(error._tag === "ExportError" ? error.path : "", "pkg")
        assert.deepStrictEqual(readdirSync(parent), [])
      }).pipe(Effect.provide(layer)))
  }

  it.effect("an entry whose object has the wrong type, or is missing, fails and leaves nothing behind", () =>
    Effect.gen(function* () {
      const store = yield* ObjectStore.ObjectStore
      const blob = yield* store.put("blob", text("not a tree"))
      const sub = yield* put({ x: "x" })
      const dirIsBlob = yield* store.put("tree", encodeTree([{ mode: "40000", name: "d", hash: blob }]))
      const fileIsTree = yield* store.put("tree", encodeTree([
        { mode: "100644", name: "a", hash: blob },
        { mode: "100644", name: "f", hash: sub }
      ]))
      const absent = yield* store.put("tree", encodeTree([
        { mode: "100644", name: "a", hash: blob },
        { mode: "100644", name: "gone", hash: ObjectHash.make("0".repeat(40)) }
      ]))
      for (const [tree, expected] of [[dirIsBlob, "TypeMismatch"], [fileIsTree, "TypeMismatch"], [absent, "ObjectNotFound"]] as const) {
        const { parent, target } = fresh()
        const error = yield* failure(exportTree(tree, target))
        assert.strictEqual(error._tag === "ExportError" ? error.reason : error._tag, expected)
        assert.deepStrictEqual(readdirSync(parent), [], "the temp directory is removed")
      }
    }).pipe(Effect.provide(layer)))

  it.effect("never writes through an existing target, a symlink included; overwrite replaces it whole", () =>
    Effect.gen(function* () {
      const tree = yield* put({ "a.txt": "new\n" })
      const { parent, target } = fresh()
      const outside = join(parent, "outside")
      mkdirSync(outside)
      symlinkSync(outside, target)
      const error = yield* failure(exportTree(tree, target))
      assert.strictEqual(error._tag === "ExportError" ? error.reason : error._tag, "TargetExists")
      yield* exportTree(tree, target, { overwrite: true })
      assert.deepStrictEqual(readdirSync(outside), [], "nothing went through the symlink")
      assert.isTrue(lstatSync(target).isDirectory())
      assert.strictEqual(readFileSync(join(target, "a.txt"), "utf8"), "new\n")
      // overwrite an existing directory: old content gone, no leftovers beside it
      writeFileSync(join(target, "stale"), "old")
      yield* exportTree(tree, target, { overwrite: true })
      assert.deepStrictEqual(readdirSync(target), ["a.txt"])
      assert.deepStrictEqual(readdirSync(parent).sort(), ["out", "outside"])
    }).pipe(Effect.provide(layer)))

  it.effect("tar.gz: what tar extracts equals the directory export", () =>
    Effect.gen(function* () {
      const tree = yield* put({ "a.txt": "a\n", bin: { x: { exec: "#!/bin/sh\n" } }, l: { link: "a.txt" } })
      const { parent, target } = fresh()
      yield* exportTree(tree, target)
      const bytes = Buffer.concat(Chunk.toArray(yield* Stream.runCollect(exportTarGz(tree, { prefix: "pkg" }))))
      execFileSync("tar", ["-xz", "-C", parent], { input: bytes })
      assert.deepStrictEqual(snapshot(join(parent, "pkg")), snapshot(target))
    }).pipe(Effect.provide(layer)))

  it.effect("zip: entries, Unix modes and symlinks as yauzl reads them", () =>
    Effect.gen(function* () {
      const tree = yield* put({ "a.txt": "a\n", bin: { x: { exec: "#!/bin/sh\n" } }, l: { link: "a.txt" } })
      const bytes = Buffer.concat(Chunk.toArray(yield* Stream.runCollect(exportZip(tree, { prefix: "pkg/" }))))
      const entries = yield* Effect.async<Array<{ name: string; mode: number; content: string }>, Error>((resume) => {
        yauzl.fromBuffer(bytes, { lazyEntries: true }, (error, zip) => {
          if (error || !zip) return resume(Effect.fail(error ?? new Error("no zip")))
          const out: Array<{ name: string; mode: number; content: string }> = []
          zip.on("entry", (entry: yauzl.Entry) => {
            const mode = entry.externalFileAttributes >>> 16
            if (entry.fileName.endsWith("/")) {
              out.push({ name: entry.fileName, mode, content: "" })
              return zip.readEntry()
            }
            zip.openReadStream(entry, (e, stream) => {
              if (e || !stream) return resume(Effect.fail(e ?? new Error("no stream")))
              const chunks: Array<Buffer> = []
              stream.on("data", (c: Buffer) => chunks.push(c))
              stream.on("end", () => {
                out.push({ name: entry.fileName, mode, content: Buffer.concat(chunks).toString() })
                zip.readEntry()
              })
            })
          })
          zip.on("end", () => resume(Effect.succeed(out)))
          zip.readEntry()
        })
      })
      assert.deepStrictEqual(entries.map((e) => [e.name, e.mode.toString(8), e.content]), [
        ["pkg/a.txt", "100644", "a\n"],
        ["pkg/bin/", "40755", ""],
        ["pkg/l", "120777", "a.txt"],
        ["pkg/bin/x", "100755", "#!/bin/sh\n"]
      ])
    }).pipe(Effect.provide(layer)))

  it("unsafeTarget resolves component by component", () => {
    const links = new Set(["s", "d/s"])
    assert.isUndefined(unsafeTarget("a", "b", links))
    assert.isUndefined(unsafeTarget("d/e/a", "../../b/./c", links))
    assert.isUndefined(unsafeTarget("a", "s", links)) // ends at a symlink: that one is checked on its own
    assert.include(unsafeTarget("d/a", "../..", links) ?? "", "leaves")
    assert.include(unsafeTarget("a", "s/x", links) ?? "", "passes through")
    assert.include(unsafeTarget("a", "d/s/..", links) ?? "", "passes through")
    assert.include(unsafeTarget("a", "C:/x", links) ?? "", "absolute")
    assert.include(unsafeTarget("a", "x\\..\\..", links) ?? "", "absolute")
    assert.include(unsafeTarget("a", "", links) ?? "", "empty")
    assert.isFalse(existsSync(join(root, "never")))
  })
})
