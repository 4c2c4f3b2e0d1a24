/**
 * Keys: the publisher's SSH keys. Loads OpenSSH ed25519 and RSA private keys (the `openssh-key-v1` format
 * and the older PEM RSA format, passphrase-protected or not), uses ssh-agent when `SSH_AUTH_SOCK` is set and
 * holds the key, reads public keys in OpenSSH one-line form, and generates new keys (`upm keygen`).
 *
 * Parsing and decrypting private keys is done by `ssh2` (bcrypt-pbkdf, the OpenSSH ciphers, PEM); its agent
 * client talks to ssh-agent. Signatures themselves are Node's crypto (see domain/Sshsig.ts). `ssh2` is
 * imported lazily so that commands that never sign do not pay for loading it.
 *
 * Every problem is a `KeyError` naming the file, what is wrong and what to run.
 */
import { createPrivateKey, type KeyObject } from "node:crypto"
import { FileSystem, Path } from "@effect/platform"
import { Config, Context, Effect, Either, Layer, Option, Redacted, Schema } from "effect"
import {
  fingerprint, formatPublicKey, type InvalidPublicKey, parsePublicKeyBlob, parsePublicKeyLine, type PublicKey,
  sameKey, SUPPORTED_TYPES_TEXT, unsupportedTypeText, WireReader
} from "../domain/SshKey.js"
import * as Sshsig from "../domain/Sshsig.js"

// ---------------------------------------------------------------------------------------------
// Errors

export class KeyError extends Schema.TaggedError<KeyError>()("KeyError", {
  file: Schema.String,
  reason: Schema.Literal(
    "NotFound", "Unreadable", "Permissions", "UnsupportedFormat", "UnsupportedType", "WeakKey", "Malformed",
    "PassphraseRequired", "WrongPassphrase", "Exists", "WriteFailed", "Agent", "Generate"
  ),
  detail: Schema.String,
  /** What the user can run to fix it. */
  fix: Schema.String
}) {
  override get message(): string {
    return `${this.file}: ${this.detail}. ${this.fix}`
  }
}

// ---------------------------------------------------------------------------------------------
// The contract

/** A key that can sign: held in memory after loading a file, or by ssh-agent. */
export interface SigningKey {
  readonly publicKey: PublicKey
  readonly comment: string
  /** `SHA256:…` as ssh-keygen prints it. */
  readonly fingerprint: string
  readonly source: { readonly _tag: "File"; readonly path: string } | { readonly _tag: "Agent"; readonly path: string }
  /** An armored SSHSIG signature over `message` in `namespace` (sha512). */
  readonly sign: (namespace: string, message: Uint8Array) => Effect.Effect<string, KeyError>
}

/**
 * Asked for a key's passphrase; `attempt` counts from 1. None means "no passphrase available" (the load
 * fails with PassphraseRequired). The CLI wires a terminal prompt here.
 */
export type PassphrasePrompt = (file: string, attempt: number) => Effect.Effect<Option.Option<Redacted.Redacted<string>>, KeyError>

export interface LoadOptions {
  /** Tried after `UPM_KEY_PASSPHRASE`; up to `maxAttempts` times while the answer is wrong. */
  readonly passphrase?: PassphrasePrompt
  readonly maxAttempts?: number
  /** Use ssh-agent when SSH_AUTH_SOCK is set and holds the key (default true). */
  readonly agent?: boolean
}

export interface KeygenOptions {
  readonly type?: "ed25519" | "rsa"
  /** RSA only; default 3072 (ssh-keygen's default). */
  readonly bits?: number
  readonly comment?: string
  readonly passphrase?: Redacted.Redacted<string>
}

export interface GeneratedKey {
  readonly privatePath: string
  readonly publicPath: string
  /** The `.pub` line (`ssh-ed25519 AAAA… comment`). */
  readonly publicLine: string
  readonly fingerprint: string
}

export class Keys extends Context.Tag("upm/Keys")<Keys, {
  /** Loads a private key for signing (agent first when it holds the key, else the file). */
  readonly loadSigningKey: (path: string, options?: LoadOptions) => Effect.Effect<SigningKey, KeyError>
  /** Reads the first key line of an OpenSSH public key file (`id_ed25519.pub`, one line of authorized_keys). */
  readonly loadPublicKey: (path: string) => Effect.Effect<{ readonly key: PublicKey; readonly comment: string }, KeyError>
  /** Writes `path` (mode 600) and `path.pub` in OpenSSH format; refuses to overwrite. */
  readonly keygen: (path: string, options?: KeygenOptions) => Effect.Effect<GeneratedKey, KeyError>
  /** `~/.ssh/id_ed25519` then `~/.ssh/id_rsa`: the first that exists, as ssh and git look for them. */
  readonly defaultKeyPath: Effect.Effect<Option.Option<string>>
}>() {}

