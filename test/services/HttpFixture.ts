/**
 * Fixtures for the HTTP tests: publishes releases straight into a store (objects, optionally an SSHSIG-signed
 * tag, then the sealed ref through Registry.seal), and starts the HTTP server on 127.0.0.1:0.
 */
import { Effect, Either, Layer } from "effect"
import { generateKeyPairSync } from "node:crypto"
import { encodeTag, encodeTagPayload, encodeTree, type TreeEntry, type TreeMode } from "../../src/domain/GitObject.js"
import type { ObjectHash } from "../../src/domain/ObjectHash.js"
import { PackageName, releaseTagName, Version } from "../../src/domain/Package.js"
import { encodeReleaseMessage } from "../../src/domain/ReleaseMessage.js"
import { blobFromKeyObject, fingerprint, parsePublicKeyBlob } from "../../src/domain/SshKey.js"
import { GIT_NAMESPACE, signWithKey } from "../../src/domain/Sshsig.js"
import * as HttpServer from "../../src/services/HttpServer.js"
import * as ObjectStore from "../../src/services/ObjectStore.js"
import * as Registry from "../../src/services/Registry.js"
import * as Verifier from "../../src/services/Verifier.js"

export type Files = { readonly [path: string]: string | Uint8Array | { readonly symlink: string } | { readonly executable: string } }

/** Writes the files as blobs and trees; returns the root tree's hash. */
export const putTree = (files: Files) =>
  Effect.gen(function* () {
    const store = yield* ObjectStore.ObjectStore
    const write = (entries: ReadonlyArray<readonly [ReadonlyArray<string>, Files[string]]>): Effect.Effect<ObjectHash, ObjectStore.StoreError> =>
      Effect.gen(function* () {
        const dirs = new Map<string, Array<readonly [ReadonlyArray<string>, Files[string]]>>()
        const out: Array<TreeEntry> = []
        for (const [path, content] of entries) {
          const [head, ...rest] = path
          if (head === undefined) continue
          if (rest.length > 0) {
            const list = dirs.get(head) ?? []
            list.push([rest, content])
            dirs.set(head, list)
            continue
          }
          let mode: TreeMode = "100644"
          let bytes: Uint8Array
          if (typeof content === "string") bytes = new TextEncoder().encode(content)
          else if (content instanceof Uint8Array) bytes = content
          else if ("symlink" in content) {
            mode = "120000"
            bytes = new TextEncoder().encode(content.symlink)
          } else {
            mode = "100755"
            bytes = new TextEncoder().encode(content.executable)
          }
          out.push({ mode, name: head, hash: yield* store.put("blob", bytes) })
        }
        for (const [name, sub] of dirs) out.push({ mode: "40000", name, hash: yield* write(sub) })
        return yield* store.put("tree", encodeTree(out))
      })
    return yield* write(Object.entries(files).map(([p, c]) => [p.split("/"), c] as const))
  })

export interface PublishOptions {
  readonly description?: string
  readonly dependencies?: Record<string, string>
  /** Put the metadata in upm.json only, with a tag message that carries none. */
  readonly manifestOnly?: boolean
  /** Unix seconds of the tagger line. */
  readonly time?: number
  /** Sign the tag with a fresh ed25519 key (SSHSIG, namespace "git"), as `upm publish` does. */
  readonly sign?: boolean
}

/** A fresh ed25519 key pair in the shapes Sshsig wants. */
export const makeKey = () => {
  const { privateKey, publicKey: keyObject } = generateKeyPairSync("ed25519")
  const publicKey = Either.getOrThrow(Either.flatMap(blobFromKeyObject(keyObject), parsePublicKeyBlob))
  return { privateKey, publicKey, fingerprint: fingerprint(publicKey) }
}

/** Publishes a release: files (plus upm.json unless given), a tag, the sealed ref. Returns the tag hash. */
export const publish = (name: string, version: string, files: Files, options: PublishOptions = {}) =>
  Effect.gen(function* () {
    const store = yield* ObjectStore.ObjectStore
    const registry = yield* Registry.Registry
    const pkg = PackageName.make(name)
    const ver = Version.make(version)
    const manifest = JSON.stringify({
      name,
      version,
      ...(options.description === undefined ? {} : { description: options.description }),
      ...(options.dependencies === undefined ? {} : { dependencies: options.dependencies })
    })
    const tree = yield* putTree({ "upm.json": manifest, ...files })
    const message = options.manifestOnly === true
      ? `${name} ${version}\n`
      : encodeReleaseMessage({
        name: pkg,
        version: ver,
        ...(options.description === undefined ? {} : { description: options.description }),
        ...(options.dependencies === undefined ? {} : { dependencies: options.dependencies as never })
      })
    const unsigned = {
      object: tree,
      type: "tree" as const,
      tag: releaseTagName(pkg, ver),
      tagger: `Alice Example <alice@example.com> ${options.time ?? 1_700_000_000} +0000`,
      message
    }
    const key = options.sign === true ? makeKey() : undefined
    const signature = key === undefined
      ? undefined
      : signWithKey(key.privateKey, key.publicKey, GIT_NAMESPACE, encodeTagPayload(unsigned))
    const tagHash = yield* store.put("tag", encodeTag({ ...unsigned, signature }))
    yield* registry.seal(new Verifier.VerifiedRelease({ tagHash, tree, name: pkg, version: ver, signer: key?.fingerprint ?? "unsigned" }))
    return { tagHash, signer: key?.fingerprint }
  })

/** Store and registry, in memory. */
export const layerStore = Registry.layer.pipe(Layer.provideMerge(ObjectStore.layerMemory))

/** The HTTP server on 127.0.0.1:0 with `config` (decoded like the config file's `http` section). */
export const layerHttp = (config: HttpServer.HttpConfigInput = {}) =>
  Layer.unwrapEffect(Effect.map(
    Effect.orDie(HttpServer.decodeHttpConfig({ port: 0, host: "127.0.0.1", logRequests: false, ...config })),
    (decoded) => HttpServer.layer(decoded)
  ))
