/**
 * StoreCopy: a repository written by git itself goes fs → sqlite → postgres → fs, and the end is checked with
 * `git fsck --strict` and compared with the start (refs and objects); plus resuming, conflicts, incomplete
 * graphs and verification failures.
 */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Option, Ref, Schema } from "effect"
import { execFileSync } from "node:child_process"
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { hashOf } from "../../src/domain/GitObject.js"
import { layerFs } from "../../src/services/FsStore.js"
import { makeMemory, ObjectStore, RefName, StoreError } from "../../src/services/ObjectStore.js"
import { layerPg } from "../../src/services/PgStore.js"
import { layerSqlite } from "../../src/services/SqliteStore.js"
import { copyStore, type Store } from "../../src/services/StoreCopy.js"
import { pgTestsEnabled } from "../pg.js"
import { sampleGraph } from "./ObjectStoreConformance.js"
import { damageSql, freshPgUrl, sqliteAt } from "./SqlStoresLayers.js"

const git = (gitDir: string, args: ReadonlyArray<string>, input?: string, env: Record<string, string> = {}) =>
  execFileSync("git", ["--git-dir", gitDir, ...args], {
    input,
    env: { ...process.env, GIT_CONFIG_NOSYSTEM: "1", ...env },
    stdio: ["pipe", "pipe", "pipe"]
  }).toString().trim()

/**
 * A bare repository made by git: two releases of a package (annotated tags on trees with a subdirectory, an
 * executable, a symlink, an empty file and 120 small files) and a non-tag ref.
 */
const gitRepository = (dir: string) => {
  const repo = join(dir, "src.git")
  const work = join(dir, "work")
  execFileSync("git", ["init", "-q", "--bare", repo])
  mkdirSync(join(work, "lib"), { recursive: true })
  mkdirSync(join(work, "data"), { recursive: true })
  writeFileSync(join(work, "README.md"), "# pkg\n")
  writeFileSync(join(work, "run.sh"), "#!/bin/sh\necho run\n")
  chmodSync(join(work, "run.sh"), 0o755)
  symlinkSync("README.md", join(work, "link"))
  writeFileSync(join(work, "empty"), "")
  writeFileSync(join(work, "lib", "index.js"), "export const x = 1\n")
  for (let i = 0; i < 120; i++) writeFileSync(join(work, "data", `f${i}.txt`), `file ${i}\n`.repeat(i % 7 + 1))
  const index = { GIT_INDEX_FILE: join(dir, "index") }
  const release = (version: string) => {
    git(repo, ["--work-tree", work, "add", "-A"], undefined, index)
    const tree = git(repo, ["write-tree"], undefined, index)
    const tag = git(repo, ["mktag"],
      `object ${tree}\ntype tree\ntag alice/pkg/v${version}\ntagger Alice <alice@example.com> 1700000000 +0000\n\nrelease ${version}\n`)
    git(repo, ["update-ref", `refs/tags/alice/pkg/v${version}`, tag])
    return tree
  }
  release("1.0.0")
  writeFileSync(join(work, "lib", "index.js"), "export const x = 2\n")
  const tree = release("1.1.0")
  git(repo, ["update-ref", "refs/upm/pending/alice/pkg", tree])
  return repo
}

const refsOf = (repo: string) => git(repo, ["for-each-ref", "--format=%(refname) %(objectname)"])
const objectsOf = (repo: string) => git(repo, ["cat-file", "--batch-all-objects", "--batch-check"])

const storeOf = <E, R>(layer: Layer.Layer<ObjectStore, E, R>) =>
  Effect.map(Layer.build(layer), Context.get(ObjectStore))

const ref = Schema.decodeSync(RefName)

