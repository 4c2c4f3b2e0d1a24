/**
 * KnownKeys: the client's trust in owner keys, per namespace — trust on first use, like ssh's known_hosts.
 *
 * The first time a namespace is installed from, the keys the server reports for it are pinned in a JSON file
 * (`{ "version": 1, "namespaces": { "alice": ["ssh-ed25519 AAAA…"] } }`). Later releases must be signed by
 * a pinned key; a release signed by any other key — even one the server now lists — is refused with
 * `KeyChanged` until the user accepts the new keys (`accept`, wired to a CLI command).
 *
 * `verifyRelease` is the whole client-side check of a pulled tag: signature, metadata, the server's owner
 * keys, the pinned keys, and the lockfile pin (rollback / substitution).
 */
import { FileSystem, Path } from "@effect/platform"
import { Context, Effect, Either, Layer, Option, ParseResult, Ref, Schema } from "effect"
import type { Tag } from "../domain/GitObject.js"
import type { ObjectHash } from "../domain/ObjectHash.js"
import { compareVersions, ownerOf, type PackageName, Segment, type Version } from "../domain/Package.js"
import { fingerprint, formatPublicKey, parsePublicKeyLine, type PublicKey, PublicKeyLine, sameKey } from "../domain/SshKey.js"
import { VerificationError, VerifiedRelease, verifySignature } from "./Verifier.js"

export class KnownKeysError extends Schema.TaggedError<KnownKeysError>()("KnownKeysError", {
  file: Schema.String,
  reason: Schema.Literal("Unreadable", "Malformed", "WriteFailed"),
  detail: Schema.String
}) {
  override get message(): string {
    return `${this.file}: ${this.detail}`
  }
}

export const KnownKeysFile = Schema.Struct({
  version: Schema.Literal(1),
  namespaces: Schema.Record({ key: Segment, value: Schema.Array(PublicKeyLine).pipe(Schema.maxItems(256)) })
})
export type KnownKeysFile = typeof KnownKeysFile.Type

export type Trust =
  /** The signer is a pinned key of the namespace. */
  | { readonly _tag: "Known" }
  /** The namespace was not pinned: the server's keys are pinned now. */
  | { readonly _tag: "FirstUse"; readonly pinned: ReadonlyArray<string> }

export class KnownKeys extends Context.Tag("upm/KnownKeys")<KnownKeys, {
  readonly get: (owner: string) => Effect.Effect<Option.Option<ReadonlyArray<string>>, KnownKeysError>
  /**
   * Checks `signer` for `owner`: pinned → Known; not pinned yet → pins `serverKeys` (FirstUse); pinned but the
   * signer is not among the pins → KeyChanged.
   */
  readonly check: (owner: string, signer: PublicKey, serverKeys: ReadonlyArray<string>) => Effect.Effect<Trust, VerificationError | KnownKeysError>
  /** The user accepts these keys for `owner` (replacing the pins), after a KeyChanged. */
  readonly accept: (owner: string, keys: ReadonlyArray<string>) => Effect.Effect<void, KnownKeysError>
}>() {}

// ---------------------------------------------------------------------------------------------

const MAX_FILE = 4 * 1024 * 1024

const keysOf = (lines: ReadonlyArray<string>): ReadonlyArray<PublicKey> =>
  lines.flatMap((l) => Either.match(parsePublicKeyLine(l), { onLeft: () => [], onRight: (k) => [k.key] }))

const canonical = (lines: ReadonlyArray<string>) => [...new Set(keysOf(lines).map((k) => formatPublicKey(k)))].sort()

const makeWith = (load: Effect.Effect<KnownKeysFile, KnownKeysError>, save: (file: KnownKeysFile) => Effect.Effect<void, KnownKeysError>) =>
  Effect.gen(function* () {
    const lock = yield* Effect.makeSemaphore(1)
    const update = (f: (file: KnownKeysFile) => KnownKeysFile) =>
      lock.withPermits(1)(Effect.flatMap(load, (file) => save(f(file))))
    const get = (owner: string) => Effect.map(load, (file) => Option.fromNullable(file.namespaces[owner]))
    const pin = (owner: string, keys: ReadonlyArray<string>) =>
      update((file) => ({ version: 1, namespaces: { ...file.namespaces, [owner]: canonical(keys) } }))
    return KnownKeys.of({
      get,
      accept: pin,
      check: (owner, signer, serverKeys) =>
        Effect.gen(function* () {
          const pinned = yield* get(owner)
          if (Option.isNone(pinned)) {
            if (!keysOf(serverKeys).some((k) => sameKey(k, signer))) {
              return yield* Effect.fail(new VerificationError({
                reason: "NotOwner",
                detail: `${fingerprint(signer)} is not among the keys the server reports for ${owner}; nothing was pinned`
              }))
            }
            yield* pin(owner, serverKeys)
            return { _tag: "FirstUse", pinned: canonical(serverKeys) } as Trust
          }
          if (keysOf(pinned.value).some((k) => sameKey(k, signer))) return { _tag: "Known" } as Trust
          const trusted = keysOf(pinned.value).map(fingerprint).join(", ")
          return yield* Effect.fail(new VerificationError({
            reason: "KeyChanged",
            detail: `THE SIGNING KEY OF NAMESPACE ${owner} HAS CHANGED: this release is signed by ${fingerprint(signer)}, ` +
              `but you trust only ${trusted}. Someone may be impersonating ${owner}, or the owner rotated keys. ` +
              `If you have confirmed the new key with the owner, accept it with: upm trust ${owner}`
          }))
        })
    })
  })