// ---------------------------------------------------------------------------------------------
// Pure helpers (exported for tests and for the CLI's messages)

export type KeyFileFormat =
  | { readonly _tag: "OpenSSH"; readonly encrypted: boolean; readonly publicBlob: Uint8Array; readonly type: string }
  | { readonly _tag: "PemRsa"; readonly encrypted: boolean }

const MAX_KEY_FILE = 64 * 1024

const keyError = (file: string, reason: KeyError["reason"], detail: string, fix: string) =>
  new KeyError({ file, reason, detail, fix })

const fromPublicKeyError = (file: string, e: InvalidPublicKey) =>
  e.reason === "UnsupportedType"
    ? keyError(file, "UnsupportedType", e.detail.split(";")[0] ?? e.detail, `upm accepts ${SUPPORTED_TYPES_TEXT}; create one with: upm keygen (or ssh-keygen -t ed25519)`)
    : e.reason === "WeakKey"
    ? keyError(file, "WeakKey", e.detail, "create a new key with: upm keygen (or ssh-keygen -t ed25519)")
    : keyError(file, "Malformed", e.detail, "check that this is an OpenSSH key; regenerate it with upm keygen if it is damaged")

/**
 * Recognises a private key file's format without decrypting it. For the OpenSSH format it reads the public
 * half (stored unencrypted), so an unsupported key type is reported before any passphrase is asked.
 */
export const inspectPrivateKey = (file: string, text: string): Either.Either<KeyFileFormat, KeyError> => {
  const t = text.trim()
  const unsupportedFormat = (what: string, fix: string) =>
    Either.left(keyError(file, "UnsupportedFormat", `this is ${what}, not an OpenSSH private key`, fix))
  if (t.startsWith("PuTTY-User-Key-File-")) {
    return unsupportedFormat("a PuTTY key (.ppk)", `convert it with: puttygen ${file} -O private-openssh-new -o ${file.replace(/\.ppk$/, "")}_openssh`)
  }
  if (/^(ssh-|ecdsa-|sk-)\S+ [A-Za-z0-9+/=]+/.test(t)) {
    return unsupportedFormat("a public key", `pass the private key file instead (${file.replace(/\.pub$/, "")})`)
  }
  if (t.startsWith("-----BEGIN DSA PRIVATE KEY-----")) {
    return Either.left(keyError(file, "UnsupportedType", "DSA keys are not supported", `upm accepts ${SUPPORTED_TYPES_TEXT}; create one with: upm keygen`))
  }
  if (t.startsWith("-----BEGIN EC PRIVATE KEY-----")) {
    return Either.left(keyError(file, "UnsupportedType", "ECDSA keys are not supported", `upm accepts ${SUPPORTED_TYPES_TEXT}; create one with: upm keygen`))
  }
  if (t.startsWith("-----BEGIN PRIVATE KEY-----") || t.startsWith("-----BEGIN ENCRYPTED PRIVATE KEY-----")) {
    return unsupportedFormat("a PKCS#8 key", `rewrite it in OpenSSH format with: ssh-keygen -p -f ${file}`)
  }
  if (t.startsWith("-----BEGIN PGP")) return unsupportedFormat("a PGP key", "upm signs with SSH keys; create one with: upm keygen")
  if (t.startsWith("-----BEGIN RSA PRIVATE KEY-----")) {
    return Either.right({ _tag: "PemRsa", encrypted: /^Proc-Type:\s*4,ENCRYPTED/m.test(t) })
  }
  const match = /^-----BEGIN OPENSSH PRIVATE KEY-----\r?\n([A-Za-z0-9+/=\r\n]+)\r?\n-----END OPENSSH PRIVATE KEY-----$/.exec(t)
  if (!match) {
    return unsupportedFormat("not a key file upm recognises", `pass an OpenSSH private key such as ~/.ssh/id_ed25519, or create one with: upm keygen`)
  }
  const malformed = (what: string) =>
    Either.left(keyError(file, "Malformed", `the OpenSSH key is damaged (${what})`, "restore it from a backup or create a new one with: upm keygen"))
  const r = new WireReader(Buffer.from((match[1] ?? "").replace(/\r?\n/g, ""), "base64"))
  const magic = r.raw(15)
  if (magic === undefined || Buffer.from(magic).toString("latin1") !== "openssh-key-v1\0") return malformed("bad magic")
  const cipher = r.ascii(64)
  const kdf = r.ascii(64)
  const kdfOptions = r.string(1024)
  const count = r.uint32()
  if (cipher === undefined || kdf === undefined || kdfOptions === undefined || count === undefined) return malformed("truncated header")
  if (count !== 1) return malformed(`${count} keys in one file`)
  const publicBlob = r.string(8192)
  if (publicBlob === undefined) return malformed("truncated public key")
  const type = new WireReader(publicBlob).ascii(64) ?? "?"
  return Either.right({ _tag: "OpenSSH", encrypted: cipher !== "none", publicBlob: Uint8Array.from(publicBlob), type })
}

