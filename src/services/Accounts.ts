/**
 * Accounts: the users of the message protocol (seed 001's `authentication` block) and their roles.
 *
 * - Passwords are stored only as salted scrypt hashes (node:crypto, N=2^14 r=8 p=1 by default, 16-byte random
 *   salt, 32-byte key; parameters stored per account so they can be raised later) and compared with
 *   `timingSafeEqual`. An unknown user costs the same scrypt run as a known one.
 * - Repeated failures slow down: after `freeAttempts` failures for a user, or from an address, further attempts
 *   are refused (without checking the password) for an exponentially growing delay, capped at `maxDelay`.
 *   The failure count is forgotten after `forgetAfter` without failures; a success resets the user's count,
 *   not the address's (so an attacker cannot reset it by logging into their own account). Time is `Clock`.
 * - Persistence works on every ObjectStore backend: the account list is a JSON blob in the store, pointed to by
 *   the ref `refs/upm/accounts` and replaced with a compare-and-set (`setRef`), retried on conflict; several
 *   server processes on one PostgreSQL store share it. The blob is not listed by any query; its hash depends on
 *   random salts, so it cannot be guessed for an anonymous object read.
 */
import { randomBytes, scrypt, timingSafeEqual } from "node:crypto"
import { Clock, Context, Duration, Effect, Either, HashMap, Layer, Option, Ref, Schedule, Schema } from "effect"
import { type ObjectHash } from "../domain/ObjectHash.js"
import { ObjectStore, RefName, type StoreError } from "./ObjectStore.js"

// ---------------------------------------------------------------------------------------------
// Errors

export class AuthError extends Schema.TaggedError<AuthError>()("AuthError", {
  reason: Schema.Literal("BadCredentials", "Throttled", "UnknownUser", "Exists", "WeakPassword", "BadUsername"),
  detail: Schema.String,
  retryAfterMillis: Schema.optional(Schema.Number)
}) {
  override get message() {
    return this.detail
  }
}

export class AccountsError extends Schema.TaggedError<AccountsError>()("AccountsError", {
  op: Schema.Literal("load", "save", "hash"),
  detail: Schema.String
}) {
  override get message() {
    return `accounts ${this.op} failed: ${this.detail}`
  }
}

// ---------------------------------------------------------------------------------------------
// Values

export const Role = Schema.Literal("maintainer", "admin")
export type Role = typeof Role.Type

export const Username = Schema.String.pipe(
  Schema.pattern(/^[a-z0-9][a-z0-9._-]{0,63}$/, {
    message: () => "a username is 1–64 of a-z 0-9 . _ - starting with a letter or digit"
  })
)

export class Account extends Schema.Class<Account>("Account")({
  username: Username,
  roles: Schema.Array(Role)
}) {}

const ScryptHash = Schema.Struct({
  N: Schema.Int, r: Schema.Int, p: Schema.Int,
  salt: Schema.String, // base64
  key: Schema.String // base64
})
type ScryptHash = typeof ScryptHash.Type

const StoredAccount = Schema.Struct({ username: Username, roles: Schema.Array(Role), scrypt: ScryptHash })
type StoredAccount = typeof StoredAccount.Type

const AccountsFile = Schema.Struct({ version: Schema.Literal(1), accounts: Schema.Array(StoredAccount) })
type AccountsFile = typeof AccountsFile.Type

export const ACCOUNTS_REF = RefName.make("refs/upm/accounts")

// ---------------------------------------------------------------------------------------------
// The service

