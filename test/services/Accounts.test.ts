import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Option, TestClock } from "effect"
import * as Accounts from "../../src/services/Accounts.js"
import { ObjectStore, layerMemory } from "../../src/services/ObjectStore.js"

/** The AuthError an effect fails with (anything else is a defect). */
const authFail = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.flip(self).pipe(Effect.flatMap((e) => (e instanceof Accounts.AuthError ? Effect.succeed(e) : Effect.die(e))))

const options = { scryptN: 1024, freeAttempts: 2, baseDelay: "1 second", maxDelay: "1 minute" } as const
const TestLayer = Accounts.layer(options).pipe(Layer.provideMerge(layerMemory))

describe("Accounts", () => {
  it.effect("creates, authenticates, refuses a wrong password and an unknown user alike", () =>
    Effect.gen(function* () {
      const accounts = yield* Accounts.Accounts
      const alice = yield* accounts.create("alice", "correct horse", ["maintainer"])
      assert.deepStrictEqual(alice.roles, ["maintainer"])
      const back = yield* accounts.authenticate("alice", "correct horse", "10.0.0.1")
      assert.strictEqual(back.username, "alice")
      const wrong = yield* accounts.authenticate("alice", "wrong horse", "10.0.0.1").pipe(authFail)
      assert.strictEqual(wrong.reason, "BadCredentials")
      const nobody = yield* accounts.authenticate("nobody", "correct horse", "10.0.0.2").pipe(authFail)
      assert.strictEqual(nobody.reason, "BadCredentials")
      assert.strictEqual(wrong.message, nobody.message)
    }).pipe(Effect.provide(TestLayer)))

  it.effect("stores only salted hashes, in a blob behind refs/upm/accounts", () =>
    Effect.gen(function* () {
      const accounts = yield* Accounts.Accounts
      const store = yield* ObjectStore
      yield* accounts.create("alice", "correct horse", [])
      yield* accounts.create("bob", "correct horse", [])
      const ref = yield* store.readRef(Accounts.ACCOUNTS_REF)
      assert(Option.isSome(ref))
      const text = new TextDecoder().decode((yield* store.get(ref.value)).body)
      assert.notInclude(text, "correct horse")
      const parsed = JSON.parse(text) as { accounts: Array<{ scrypt: { salt: string; key: string } }> }
      const [a, b] = parsed.accounts
      assert(a !== undefined && b !== undefined)
      assert.notStrictEqual(a.scrypt.salt, b.scrypt.salt)
      assert.notStrictEqual(a.scrypt.key, b.scrypt.key)
    }).pipe(Effect.provide(TestLayer)))

  it.effect("a second server on the same store sees the accounts; concurrent creates all land", () =>
    Effect.gen(function* () {
      const store = yield* ObjectStore
      const one = yield* Accounts.make(options).pipe(Effect.provideService(ObjectStore, store))
      const two = yield* Accounts.make(options).pipe(Effect.provideService(ObjectStore, store))
      yield* Effect.all([
        one.create("u1", "password1", []), two.create("u2", "password2", []),
        one.create("u3", "password3", []), two.create("u4", "password4", [])
      ], { concurrency: "unbounded" })
      const names = (yield* one.list()).map((a) => a.username).sort()
      assert.deepStrictEqual(names, ["u1", "u2", "u3", "u4"])
      assert.strictEqual((yield* two.authenticate("u3", "password3", "x")).username, "u3")
    }).pipe(Effect.provide(layerMemory)))

  it.effect("validates names and passwords; refuses duplicates", () =>
    Effect.gen(function* () {
      const accounts = yield* Accounts.Accounts
      assert.strictEqual((yield* accounts.create("Bad Name", "password1", []).pipe(authFail)).reason, "BadUsername")
      assert.strictEqual((yield* accounts.create("carol", "short", []).pipe(authFail)).reason, "WeakPassword")
      yield* accounts.create("carol", "password1", [])
      assert.strictEqual((yield* accounts.create("carol", "password2", []).pipe(authFail)).reason, "Exists")
    }).pipe(Effect.provide(TestLayer)))

  it.effect("changes a password only with the old one", () =>
    Effect.gen(function* () {
      const accounts = yield* Accounts.Accounts
      yield* accounts.create("dave", "password1", [])
      const bad = yield* accounts.changePassword("dave", "nope-nope", "password2", "a").pipe(authFail)
      assert.strictEqual(bad.reason, "BadCredentials")
      yield* accounts.changePassword("dave", "password1", "password2", "a")
      assert.strictEqual((yield* accounts.authenticate("dave", "password1", "a").pipe(authFail)).reason, "BadCredentials")
      yield* accounts.authenticate("dave", "password2", "b")
    }).pipe(Effect.provide(TestLayer)))

  it.effect("repeated failures slow down per user and per address (TestClock)", () =>
    Effect.gen(function* () {
      const accounts = yield* Accounts.Accounts
      yield* accounts.create("erin", "password1", [])
      yield* accounts.create("frank", "password1", [])
      // two free failures, the third starts a 1 s delay
      for (let i = 0; i < 3; i++) yield* accounts.authenticate("erin", "wrong-one", "1.1.1.1").pipe(authFail)
      const throttled = yield* accounts.authenticate("erin", "password1", "2.2.2.2").pipe(authFail)
      assert.strictEqual(throttled.reason, "Throttled")
      assert.strictEqual(throttled.retryAfterMillis, 1000)
      // the address is throttled too, even for another user with the right password
      assert.strictEqual((yield* accounts.authenticate("frank", "password1", "1.1.1.1").pipe(authFail)).reason, "Throttled")
      // another user from another address is unaffected
      yield* accounts.authenticate("frank", "password1", "3.3.3.3")
      yield* TestClock.adjust("1 second")
      // the next failure doubles the delay
      yield* accounts.authenticate("erin", "wrong-two", "2.2.2.2").pipe(authFail)
      assert.strictEqual((yield* accounts.authenticate("erin", "password1", "4.4.4.4").pipe(authFail)).retryAfterMillis, 2000)
      yield* TestClock.adjust("2 seconds")
      assert.strictEqual((yield* accounts.authenticate("erin", "password1", "4.4.4.4")).username, "erin")
      // success reset the user's count: one failure is free again
      yield* accounts.authenticate("erin", "wrong", "5.5.5.5").pipe(authFail)
      yield* accounts.authenticate("erin", "password1", "5.5.5.5")
    }).pipe(Effect.provide(TestLayer)))

  it.effect("the delay is capped", () =>
    Effect.gen(function* () {
      const accounts = yield* Accounts.Accounts
      for (let i = 0; i < 12; i++) {
        yield* accounts.authenticate("ghost", "wrong", "9.9.9.9").pipe(authFail)
        yield* TestClock.adjust("1 minute")
      }
      yield* accounts.authenticate("ghost", "wrong", "9.9.9.9").pipe(authFail)
      const e = yield* accounts.authenticate("ghost", "wrong", "9.9.9.9").pipe(authFail)
      assert.strictEqual(e.retryAfterMillis, 60_000)
    }).pipe(Effect.provide(TestLayer)))
})
