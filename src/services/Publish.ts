/**
 * Publish: a directory becomes a signed release on the server.
 *
 * 1. `upm.json` is validated (every bad field named, with its fix).
 * 2. The directory is imported into the local store (ignore rules: `.upmignore`, the manifest's `ignore`).
 * 3. If the server already has this version: identical tree → nothing to do; other content → RepublishConflict
 *    (versions are immutable).
 * 4. The release tag is signed with the user's SSH key and pushed; the server asks only for what it lacks.
 * 5. Once the server sealed it, the local store gets the release ref too (the publisher's cache).
 */
import { FileSystem, Path } from "@effect/platform"
import { Effect, Option, Schema } from "effect"
import { type Manifest, MANIFEST_FILE, ManifestInvalid, parseManifest } from "../domain/Manifest.js"
import type { ObjectHash } from "../domain/ObjectHash.js"
import { releaseRefName } from "../domain/Package.js"
import { ClientConfig } from "./ClientConfig.js"
import { importDirectory } from "./Importer.js"
import { connect, type ConversationCallbacks, MessageClientError } from "./MessageClient.js"
import { KeyError, Keys, type PassphrasePrompt, type SigningKey } from "./Keys.js"
import { getDecoded, ObjectStore, RefName, sealRef } from "./ObjectStore.js"
import { Remote } from "./Remote.js"
import { signRelease, type TaggerIdentity } from "./Signer.js"
import type { Progress } from "./SyncClient.js"

export class RepublishConflict extends Schema.TaggedError<RepublishConflict>()("RepublishConflict", {
  name: Schema.String,
  version: Schema.String,
  published: Schema.String,
  hint: Schema.String
}) {
  override get message() {
    return `${this.name}@${this.version} is already published with other content (tag ${this.published}); a published version never changes`
  }
}

export interface PublishOptions {
  readonly dir: string
  readonly keyFlag: Option.Option<string>
  readonly passphrase?: PassphrasePrompt
  readonly onProgress?: (p: Progress) => Effect.Effect<void>
  /**
   * How the server's propose policy may talk with the user while it decides (seed 000's `upm send` /
   * `upm receive`). The publish opens a message session beside the sync connection, opens its conversation and
   * names it on the sync connection (`attach <token>`) before the push — whatever the policy: the built-in one
   * answers at once, a maintainer's handler may ask first. Without callbacks, nothing is opened.
   */
  readonly conversation?: ConversationCallbacks
  /** Called when the conversation cannot be opened (a server without the message protocol); the push goes on. */
  readonly onConversationUnavailable?: (error: MessageClientError) => Effect.Effect<void>
}

export interface PublishResult {
  readonly name: string
  readonly version: string
  readonly tag: ObjectHash
  readonly tree: ObjectHash
  readonly files: number
  readonly bytes: number
  readonly signer: string
  /** "Sealed": live; "Queued": waiting for the server's policy; "Unchanged": this very content was published already. */
  readonly status: "Sealed" | "Queued" | "Unchanged"
  readonly message: string
  readonly sent: { readonly objects: number; readonly bytes: number }
}

/** Reads and validates `dir/upm.json`. */
export const readManifest = (dir: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const file = path.join(dir, MANIFEST_FILE)
    const text = yield* fs.readFileString(file).pipe(
      Effect.mapError(() =>
        new ManifestInvalid({
          path: file,
          issues: [{ field: "", message: "there is no upm.json here", fix: `create one: {"name": "<owner>/<package>", "version": "1.0.0"}` }]
        }))
    )
    return yield* parseManifest(text, file)
  })

/**
 * The signing key: `--key`, `UPM_KEY`, the config file, `UPM_HOME/id_ed25519` (made by `upm keygen`), then
 * `~/.ssh/id_ed25519` and `~/.ssh/id_rsa`.
 */
export const findKeyPath = (flag: Option.Option<string>) =>
  Effect.gen(function* () {
    const config = yield* ClientConfig
    const keys = yield* Keys
    const fs = yield* FileSystem.FileSystem
    const named = config.keyPath(flag)
    if (Option.isSome(named)) return named.value.path
    if (yield* fs.exists(config.paths.defaultKey).pipe(Effect.orElseSucceed(() => false))) return config.paths.defaultKey
    const ssh = yield* keys.defaultKeyPath
    if (Option.isSome(ssh)) return ssh.value
    return yield* new KeyError({
      file: config.paths.defaultKey,
      reason: "NotFound",
      detail: "no signing key found (looked at --key, UPM_KEY, the config file, UPM_HOME/id_ed25519, ~/.ssh/id_ed25519, ~/.ssh/id_rsa)",
      fix: "create one with: upm keygen"
    })
  })

