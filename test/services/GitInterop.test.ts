/**
 * upm and real git agree: on tree hashes of a real package, on the repository upm writes (fsck, cat-file,
 * for-each-ref, archive), and on tags either side makes.
 */
import { NodeContext } from "@effect/platform-node"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Chunk, Effect, Layer, Option, Schema, Stream } from "effect"
import { execFileSync } from "node:child_process"
import { chmodSync, cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { encodeTag, hashOf } from "../../src/domain/GitObject.js"
import { ObjectHash } from "../../src/domain/ObjectHash.js"
import { exportTarGz, exportTree } from "../../src/services/Exporter.js"
import { layerFs } from "../../src/services/FsStore.js"
import { importDirectory } from "../../src/services/Importer.js"
import * as ObjectStore from "../../src/services/ObjectStore.js"
import { git, snapshot } from "./ExportSnapshot.js"

const FIXTURE = join(import.meta.dirname, "..", "fixtures", "is-number-7.0.0")
const ref = Schema.decodeSync(ObjectStore.RefName)

/** The fixture plus what a package may also hold: an executable, a symlink, nesting, an empty directory. */
const makePackage = (root: string) => {
  const dir = join(root, "pkg")
  cpSync(FIXTURE, dir, { recursive: true })
  mkdirSync(join(dir, "bin"))
  writeFileSync(join(dir, "bin", "is-number"), "#!/usr/bin/env node\nconsole.log(require('..')(process.argv[2]))\n")
  chmodSync(join(dir, "bin", "is-number"), 0o755)
  symlinkSync("README.md", join(dir, "README"))
  symlinkSync("../index.js", join(dir, "bin", "index.js"))
  mkdirSync(join(dir, "lib", "deep", "er"), { recursive: true })
  writeFileSync(join(dir, "lib", "deep", "er", "x.txt"), "deep\n")
  writeFileSync(join(dir, "lib", "a-b"), "sorts between lib/a and lib/a/ in git's order\n")
  mkdirSync(join(dir, "lib", "a"))
  writeFileSync(join(dir, "lib", "a", "x"), "x\n")
  mkdirSync(join(dir, "empty", "nested"), { recursive: true }) // git records no empty directories
  return dir
}

describe("git interop", () => {
  const root = mkdtempSync(join(tmpdir(), "upm-interop-"))
  const pkg = makePackage(root)
  const storeDir = join(root, "store.git")
  const layer = layerFs(storeDir).pipe(Layer.provideMerge(NodeContext.layer))
  // git's own view of the same directory: a work tree whose index holds everything
  git(pkg, "init", "-q")
  git(pkg, "add", "-A")
  const gitTree = git(pkg, "write-tree").trim()
  const release = ref("refs/tags/alice/is-number/v7.0.0")
  const tagBodyOf = (tree: ObjectHash) =>
    encodeTag({
      object: tree,
      type: "tree",
      tag: "alice/is-number/v7.0.0",
      tagger: "Alice Example <alice@example.com> 1700000000 +0100",
      message: "is-number 7.0.0\n",
      signature: undefined
    })
  /** Imports the package and seals its release tag, as publish will (idempotent). */
  const publish = Effect.gen(function* () {
    const store = yield* ObjectStore.ObjectStore
    const { tree } = yield* importDirectory(pkg)
    const tag = yield* store.put("tag", tagBodyOf(tree))
    yield* ObjectStore.sealRef(release, tag)
    return { tree, tag }
  })

  it.effect("imports the package to the tree hash git writes for it", () =>
    Effect.gen(function* () {
      const imported = yield* importDirectory(pkg)
      assert.strictEqual(imported.tree, gitTree)
      assert.strictEqual(imported.files, 10)
      // the plain fixture, unchanged, too
      const plain = join(root, "plain")
      cpSync(FIXTURE, plain, { recursive: true })
      git(plain, "init", "-q")
      git(plain, "add", "-A")
      assert.strictEqual((yield* importDirectory(plain)).tree, git(plain, "write-tree").trim())
    }).pipe(Effect.provide(layer)))

  it.effect("writes a repository git reads: cat-file shows what upm wrote, fsck --strict finds nothing", () =>
    Effect.gen(function* () {
      const { tree, tag } = yield* publish
      const tagBody = tagBodyOf(tree)

      const gitDir = ["--git-dir", storeDir]
      assert.strictEqual(git(root, ...gitDir, "cat-file", "-t", tree).trim(), "tree")
      const listing = git(root, ...gitDir, "cat-file", "-p", tree)
      assert.match(git(root, ...gitDir, "ls-tree", "-r", tree), /100755 blob [0-9a-f]{40}\tbin\/is-number\n/)
      assert.match(listing, /120000 blob [0-9a-f]{40}\tREADME\n/)
      assert.match(listing, /040000 tree [0-9a-f]{40}\tlib\n/)
      const indexHash = hashOf("blob", new Uint8Array(execFileSync("cat", [join(pkg, "index.js")])))
      assert.strictEqual(git(root, ...gitDir, "cat-file", "-p", indexHash), execFileSync("cat", [join(pkg, "index.js")]).toString())
      assert.strictEqual(git(root, ...gitDir, "cat-file", "-p", tag), Buffer.from(tagBody).toString())
      assert.strictEqual(
        git(root, ...gitDir, "for-each-ref", "--format=%(refname) %(objecttype) %(objectname) %(*objecttype) %(*objectname) %(taggername)", "refs/tags"),
        `refs/tags/alice/is-number/v7.0.0 tag ${tag} tree ${tree} Alice Example\n`
      )
      // (--no-dangling: the first test imported the bare fixture too, a tree no ref reaches; that's not an error)
      const fsck = execFileSync("git", ["--git-dir", storeDir, "fsck", "--strict", "--no-dangling", "--no-progress"], { stdio: ["ignore", "pipe", "pipe"] })
      assert.strictEqual(fsck.toString(), "")
      // and git's own checkout of that tree holds exactly the package
      assert.strictEqual(git(root, ...gitDir, "rev-parse", "alice/is-number/v7.0.0^{tree}").trim(), tree)
    }).pipe(Effect.provide(layer)))

  it.effect("reads a tag made by git tag -a in that repository, packed or loose", () =>
    Effect.gen(function* () {
      const store = yield* ObjectStore.ObjectStore
      const { tree } = yield* publish
      git(root, "--git-dir", storeDir, "tag", "-a", "-m", "made by git\n\nwith a body", "bob/by-git/v1.0.0", tree)
      const name = ref("refs/tags/bob/by-git/v1.0.0")
      const hash = Option.getOrThrow(yield* store.readRef(name))
      assert.strictEqual(hash, git(root, "--git-dir", storeDir, "rev-parse", "bob/by-git/v1.0.0").trim())
      const object = yield* ObjectStore.getDecoded(hash)
      assert.strictEqual(object.type, "tag")
      if (object.type !== "tag") return
      assert.strictEqual(object.tag.object, tree)
      assert.strictEqual(object.tag.type, "tree")
      assert.strictEqual(object.tag.tag, "bob/by-git/v1.0.0")
      assert.match(object.tag.tagger ?? "", /^upm test <test@upm\.invalid> \d+ [+-]\d{4}$/)
      assert.strictEqual(object.tag.message, "made by git\n\nwith a body\n")
      assert.deepStrictEqual(yield* ObjectStore.missingReachable(hash), [])

      // after git pack-refs the refs live in packed-refs: upm still lists and reads them, and a loose update wins
      git(root, "--git-dir", storeDir, "pack-refs", "--all")
      assert.deepStrictEqual(
        (yield* store.listRefs("refs/tags/")).map((r) => r.name),
        ["refs/tags/alice/is-number/v7.0.0", "refs/tags/bob/by-git/v1.0.0"]
      )
      assert.deepStrictEqual(yield* store.readRef(name), Option.some(hash))
      const conflict = yield* Effect.flip(store.setRef(name, Option.none(), tree))
      assert.strictEqual(conflict._tag, "RefConflict")
      const scratch = ref("refs/upm/scratch")
      yield* store.setRef(scratch, Option.none(), tree)
      git(root, "--git-dir", storeDir, "pack-refs", "--all")
      yield* store.deleteRef(scratch, tree) // removes it from packed-refs too
      assert.isTrue(Option.isNone(yield* store.readRef(scratch)))
      assert.notInclude(git(root, "--git-dir", storeDir, "for-each-ref"), "refs/upm/scratch")
      assert.include(git(root, "--git-dir", storeDir, "for-each-ref"), "refs/tags/bob/by-git/v1.0.0")
    }).pipe(Effect.provide(layer)))

  it.effect("git archive of a release gives the same files as upm's export (directory and tar.gz)", () =>
    Effect.gen(function* () {
      const { tree, tag } = yield* publish
      assert.strictEqual(git(root, "--git-dir", storeDir, "rev-parse", "alice/is-number/v7.0.0").trim(), tag)
      const fromGit = join(root, "from-git")
      mkdirSync(fromGit)
      const archive = execFileSync("git", ["--git-dir", storeDir, "archive", "--format=tar", "alice/is-number/v7.0.0"])
      execFileSync("tar", ["-x", "-C", fromGit], { input: archive })

      const fromUpm = join(root, "from-upm")
      yield* exportTree(tree, fromUpm)
      assert.deepStrictEqual(snapshot(fromUpm), snapshot(fromGit))
      assert.deepStrictEqual(
        snapshot(fromUpm).filter((e) => e.kind !== "directory"),
        snapshot(pkg).filter((e) => e.kind !== "directory" && !e.path.startsWith("empty"))
      )

      const tarGz = Buffer.concat(Chunk.toArray(yield* Stream.runCollect(exportTarGz(tree))))
      const fromTar = join(root, "from-tar")
      mkdirSync(fromTar)
      execFileSync("tar", ["-xz", "-C", fromTar], { input: tarGz })
      assert.deepStrictEqual(snapshot(fromTar), snapshot(fromGit))
    }).pipe(Effect.provide(layer)))

  afterAll(() => rmSync(root, { recursive: true, force: true }))
})