describe("StoreCopy", () => {
  it.scoped.skipIf(!pgTestsEnabled)("fs → sqlite → postgres → fs keeps every ref and object; git fsck --strict passes", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped({ prefix: "upm-copy-" })
      const source = gitRepository(dir)
      const url = yield* freshPgUrl
      const stores = [
        yield* storeOf(layerFs(source)),
        yield* storeOf(layerSqlite(join(dir, "store.db"))),
        yield* storeOf(layerPg({ url, maxConnections: 4 })),
        yield* storeOf(layerFs(join(dir, "dst.git")))
      ]
      const expectedObjects = objectsOf(source).split("\n").length
      for (let i = 0; i + 1 < stores.length; i++) {
        // small batches, so several rounds of `missing` / putMany / verify run
        const report = yield* copyStore(stores[i]!, stores[i + 1]!, { batch: 50, maxBatchBytes: 4096 })
        assert.deepStrictEqual(report.objects, { total: expectedObjects, copied: expectedObjects, alreadyPresent: 0 })
        assert.deepStrictEqual(report.refs, { total: 3, written: 3, unchanged: 0 })
        assert.deepStrictEqual(report.verified, { objects: expectedObjects, refs: 3 })
      }
      const target = join(dir, "dst.git")
      execFileSync("git", ["--git-dir", target, "fsck", "--strict", "--no-dangling"], { stdio: "pipe" })
      assert.strictEqual(refsOf(target), refsOf(source))
      assert.strictEqual(objectsOf(target), objectsOf(source))
      // the tag verifies as git made it, and its tree checks out
      assert.strictEqual(git(target, ["cat-file", "-t", "refs/tags/alice/pkg/v1.1.0"]), "tag")
      assert.strictEqual(git(target, ["show", "refs/tags/alice/pkg/v1.1.0:lib/index.js"]), "export const x = 2")

      // running it again moves nothing and still verifies everything
      const again = yield* copyStore(stores[0]!, stores[1]!)
      assert.deepStrictEqual(again.objects, { total: expectedObjects, copied: 0, alreadyPresent: expectedObjects })
      assert.deepStrictEqual(again.refs, { total: 3, written: 0, unchanged: 3 })
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("an interrupted copy writes no ref; running it again resumes where it stopped", () =>
    Effect.gen(function* () {
      const source = yield* makeMemory
      const g = sampleGraph("resume")
      yield* source.putMany(g.all)
      const many = Array.from({ length: 40 }, (_, i) => ({ type: "blob" as const, body: new TextEncoder().encode(`blob ${i}\n`) }))
      yield* source.putMany(many)
      yield* source.setRef(ref("refs/tags/alice/resume/v1.0.0"), Option.none(), g.hashes.tag)

      const target = yield* makeMemory
      // a target that breaks down on its third write
      const writes = yield* Ref.make(0)
      const failing: Store = {
        ...target,
        putMany: (objects) =>
          Effect.flatMap(Ref.getAndUpdate(writes, (n) => n + 1), (n) =>
            n >= 2 ? Effect.fail(new StoreError({ op: "put", detail: "disk full", cause: null })) : target.putMany(objects))
      }
      const broken = yield* Effect.flip(copyStore(source, failing, { batch: 10 }))
      assert.strictEqual(broken._tag, "StoreError")
      assert.deepStrictEqual(yield* target.listRefs(""), []) // no ref before its graph is complete
      const partial = (yield* target.listObjects()).length
      assert.strictEqual(partial, 20)

      const report = yield* copyStore(source, target, { batch: 10 })
      assert.strictEqual(report.objects.alreadyPresent, partial)
      assert.strictEqual(report.objects.copied, g.all.length + many.length - partial)
      assert.deepStrictEqual(yield* target.readRef(ref("refs/tags/alice/resume/v1.0.0")), Option.some(g.hashes.tag))
    }))

  it.scoped("a tag the target holds with other content is a conflict, never overwritten; other refs are copied", () =>
    Effect.gen(function* () {
      const source = yield* makeMemory
      const target = yield* makeMemory
      const a = sampleGraph("a")
      const b = sampleGraph("b")
      yield* source.putMany(a.all)
      yield* target.putMany(b.all)
      yield* source.setRef(ref("refs/tags/alice/pkg/v1.0.0"), Option.none(), a.hashes.tag)
      yield* source.setRef(ref("refs/tags/alice/pkg/v2.0.0"), Option.none(), a.hashes.tag)
      yield* source.setRef(ref("refs/upm/pending/alice/pkg"), Option.none(), a.hashes.root)
      yield* target.setRef(ref("refs/tags/alice/pkg/v1.0.0"), Option.none(), b.hashes.tag)
      yield* target.setRef(ref("refs/upm/pending/alice/pkg"), Option.none(), b.hashes.root)

      const error = yield* Effect.flip(copyStore(source, target))
      assert.strictEqual(error._tag, "CopyError")
      assert.strictEqual(error._tag === "CopyError" ? error.reason : undefined, "RefConflict")
      assert.include(error._tag === "CopyError" ? error.detail : "", "refs/tags/alice/pkg/v1.0.0")
      assert.deepStrictEqual(yield* target.readRef(ref("refs/tags/alice/pkg/v1.0.0")), Option.some(b.hashes.tag))
      assert.deepStrictEqual(yield* target.readRef(ref("refs/tags/alice/pkg/v2.0.0")), Option.some(a.hashes.tag))
      // an ordinary ref follows the source
      assert.deepStrictEqual(yield* target.readRef(ref("refs/upm/pending/alice/pkg")), Option.some(a.hashes.root))
    }))

  it.scoped("a source ref whose graph is incomplete is reported and not written", () =>
    Effect.gen(function* () {
      const source = yield* makeMemory
      const g = sampleGraph("incomplete")
      yield* source.putMany([g.tag, g.root, g.lib, ...g.blobs.slice(1)]) // README's blob is missing
      yield* source.setRef(ref("refs/tags/alice/incomplete/v1.0.0"), Option.none(), g.hashes.tag)
      const target = yield* makeMemory
      const error = yield* Effect.flip(copyStore(source, target))
      assert.strictEqual(error._tag === "CopyError" ? error.reason : error._tag, "IncompleteGraph")
      assert.isTrue(Option.isNone(yield* target.readRef(ref("refs/tags/alice/incomplete/v1.0.0"))))
    }))

  it.scoped("verification re-reads every object: damage in the target fails the copy", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const source = yield* makeMemory
      const g = sampleGraph("verify")
      yield* source.putMany(g.all)
      const context = yield* Layer.build(sqliteAt(join(dir, "store.db")))
      const target = Context.get(context, ObjectStore)
      yield* copyStore(source, target)
      yield* damageSql(g.hashes.script, "flip").pipe(Effect.provide(context))
      const error = yield* Effect.flip(copyStore(source, target))
      assert.strictEqual(error._tag === "CopyError" ? error.reason : error._tag, "VerifyObjects")
      assert.include(error._tag === "CopyError" ? error.detail : "", g.hashes.script)
      assert.strictEqual(hashOf("blob", g.blobs[1]!.body), g.hashes.script)
    }).pipe(Effect.provide(NodeContext.layer)))
})