export const loadKey = (flag: Option.Option<string>, passphrase?: PassphrasePrompt) =>
  Effect.gen(function* () {
    const keys = yield* Keys
    const file = yield* findKeyPath(flag)
    return yield* keys.loadSigningKey(file, passphrase === undefined ? {} : { passphrase })
  })

/** The tagger line's identity: UPM_NAME / UPM_EMAIL, else from the key's comment (`user@host`), else the owner. */
export const taggerFor = (key: SigningKey, owner: string): TaggerIdentity => {
  const envName = process.env["UPM_NAME"]?.trim()
  const envEmail = process.env["UPM_EMAIL"]?.trim()
  const clean = (s: string) => s.replace(/[<>\n\0]/g, "").trim()
  const comment = clean(key.comment)
  const fromComment = comment.includes("@") ? comment.slice(0, comment.indexOf("@")) : comment
  return {
    name: clean(envName !== undefined && envName !== "" ? envName : fromComment !== "" ? fromComment : owner),
    email: clean(envEmail ?? (comment.includes("@") ? comment : ""))
  }
}

const metadataOf = (m: Manifest) => ({
  name: m.name,
  version: m.version,
  ...(m.description === undefined ? {} : { description: m.description }),
  ...(m.license === undefined ? {} : { license: m.license }),
  ...(m.dependencies === undefined ? {} : { dependencies: m.dependencies })
})

/**
 * A message session to the same server as the sync connection, with its conversation open: the token for the
 * sync query `attach <token>`. The session stays open until the publish's scope closes.
 */
const openConversation = (callbacks: ConversationCallbacks) =>
  Effect.gen(function* () {
    const { address } = yield* (yield* Remote).address.pipe(
      Effect.mapError((e) => new MessageClientError({ reason: "Connect", detail: e.message }))
    )
    const session = yield* connect({ host: address.host, port: address.port })
    return yield* session.openConversation(callbacks)
  })

export const publish = (options: PublishOptions) =>
  Effect.scoped(Effect.gen(function* () {
    const store = yield* ObjectStore
    const remote = yield* Remote
    const manifest = yield* readManifest(options.dir)
    const key = yield* loadKey(options.keyFlag, options.passphrase)
    const imported = yield* importDirectory(options.dir)
    const base = {
      name: manifest.name,
      version: manifest.version,
      tree: imported.tree,
      files: imported.files,
      bytes: imported.bytes,
      signer: key.fingerprint
    }

    const session = yield* remote.session
    // Republishing: the same tree is a no-op, other content a conflict.
    const existing = yield* session.versions(manifest.name)
    const same = existing.find((r) => r.version === manifest.version)
    if (same !== undefined) {
      if (!(yield* store.has(same.hash))) yield* session.pull(same.hash)
      const object = yield* getDecoded(same.hash)
      const tree = object.type === "tag" ? object.tag.object : undefined
      if (tree === imported.tree) {
        yield* sealRef(RefName.make(releaseRefName(manifest.name, manifest.version)), same.hash).pipe(Effect.ignore)
        return { ...base, tag: same.hash, status: "Unchanged", message: "already published with this content", sent: { objects: 0, bytes: 0 } } satisfies PublishResult
      }
      return yield* new RepublishConflict({
        name: manifest.name,
        version: manifest.version,
        published: same.hash,
        hint: `bump "version" in upm.json (the newest published is ${existing.at(-1)?.version ?? manifest.version})`
      })
    }

    const signed = yield* signRelease(key, { tree: imported.tree, metadata: metadataOf(manifest), tagger: taggerFor(key, manifest.name.split("/")[0]!) })
    yield* store.put("tag", signed.body)
    const conversation = options.conversation
    if (conversation !== undefined) {
      const token = yield* openConversation(conversation).pipe(
        Effect.map(Option.some),
        Effect.catchAll((e) =>
          Effect.as(options.onConversationUnavailable === undefined ? Effect.void : options.onConversationUnavailable(e), Option.none<string>()))
      )
      if (Option.isSome(token)) yield* session.attach(token.value)
    }
    const pushed = yield* session.push(signed.hash, options.onProgress === undefined ? {} : { onProgress: options.onProgress })
    if (pushed.status === "Sealed") {
      yield* sealRef(RefName.make(releaseRefName(manifest.name, manifest.version)), signed.hash)
    }
    return {
      ...base,
      tag: signed.hash,
      status: pushed.status,
      message: pushed.message,
      sent: { objects: pushed.objects, bytes: pushed.bytes }
    } satisfies PublishResult
  }))

/** Reads a stored release tag (for `info`, and to compare trees). */
export const readTag = (hash: ObjectHash) =>
  Effect.flatMap(getDecoded(hash), (object) =>
    object.type === "tag"
      ? Effect.succeed(object.tag)
      : Effect.dieMessage(`${hash} is a ${object.type}, not a tag`))