/** Known keys kept in a JSON file (created on first pin; written atomically via a temp file). */
export const layer = (file: string): Layer.Layer<KnownKeys, never, FileSystem.FileSystem | Path.Path> =>
  Layer.effect(KnownKeys, Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const decode = Schema.decodeUnknownEither(Schema.parseJson(KnownKeysFile), { errors: "all", onExcessProperty: "error" })
    const load = Effect.gen(function* () {
      const exists = yield* fs.exists(file).pipe(Effect.mapError((e) => new KnownKeysError({ file, reason: "Unreadable", detail: e.message })))
      if (!exists) return { version: 1, namespaces: {} } as KnownKeysFile
      const info = yield* fs.stat(file).pipe(Effect.mapError((e) => new KnownKeysError({ file, reason: "Unreadable", detail: e.message })))
      if (info.size > MAX_FILE) return yield* Effect.fail(new KnownKeysError({ file, reason: "Malformed", detail: "the file is larger than 4 MiB" }))
      const text = yield* fs.readFileString(file).pipe(Effect.mapError((e) => new KnownKeysError({ file, reason: "Unreadable", detail: e.message })))
      return yield* Either.mapLeft(decode(text), (e) =>
        new KnownKeysError({ file, reason: "Malformed", detail: `${ParseResult.TreeFormatter.formatErrorSync(e)}; fix or remove the file` }))
    })
    const save = (content: KnownKeysFile) =>
      Effect.gen(function* () {
        const writeFailed = (e: { readonly message: string }) => new KnownKeysError({ file, reason: "WriteFailed", detail: e.message })
        yield* fs.makeDirectory(path.dirname(file), { recursive: true }).pipe(Effect.mapError(writeFailed))
        const temp = `${file}.tmp`
        yield* fs.writeFileString(temp, `${JSON.stringify(content, null, 2)}\n`).pipe(Effect.mapError(writeFailed))
        yield* fs.rename(temp, file).pipe(Effect.mapError(writeFailed))
      })
    return yield* makeWith(load, save)
  }))

/** Known keys in memory, for tests. */
export const layerMemory = (initial: KnownKeysFile = { version: 1, namespaces: {} }) =>
  Layer.effect(KnownKeys, Effect.gen(function* () {
    const ref = yield* Ref.make(initial)
    return yield* makeWith(Ref.get(ref), (file) => Ref.set(ref, file))
  }))

// ---------------------------------------------------------------------------------------------
// The client-side check of a pulled release

/** What the lockfile pins for a package. */
export interface Pin {
  readonly name: PackageName
  readonly version: Version
  readonly tagHash: ObjectHash
}

/**
 * Compares a release with the lockfile's pin for the same package: the same tag is fine; the same version
 * with another tag is a substitution (PinMismatch); an older version is a rollback. A newer version passes
 * (the user asked to upgrade).
 */
export const checkPin = (pin: Pin, release: Pick<VerifiedRelease, "name" | "version" | "tagHash">): Effect.Effect<void, VerificationError> => {
  if (release.tagHash === pin.tagHash) return Effect.void
  if (release.name !== pin.name) {
    return Effect.fail(new VerificationError({ reason: "PinMismatch", detail: `the lockfile pins ${pin.name}, the server offered ${release.name}` }))
  }
  const order = compareVersions(release.version, pin.version)
  if (order === 0) {
    return Effect.fail(new VerificationError({
      reason: "PinMismatch",
      detail: `${pin.name} ${pin.version} is pinned to tag ${pin.tagHash} but the server offers ${release.tagHash}; ` +
        `a published version never changes, so this server is serving altered content`
    }))
  }
  if (order < 0) {
    return Effect.fail(new VerificationError({
      reason: "Rollback",
      detail: `the lockfile pins ${pin.name} ${pin.version} (${pin.tagHash}); refusing the older ${release.version} (${release.tagHash})`
    }))
  }
  return Effect.void
}

/**
 * The client's check of a pulled release tag: signature and metadata (as the server checks them), the signer
 * among the owner keys the server reports, trust on first use against the known keys, and the lockfile pin.
 */
export const verifyRelease = (input: {
  readonly tagHash: ObjectHash
  readonly tag: Tag
  /** The release keys the server reports for the namespace (Owners.releaseKeys on the server). */
  readonly serverKeys: ReadonlyArray<string>
  readonly pin?: Pin
}) =>
  Effect.gen(function* () {
    const known = yield* KnownKeys
    const { shape, publicKey } = yield* verifySignature(input.tagHash, input.tag)
    const owner = ownerOf(shape.name)
    if (!keysOf(input.serverKeys).some((k) => sameKey(k, publicKey))) {
      return yield* Effect.fail(new VerificationError({
        reason: "NotOwner",
        detail: `${input.tag.tag} is signed by ${fingerprint(publicKey)}, which the server does not list as a key of ${owner}`
      }))
    }
    const trust = yield* known.check(owner, publicKey, input.serverKeys)
    const release = new VerifiedRelease({ ...shape, signer: fingerprint(publicKey), publicKey: formatPublicKey(publicKey) })
    if (input.pin !== undefined) yield* checkPin(input.pin, release)
    return { release, trust }
  })
