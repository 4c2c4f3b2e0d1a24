/**
 * Signed releases and store checks for end-to-end tests against a real server (whose Verifier checks SSHSIG
 * signatures and namespace ownership): trees built into a client store, tags signed with the committed test key
 * `alice_ed25519` (test/fixtures/keys), `git fsck --strict` on an fs store, and graph completeness.
 */
import { Effect } from "effect"
import { execFile } from "node:child_process"
import { existsSync } from "node:fs"
import * as Path from "node:path"
import { children, decodeObject } from "../../src/domain/GitObject.js"
import type { ObjectHash } from "../../src/domain/ObjectHash.js"
import { PackageName, Version } from "../../src/domain/Package.js"
import type { ObjectStore } from "../../src/services/ObjectStore.js"
import { signRelease } from "../../src/services/Signer.js"
import { memoryKey } from "../services/KeysFixtures.js"
import { type Files, importTree } from "../services/SyncFixtures.js"

export type { Files }

export const ALICE = memoryKey("alice_ed25519")

/** Stores `files` and a release tag `name/vversion` over them, signed by alice; returns the tag's hash. */
export const signedRelease = (store: ObjectStore["Type"], name: string, version: string, files: Files) =>
  Effect.gen(function* () {
    const tree = yield* importTree(store, files)
    const signed = yield* signRelease(ALICE, {
      tree,
      metadata: { name: PackageName.make(name), version: Version.make(version), description: `${name} ${version}` },
      tagger: { name: "Alice", email: "alice@example.com" },
      time: { seconds: 1_700_000_000 }
    }).pipe(Effect.orDie)
    const tag = yield* Effect.orDie(store.put("tag", signed.body))
    return { tag, tree }
  })

/** Every object reachable from `root` in `store` (the whole graph is expected to be there). */
export const graphOf = (store: ObjectStore["Type"], root: ObjectHash) =>
  Effect.gen(function* () {
    const seen = new Set<ObjectHash>([root])
    const order: Array<ObjectHash> = []
    let frontier: Array<ObjectHash> = [root]
    while (frontier.length > 0) {
      const next: Array<ObjectHash> = []
      for (const hash of frontier) {
        order.push(hash)
        const { type, body } = yield* Effect.orDie(store.get(hash))
        if (type === "blob") continue
        const object = yield* Effect.orDie(decodeObject(type, body))
        for (const child of children(object)) {
          if (!seen.has(child.hash)) {
            seen.add(child.hash)
            next.push(child.hash)
          }
        }
      }
      frontier = next
    }
    return order
  })

/** Whether a loose object file exists in the bare repository `dir` (the fs store renames complete files only). */
export const hasLoose = (dir: string, hash: string) =>
  existsSync(Path.join(dir, "objects", hash.slice(0, 2), hash.slice(2)))

export interface FsckResult {
  readonly ok: boolean
  readonly code: number
  /** Lines that are not dangling-object notices. */
  readonly problems: ReadonlyArray<string>
  readonly output: string
}

/**
 * `git fsck --strict` on a bare repository. Dangling objects (stored, not yet sealed) are allowed and left out;
 * anything else — a corrupt or missing object, a broken link from a ref — is a problem.
 */
export const gitFsck = (dir: string) =>
  Effect.async<FsckResult>((resume) => {
    execFile("git", ["--git-dir", dir, "fsck", "--strict", "--no-progress"], { maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      const output = `${stdout}${stderr}`
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
      const problems = output.split("\n").filter((l) => l.trim() !== "" && !/^(dangling|Checking|notice)/.test(l))
      resume(Effect.succeed({ ok: code === 0 && problems.length === 0, code, problems, output }))
    })
  })

/** `git` in a bare repository: stdout. */
export const git = (dir: string, ...args: ReadonlyArray<string>) =>
  Effect.async<string, Error>((resume) => {
    execFile("git", ["--git-dir", dir, ...args], { maxBuffer: 64 * 1024 * 1024 }, (error, stdout) => {
      resume(error === null ? Effect.succeed(stdout) : Effect.fail(error))
    })
  })