export class Accounts extends Context.Tag("upm/Accounts")<Accounts, {
  /** Checks a password; throttled per user and per address. */
  readonly authenticate: (
    username: string,
    password: string,
    address: string
  ) => Effect.Effect<Account, AuthError | AccountsError | StoreError>
  /** Creates an account (operator command, or self-registration allowed by policy). */
  readonly create: (
    username: string,
    password: string,
    roles: ReadonlyArray<Role>
  ) => Effect.Effect<Account, AuthError | AccountsError | StoreError>
  /** Changes a password after checking the old one (throttled like `authenticate`). */
  readonly changePassword: (
    username: string,
    oldPassword: string,
    newPassword: string,
    address: string
  ) => Effect.Effect<void, AuthError | AccountsError | StoreError>
  /** Sets a password without the old one (operator). */
  readonly setPassword: (username: string, password: string) => Effect.Effect<void, AuthError | AccountsError | StoreError>
  readonly setRoles: (username: string, roles: ReadonlyArray<Role>) => Effect.Effect<Account, AuthError | AccountsError | StoreError>
  readonly remove: (username: string) => Effect.Effect<void, AuthError | AccountsError | StoreError>
  readonly get: (username: string) => Effect.Effect<Option.Option<Account>, AccountsError | StoreError>
  readonly list: () => Effect.Effect<ReadonlyArray<Account>, AccountsError | StoreError>
}>() {}

export interface AccountsOptions {
  /** scrypt cost parameter N (a power of two). Default 2^14. */
  readonly scryptN?: number
  readonly minPasswordLength?: number
  /** Failures allowed before attempts are delayed. Default 3. */
  readonly freeAttempts?: number
  readonly baseDelay?: Duration.DurationInput
  readonly maxDelay?: Duration.DurationInput
  readonly forgetAfter?: Duration.DurationInput
  /** Throttle entries kept at most (oldest evicted first). Default 10,000. */
  readonly maxTracked?: number
}

// ---------------------------------------------------------------------------------------------
// Password hashing

const KEY_LENGTH = 32

const derive = (password: string, salt: Buffer, N: number, r: number, p: number) =>
  Effect.async<Buffer, AccountsError>((resume) => {
    scrypt(password, salt, KEY_LENGTH, { N, r, p, maxmem: 256 * N * r + 1024 * 1024 }, (error, key) =>
      resume(error ? Effect.fail(new AccountsError({ op: "hash", detail: error.message })) : Effect.succeed(key)))
  })

export const hashPassword = (password: string, N: number) =>
  Effect.gen(function* () {
    const salt = randomBytes(16)
    const key = yield* derive(password, salt, N, 8, 1)
    return { N, r: 8, p: 1, salt: salt.toString("base64"), key: key.toString("base64") } satisfies ScryptHash
  })

export const verifyPassword = (password: string, stored: ScryptHash) =>
  Effect.map(derive(password, Buffer.from(stored.salt, "base64"), stored.N, stored.r, stored.p), (key) => {
    const expected = Buffer.from(stored.key, "base64")
    return key.length === expected.length && timingSafeEqual(key, expected)
  })

// ---------------------------------------------------------------------------------------------
// Throttling: per key ("user:alice", "addr:10.0.0.1"), a failure count and a blocked-until time

interface Strike {
  readonly failures: number
  readonly last: number
  readonly blockedUntil: number
}