// ---------------------------------------------------------------------------------------------
// ssh2, loaded on first use

const ssh2 = Effect.promise(() => import("ssh2")).pipe(Effect.map((m) => m.default))

type ParsedKey = import("ssh2").ParsedKey

/** Decrypts/parses with ssh2; `Left(message)` on failure. */
const parseWithSsh2 = (text: string, passphrase: Option.Option<Redacted.Redacted<string>>) =>
  Effect.map(ssh2, (lib): Either.Either<ParsedKey, string> => {
    const parsed = Option.isSome(passphrase)
      ? lib.utils.parseKey(text, Redacted.value(passphrase.value))
      : lib.utils.parseKey(text)
    if (parsed instanceof Error) return Either.left(parsed.message)
    return Either.right(parsed)
  })

/** Checks the private key matches its public half, by one signature. Catches damaged or crafted files. */
const fileSigningKey = (file: string, parsed: ParsedKey) =>
  Effect.gen(function* () {
    const publicKey = yield* Either.mapLeft(parsePublicKeyBlob(parsed.getPublicSSH()), (e) => fromPublicKeyError(file, e))
    const privateKey = yield* Effect.try({
      try: (): KeyObject => createPrivateKey(parsed.getPrivatePEM()),
      catch: (cause) => keyError(file, "Malformed", `Node could not read the private key (${String(cause)})`, "regenerate it with: upm keygen")
    })
    const probe = new TextEncoder().encode("upm key self-check")
    const selfCheck = Either.flatMap(
      Either.try({ try: () => Sshsig.signWithKey(privateKey, publicKey, "upm-selfcheck", probe), catch: String }),
      (sig) => Either.mapLeft(Sshsig.verify(sig, probe, "upm-selfcheck"), (e) => e.detail)
    )
    if (Either.isLeft(selfCheck)) {
      return yield* Effect.fail(keyError(file, "Malformed", `the private key does not match its public key (${selfCheck.left})`, "regenerate it with: upm keygen"))
    }
    return {
      publicKey,
      comment: parsed.comment,
      fingerprint: fingerprint(publicKey),
      source: { _tag: "File", path: file },
      sign: (namespace, message) =>
        Effect.try({
          try: () => Sshsig.signWithKey(privateKey, publicKey, namespace, message),
          catch: (cause) => keyError(file, "Malformed", `signing failed (${String(cause)})`, "regenerate the key with: upm keygen")
        })
    } satisfies SigningKey
  })

// ---------------------------------------------------------------------------------------------
// ssh-agent

const AGENT_TIMEOUT = "30 seconds"

/** The agent's identity holding `blob`, if any. Agent trouble is not an error here: the caller falls back to the file. */
const agentIdentity = (socket: string, blob: Uint8Array) =>
  Effect.flatMap(ssh2, (lib) =>
    Effect.async<ReadonlyArray<ParsedKey>, string>((resume) => {
      new lib.OpenSSHAgent(socket).getIdentities((err, keys) => {
        resume(err || keys === undefined
          ? Effect.fail(String(err))
          : Effect.succeed(keys.filter((k): k is ParsedKey => typeof k === "object" && "getPublicSSH" in k)))
      })
    })).pipe(
      Effect.timeoutFail({ duration: AGENT_TIMEOUT, onTimeout: () => "timed out" }),
      Effect.map((keys) => Option.fromNullable(keys.find((k) => Buffer.from(k.getPublicSSH()).equals(Buffer.from(blob))))),
      Effect.catchAll((e) => Effect.logDebug("ssh-agent not usable", e).pipe(Effect.as(Option.none<ParsedKey>())))
    )

