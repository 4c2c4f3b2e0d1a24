import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either, Layer, Option } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { ClientConfig, layer, parseServerAddress } from "../../src/services/ClientConfig.js"

const withEnv = (env: Record<string, string>) =>
  layer.pipe(Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))), Layer.provide(NodeContext.layer))

describe("ClientConfig", () => {
  it("parses server addresses", () => {
    assert.deepStrictEqual(Either.map(parseServerAddress("example.com"), String), Either.right("example.com:4822"))
    assert.deepStrictEqual(Either.map(parseServerAddress("127.0.0.1:99"), String), Either.right("127.0.0.1:99"))
    assert.deepStrictEqual(Either.map(parseServerAddress("[::1]:5"), String), Either.right("[::1]:5"))
    assert.isTrue(Either.isLeft(parseServerAddress("host:0")))
    assert.isTrue(Either.isLeft(parseServerAddress("a b")))
  })

  it.effect("resolves paths and the server from flag > env > config file > default", () =>
    Effect.gen(function* () {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "upm-cfg-"))
      const env = { HOME: dir, XDG_CONFIG_HOME: Path.join(dir, "cfg") }
      const plain = yield* Effect.provide(ClientConfig, withEnv(env))
      assert.strictEqual(plain.paths.home, Path.join(dir, ".upm"))
      assert.strictEqual(plain.paths.configFile, Path.join(dir, "cfg", "upm", "config.json"))
      assert.strictEqual(String((yield* plain.server(Option.none())).address), "127.0.0.1:4822")
      yield* plain.set("server", "cfg.example:1000")
      const configured = yield* Effect.provide(ClientConfig, withEnv(env))
      assert.deepStrictEqual(yield* Effect.map(configured.server(Option.none()), (s) => [String(s.address), s.source]), ["cfg.example:1000", "config"])
      const fromEnv = yield* Effect.provide(ClientConfig, withEnv({ ...env, UPM_SERVER: "env.example:2000", UPM_HOME: Path.join(dir, "h") }))
      assert.strictEqual(fromEnv.paths.home, Path.join(dir, "h"))
      assert.strictEqual(String((yield* fromEnv.server(Option.none())).address), "env.example:2000")
      assert.strictEqual(String((yield* fromEnv.server(Option.some("flag.example"))).address), "flag.example:4822")
      const bad = yield* fromEnv.server(Option.some("no good")).pipe(Effect.flip)
      assert.strictEqual(bad.source, "flag")
      // Unknown settings and bad values are refused; the file is not touched.
      assert.strictEqual((yield* plain.set("sever", "x").pipe(Effect.flip)).reason, "UnknownKey")
      assert.strictEqual((yield* plain.set("server", "not an address").pipe(Effect.flip)).reason, "BadValue")
      assert.deepStrictEqual(JSON.parse(Fs.readFileSync(plain.paths.configFile, "utf8")), { server: "cfg.example:1000" })
      // A broken file names itself.
      Fs.writeFileSync(plain.paths.configFile, "{ nope")
      const broken = yield* Effect.provide(ClientConfig, withEnv(env)).pipe(Effect.flip)
      assert.include(broken.message, plain.paths.configFile)
      Fs.rmSync(dir, { recursive: true, force: true })
    }))
})