const makeThrottle = (options: AccountsOptions) =>
  Effect.gen(function* () {
    const free = options.freeAttempts ?? 3
    const base = Duration.toMillis(options.baseDelay ?? "1 second")
    const max = Duration.toMillis(options.maxDelay ?? "5 minutes")
    const forget = Duration.toMillis(options.forgetAfter ?? "15 minutes")
    const maxTracked = options.maxTracked ?? 10_000
    const strikes = yield* Ref.make(HashMap.empty<string, Strike>())

    const check = (keys: ReadonlyArray<string>) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const map = yield* Ref.get(strikes)
        const wait = Math.max(0, ...keys.map((k) => Option.match(HashMap.get(map, k), {
          onNone: () => 0,
          onSome: (s) => s.blockedUntil - now
        })))
        if (wait > 0) {
          return yield* Effect.fail(new AuthError({
            reason: "Throttled",
            detail: `too many failed attempts; try again in ${Math.ceil(wait / 1000)} s`,
            retryAfterMillis: wait
          }))
        }
      })

    const fail = (keys: ReadonlyArray<string>) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Ref.update(strikes, (map) => {
          let next = map
          for (const key of keys) {
            const before = HashMap.get(next, key).pipe(Option.filter((s) => now - s.last < forget))
            const failures = Option.match(before, { onNone: () => 1, onSome: (s) => s.failures + 1 })
            const delay = failures <= free ? 0 : Math.min(max, base * 2 ** (failures - free - 1))
            next = HashMap.set(next, key, { failures, last: now, blockedUntil: now + delay })
          }
          if (HashMap.size(next) > maxTracked) {
            // Forget expired strikes first; if still too many, the oldest.
            next = HashMap.filter(next, (s) => now - s.last < forget)
            if (HashMap.size(next) > maxTracked) {
              const oldest = [...next].sort((a, b) => a[1].last - b[1].last).slice(0, HashMap.size(next) - maxTracked)
              for (const [key] of oldest) next = HashMap.remove(next, key)
            }
          }
          return next
        }))

    const succeed = (key: string) => Ref.update(strikes, HashMap.remove(key))
    return { check, fail, succeed }
  })

// ---------------------------------------------------------------------------------------------
// Persistence: a JSON blob behind refs/upm/accounts, replaced by compare-and-set

const decodeFile = Schema.decodeUnknownEither(Schema.parseJson(AccountsFile))
const encodeFile = Schema.encodeSync(Schema.parseJson(AccountsFile))

const makePersistence = Effect.gen(function* () {
  const store = yield* ObjectStore
  const load = Effect.gen(function* () {
    const ref = yield* store.readRef(ACCOUNTS_REF)
    if (Option.isNone(ref)) return { ref, file: { version: 1 as const, accounts: [] } satisfies AccountsFile }
    const object = yield* store.get(ref.value).pipe(
      Effect.catchTags({
        ObjectNotFound: () => Effect.fail(new AccountsError({ op: "load", detail: `accounts blob ${ref.value} is missing` })),
        CorruptObject: (e) => Effect.fail(new AccountsError({ op: "load", detail: e.detail }))
      })
    )
    const file = decodeFile(new TextDecoder().decode(object.body))
    if (Either.isLeft(file)) return yield* Effect.fail(new AccountsError({ op: "load", detail: "accounts blob does not decode" }))
    return { ref, file: file.right }
  })

  /** Applies `f` to the current list and stores the result; retried when another writer got there first. */
  const update = <A, E extends { readonly _tag: string }>(f: (file: AccountsFile) => Effect.Effect<readonly [A, AccountsFile], E>) =>
    Effect.gen(function* () {
      const { ref, file } = yield* load
      const [result, next] = yield* f(file)
      const hash: ObjectHash = yield* store.put("blob", new TextEncoder().encode(encodeFile(next)))
      yield* store.setRef(ACCOUNTS_REF, ref, hash)
      return result
    }).pipe(
      Effect.retry({ while: (e) => e._tag === "RefConflict", schedule: Schedule.recurs(10) }),
      Effect.catchTag("RefConflict", () => Effect.fail(new AccountsError({ op: "save", detail: `concurrent updates of ${ACCOUNTS_REF} kept conflicting` })))
    )

  return { load: Effect.map(load, (l) => l.file), update }
})

// ---------------------------------------------------------------------------------------------
// The layer

const toAccount = (a: StoredAccount) => new Account({ username: a.username, roles: a.roles })