/** A signing key whose private half stays in ssh-agent. The agent's answer is verified before use. */
const agentSigningKey = (file: string, socket: string, identity: ParsedKey, publicKey: PublicKey, comment: string): SigningKey => ({
  publicKey,
  comment,
  fingerprint: fingerprint(publicKey),
  source: { _tag: "Agent", path: socket },
  sign: (namespace, message) =>
    Effect.gen(function* () {
      const lib = yield* ssh2
      const data = Sshsig.signedData(namespace, "sha512", message)
      const signatureAlgorithm = Sshsig.signatureAlgorithmFor(publicKey)
      const raw = yield* Effect.async<Uint8Array, KeyError>((resume) => {
        new lib.OpenSSHAgent(socket).sign(identity, Buffer.from(data), { hash: "sha512" }, (err, signature) => {
          resume(err || signature === undefined
            ? Effect.fail(keyError(file, "Agent", `ssh-agent refused to sign (${String(err)})`, "check `ssh-add -l`, or run with SSH_AUTH_SOCK unset to use the key file"))
            : Effect.succeed(signature))
        })
      }).pipe(Effect.timeoutFail({
        duration: AGENT_TIMEOUT,
        onTimeout: () => keyError(file, "Agent", "ssh-agent did not answer within 30 seconds", "check the agent (`ssh-add -l`) or unset SSH_AUTH_SOCK")
      }))
      const armored = Sshsig.encode({ publicKey, namespace, hashAlgorithm: "sha512", signatureAlgorithm, signature: raw })
      // ssh2 drops the algorithm name the agent answered with; an old agent may have signed with SHA-1.
      const checked = Sshsig.verify(armored, message, namespace)
      if (Either.isLeft(checked)) {
        return yield* Effect.fail(keyError(file, "Agent", `ssh-agent returned a signature that does not verify (${checked.left.detail})`, "update OpenSSH, or unset SSH_AUTH_SOCK to sign with the key file"))
      }
      return armored
    })
})

// ---------------------------------------------------------------------------------------------
// The layer

const PASSPHRASE_ENV = "UPM_KEY_PASSPHRASE"