export const make = (options: AccountsOptions = {}) =>
  Effect.gen(function* () {
    const N = options.scryptN ?? 16384
    const minLength = options.minPasswordLength ?? 8
    const throttle = yield* makeThrottle(options)
    const persistence = yield* makePersistence
    // A hash to check unknown users against, so that their failure takes as long as a wrong password.
    const dummy = yield* hashPassword("upm-dummy-password", N)

    const checkUsername = (username: string) =>
      Schema.is(Username)(username)
        ? Effect.void
        : Effect.fail(new AuthError({ reason: "BadUsername", detail: `"${username}" is not a valid username: 1–64 of a-z 0-9 . _ - starting with a letter or digit` }))
    const checkPassword = (password: string) =>
      password.length >= minLength && password.length <= 1024
        ? Effect.void
        : Effect.fail(new AuthError({ reason: "WeakPassword", detail: `a password has ${minLength} to 1024 characters` }))
    const find = (file: AccountsFile, username: string) => file.accounts.find((a) => a.username === username)
    const unknown = (username: string) => new AuthError({ reason: "UnknownUser", detail: `no account named "${username}"` })

    const authenticate = (username: string, password: string, address: string) =>
      Effect.gen(function* () {
        const keys = [`user:${username}`, `addr:${address}`]
        yield* throttle.check(keys)
        const file = yield* persistence.load
        const account = find(file, username)
        const ok = yield* verifyPassword(password, account?.scrypt ?? dummy)
        if (!ok || account === undefined) {
          yield* throttle.fail(keys)
          return yield* Effect.fail(new AuthError({ reason: "BadCredentials", detail: "wrong username or password" }))
        }
        yield* throttle.succeed(keys[0] ?? "")
        return toAccount(account)
      })

    const replace = (username: string, f: (a: StoredAccount) => Effect.Effect<StoredAccount, AuthError | AccountsError>) =>
      persistence.update((file) =>
        Effect.gen(function* () {
          const account = find(file, username)
          if (account === undefined) return yield* Effect.fail(unknown(username))
          const next = yield* f(account)
          return [toAccount(next), { ...file, accounts: file.accounts.map((a) => (a.username === username ? next : a)) }] as const
        }))

    return Accounts.of({
      authenticate,
      create: (username, password, roles) =>
        Effect.gen(function* () {
          yield* checkUsername(username)
          yield* checkPassword(password)
          const scrypt = yield* hashPassword(password, N)
          return yield* persistence.update((file) => {
            if (find(file, username) !== undefined) {
              return Effect.fail(new AuthError({ reason: "Exists", detail: `an account named "${username}" exists already` }))
            }
            const account: StoredAccount = { username, roles: [...new Set(roles)], scrypt }
            return Effect.succeed([toAccount(account), { ...file, accounts: [...file.accounts, account] }] as const)
          })
        }),
      changePassword: (username, oldPassword, newPassword, address) =>
        Effect.gen(function* () {
          yield* checkPassword(newPassword)
          yield* authenticate(username, oldPassword, address)
          const scrypt = yield* hashPassword(newPassword, N)
          yield* replace(username, (a) => Effect.succeed({ ...a, scrypt }))
        }),
      setPassword: (username, password) =>
        Effect.gen(function* () {
          yield* checkPassword(password)
          const scrypt = yield* hashPassword(password, N)
          yield* replace(username, (a) => Effect.succeed({ ...a, scrypt }))
        }),
      setRoles: (username, roles) => replace(username, (a) => Effect.succeed({ ...a, roles: [...new Set(roles)] })),
      remove: (username) =>
        persistence.update((file) =>
          find(file, username) === undefined
            ? Effect.fail(unknown(username))
            : Effect.succeed([undefined, { ...file, accounts: file.accounts.filter((a) => a.username !== username) }] as const)),
      get: (username) =>
        Effect.map(persistence.load, (file) => Option.map(Option.fromNullable(find(file, username)), toAccount)),
      list: () => Effect.map(persistence.load, (file) => file.accounts.map(toAccount))
    })
  })

/** Accounts in the server's ObjectStore. */
export const layer = (options: AccountsOptions = {}): Layer.Layer<Accounts, AccountsError, ObjectStore> =>
  Layer.effect(Accounts, make(options))