export const make = Effect.gen(function* () {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path

  const readKeyFile = (file: string) =>
    Effect.gen(function* () {
      const info = yield* fs.stat(file).pipe(Effect.mapError((e) =>
        e._tag === "SystemError" && e.reason === "NotFound"
          ? keyError(file, "NotFound", "no such key file", "create a key with: upm keygen, or name an existing one with --key")
          : keyError(file, "Unreadable", `cannot read the key file (${e.message})`, `check the path and its permissions (ls -l ${file})`)))
      if (info.type !== "File") return yield* Effect.fail(keyError(file, "Unreadable", "not a regular file", "name the key file itself"))
      if (info.size > MAX_KEY_FILE) return yield* Effect.fail(keyError(file, "UnsupportedFormat", `${info.size} bytes is far too large for a key`, "name the key file itself"))
      return { info, text: yield* fs.readFileString(file).pipe(Effect.mapError((e) =>
        keyError(file, "Unreadable", `cannot read the key file (${e.message})`, `check its permissions (ls -l ${file})`))) }
    })

  const decrypt = (file: string, text: string, format: KeyFileFormat, options: LoadOptions) =>
    Effect.gen(function* () {
      if (!format.encrypted) {
        const parsed = yield* parseWithSsh2(text, Option.none())
        if (Either.isLeft(parsed)) {
          return yield* Effect.fail(keyError(file, "Malformed", `the key could not be read (${parsed.left})`, "restore it from a backup or create a new one with: upm keygen"))
        }
        return parsed.right
      }
      const wrong = (how: string) =>
        keyError(file, "WrongPassphrase", `the passphrase ${how} is wrong`, `enter the right passphrase, or check it with: ssh-keygen -y -f ${file}`)
      const fromEnv = yield* Config.option(Config.redacted(PASSPHRASE_ENV)).pipe(Effect.orElseSucceed(() => Option.none()))
      if (Option.isSome(fromEnv)) {
        const parsed = yield* parseWithSsh2(text, fromEnv)
        if (Either.isRight(parsed)) return parsed.right
        return yield* Effect.fail(wrong(`in ${PASSPHRASE_ENV}`))
      }
      const prompt = options.passphrase
      const maxAttempts = Math.max(1, options.maxAttempts ?? 3)
      if (prompt !== undefined) {
        for (let attempt = 1; attempt <= maxAttempts; attempt++) {
          const answer = yield* prompt(file, attempt)
          if (Option.isNone(answer)) break
          const parsed = yield* parseWithSsh2(text, answer)
          if (Either.isRight(parsed)) return parsed.right
          if (attempt === maxAttempts) return yield* Effect.fail(wrong(`entered ${maxAttempts} times`))
        }
      }
      return yield* Effect.fail(keyError(file, "PassphraseRequired", "the key is protected by a passphrase and none was given",
        `enter it when asked, set ${PASSPHRASE_ENV} for scripts, or load the key into ssh-agent (ssh-add ${file})`))
    })

  const loadSigningKey = (file: string, options: LoadOptions = {}) =>
    Effect.gen(function* () {
      const { info, text } = yield* readKeyFile(file)
      const format = yield* inspectPrivateKey(file, text)
      if (format._tag === "OpenSSH" && format.type !== "ssh-ed25519" && format.type !== "ssh-rsa") {
        return yield* Effect.fail(keyError(file, "UnsupportedType", unsupportedTypeText(format.type).split(";")[0] ?? format.type,
          `upm accepts ${SUPPORTED_TYPES_TEXT}; create one with: upm keygen`))
      }
      // As ssh does: a private key others can read is refused.
      if (process.platform !== "win32" && (info.mode & 0o077) !== 0) {
        return yield* Effect.fail(keyError(file, "Permissions",
          `the private key is readable by others (mode ${(info.mode & 0o777).toString(8)})`, `run: chmod 600 ${file}`))
      }
      if (options.agent !== false) {
        const socket = yield* Config.option(Config.string("SSH_AUTH_SOCK")).pipe(Effect.orElseSucceed(() => Option.none()))
        const blob = format._tag === "OpenSSH" ? Option.some(format.publicBlob) : yield* siblingPublicBlob(file)
        if (Option.isSome(socket) && socket.value !== "" && Option.isSome(blob)) {
          const identity = yield* agentIdentity(socket.value, blob.value)
          if (Option.isSome(identity)) {
            const publicKey = yield* Either.mapLeft(parsePublicKeyBlob(blob.value), (e) => fromPublicKeyError(file, e))
            return agentSigningKey(file, socket.value, identity.value, publicKey, identity.value.comment)
          }
        }
      }
      const parsed = yield* decrypt(file, text, format, options)
      if (parsed.type !== "ssh-ed25519" && parsed.type !== "ssh-rsa") {
        return yield* Effect.fail(keyError(file, "UnsupportedType", `${parsed.type} keys are not supported`, `upm accepts ${SUPPORTED_TYPES_TEXT}; create one with: upm keygen`))
      }
      return yield* fileSigningKey(file, parsed)
    }).pipe(Effect.withSpan("Keys.loadSigningKey"))

  /** The blob of `file.pub`, for PEM keys whose public half is not inside the private file. */
  const siblingPublicBlob = (file: string) =>
    loadPublicKey(`${file}.pub`).pipe(
      Effect.map(({ key }) => Option.some(key.blob)),
      Effect.orElseSucceed(() => Option.none<Uint8Array>())
    )

  const loadPublicKey = (file: string) =>
    Effect.gen(function* () {
      const { text } = yield* readKeyFile(file)
      const line = text.split(/\r?\n/).map((l) => l.trim()).find((l) => l !== "" && !l.startsWith("#"))
      if (line === undefined) return yield* Effect.fail(keyError(file, "Malformed", "the file holds no key", "get the public key with: ssh-keygen -y -f <private key>"))
      return yield* Either.mapLeft(parsePublicKeyLine(line), (e) =>
        e.reason === "Malformed"
          ? keyError(file, "Malformed", e.detail, "get the public key in OpenSSH form with: ssh-keygen -y -f <private key>")
          : fromPublicKeyError(file, e))
    })

  const keygen = (file: string, options: KeygenOptions = {}) =>
    Effect.gen(function* () {
      const publicPath = `${file}.pub`
      for (const target of [file, publicPath]) {
        if (yield* fs.exists(target).pipe(Effect.orElseSucceed(() => true))) {
          return yield* Effect.fail(keyError(target, "Exists", "a file is already there; upm never overwrites keys", "choose another path, or move the old key away first"))
        }
      }
      const writeFailed = (target: string) => (e: { readonly message: string }) =>
        keyError(target, "WriteFailed", `cannot write the key (${e.message})`, `check that ${path.dirname(target)} is writable`)
      const dir = path.dirname(file)
      if (!(yield* fs.exists(dir).pipe(Effect.orElseSucceed(() => false)))) {
        yield* fs.makeDirectory(dir, { recursive: true, mode: 0o700 }).pipe(Effect.mapError(writeFailed(file)))
      }
      const lib = yield* ssh2
      const type = options.type ?? "ed25519"
      const bits = options.bits ?? 3072
      if (type === "rsa" && (bits < 2048 || bits > 16384)) {
        return yield* Effect.fail(keyError(file, "Generate", `${bits} bits is outside 2048–16384`, "use --bits 3072 or 4096, or the default ed25519"))
      }
      const common = {
        comment: options.comment ?? "",
        ...(options.passphrase === undefined ? {} : { passphrase: Redacted.value(options.passphrase), cipher: "aes256-ctr", rounds: 16 })
      }
      const pair = yield* Effect.async<{ readonly private: string; readonly public: string }, KeyError>((resume) => {
        const done = (err: Error | null, keys: { private: string; public: string }) =>
          resume(err ? Effect.fail(keyError(file, "Generate", `key generation failed (${err.message})`, "try again, or use ssh-keygen -t ed25519")) : Effect.succeed(keys))
        if (type === "rsa") lib.utils.generateKeyPair("rsa", { bits, ...common }, done)
        else lib.utils.generateKeyPair("ed25519", common, done)
      })
      const publicLine = pair.public.trim()
      const parsed = yield* Either.mapLeft(parsePublicKeyLine(publicLine), (e) => fromPublicKeyError(publicPath, e))
      const privateText = pair.private.endsWith("\n") ? pair.private : `${pair.private}\n`
      yield* fs.writeFileString(file, privateText, { mode: 0o600, flag: "wx" }).pipe(Effect.mapError(writeFailed(file)))
      yield* fs.writeFileString(publicPath, `${publicLine}\n`, { mode: 0o644, flag: "wx" }).pipe(Effect.mapError(writeFailed(publicPath)))
      return {
        privatePath: file,
        publicPath,
        publicLine: formatPublicKey(parsed.key, parsed.comment),
        fingerprint: fingerprint(parsed.key)
      } satisfies GeneratedKey
    })

  const defaultKeyPath = Effect.gen(function* () {
    const home = yield* Config.string("HOME").pipe(Effect.orElseSucceed(() => ""))
    if (home === "") return Option.none<string>()
    for (const name of ["id_ed25519", "id_rsa"]) {
      const candidate = path.join(home, ".ssh", name)
      if (yield* fs.exists(candidate).pipe(Effect.orElseSucceed(() => false))) return Option.some(candidate)
    }
    return Option.none<string>()
  })

  return Keys.of({ loadSigningKey, loadPublicKey, keygen, defaultKeyPath })
})

export const layer: Layer.Layer<Keys, never, FileSystem.FileSystem | Path.Path> = Layer.effect(Keys, make)

// ---------------------------------------------------------------------------------------------
// Functions over the service (for the CLI)

export const loadSigningKey = (path: string, options?: LoadOptions) => Effect.flatMap(Keys, (k) => k.loadSigningKey(path, options))
export const loadPublicKey = (path: string) => Effect.flatMap(Keys, (k) => k.loadPublicKey(path))
export const keygen = (path: string, options?: KeygenOptions) => Effect.flatMap(Keys, (k) => k.keygen(path, options))

/** A signing key from an in-memory private KeyObject (tests, benchmarks, server-side tools). */
export const signingKeyFromKeyObject = (privateKey: KeyObject, publicKey: PublicKey, comment = ""): SigningKey => ({
  publicKey,
  comment,
  fingerprint: fingerprint(publicKey),
  source: { _tag: "File", path: "<memory>" },
  sign: (namespace, message) =>
    Effect.try({
      try: () => Sshsig.signWithKey(privateKey, publicKey, namespace, message),
      catch: (cause) => keyError("<memory>", "Malformed", `signing failed (${String(cause)})`, "use another key")
    })
})

export { sameKey }
