import { NodeContext } from "@effect/platform-node"
import { FileSystem } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Option, Schema } from "effect"
import * as ServerConfig from "../../src/services/ServerConfig.js"

const withEnv = (env: Record<string, string>) =>
  Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))

const writeConfig = (content: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const dir = yield* fs.makeTempDirectoryScoped()
    const file = `${dir}/upm.server.json`
    yield* fs.writeFileString(file, content)
    return file
  })

const none = { configPath: Option.none(), flags: {}, defaultConfigFile: "/nonexistent/upm.server.json" }

describe("ServerConfig", () => {
  it.effect("defaults: 127.0.0.1:4822 on fs:./data", () =>
    Effect.gen(function* () {
      const { config, file } = yield* ServerConfig.load(none).pipe(withEnv({}))
      assert.isTrue(Option.isNone(file))
      assert.strictEqual(config.host, "127.0.0.1")
      assert.strictEqual(config.port, 4822)
      assert.deepStrictEqual(config.store, { _tag: "fs", path: "./data" })
      assert.deepStrictEqual(config.sync, {})
      assert.strictEqual(config.limits.maxConnections, 256)
      assert.isTrue(Duration.equals(config.limits.shutdownGrace, Duration.seconds(10)))
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("file < environment < flags", () =>
    Effect.gen(function* () {
      const path = yield* writeConfig(JSON.stringify({
        host: "0.0.0.0", port: 5000, store: "sqlite:/tmp/x.db",
        limits: { maxConnections: 10, shutdownGrace: "3s", firstBytesTimeout: 250 },
        sync: { maxWantBatches: 4, idleTimeout: "30 seconds" },
        messages: { selfRegistration: true },
        handlers: {}
      }))
      const fileOnly = yield* ServerConfig.load({ ...none, configPath: Option.some(path) }).pipe(withEnv({}))
      assert.deepStrictEqual(
        [fileOnly.config.host, fileOnly.config.port, fileOnly.config.store, fileOnly.config.limits.maxConnections],
        ["0.0.0.0", 5000, { _tag: "sqlite", path: "/tmp/x.db" }, 10]
      )
      assert.strictEqual(fileOnly.config.limits.maxConnectionsPerAddress, 32)
      assert.strictEqual(fileOnly.config.sync.maxWantBatches, 4)
      assert.strictEqual(fileOnly.config.messages?.selfRegistration, true)
      assert.isTrue(Duration.equals(fileOnly.config.sync.idleTimeout ?? Duration.zero, Duration.seconds(30)))
      assert.isTrue(Duration.equals(fileOnly.config.limits.firstBytesTimeout, Duration.millis(250)))
      assert.isTrue(Duration.equals(fileOnly.config.limits.shutdownGrace, Duration.seconds(3)))

      const env = { UPM_HOST: "::1", UPM_PORT: "6000", UPM_STORE: "memory" }
      const withEnvToo = yield* ServerConfig.load({ ...none, configPath: Option.some(path) }).pipe(withEnv(env))
      assert.deepStrictEqual([withEnvToo.config.host, withEnvToo.config.port, withEnvToo.config.store], ["::1", 6000, { _tag: "memory" }])
      assert.strictEqual(withEnvToo.config.limits.maxConnections, 10)

      const all = yield* ServerConfig.load({
        configPath: Option.some(path), flags: { port: 0, store: "fs:/srv/upm", shutdownGrace: "1 minute" }
      }).pipe(withEnv(env))
      assert.deepStrictEqual([all.config.host, all.config.port, all.config.store], ["::1", 0, { _tag: "fs", path: "/srv/upm" }])
      assert.isTrue(Duration.equals(all.config.limits.shutdownGrace, Duration.minutes(1)))
      assert.strictEqual(all.config.limits.maxConnections, 10) // untouched sections stay
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("the default file is read when present", () =>
    Effect.gen(function* () {
      const path = yield* writeConfig(`{ "port": 4999 }`)
      const { config, file } = yield* ServerConfig.load({ ...none, defaultConfigFile: path }).pipe(withEnv({}))
      assert.strictEqual(config.port, 4999)
      assert.deepStrictEqual(file, Option.some(path))
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("file errors name the file, every wrong field and the problem", () =>
    Effect.gen(function* () {
      const path = yield* writeConfig(JSON.stringify({
        port: 70000, store: "s3:bucket", limits: { maxConnections: -1, shutdownGrace: "soon" }, sync: { maxWantBatches: 0 },
        prot: 1
      }))
      const e = yield* ServerConfig.load({ ...none, configPath: Option.some(path) }).pipe(withEnv({}), Effect.flip)
      assert.strictEqual(e._tag, "ServerConfigError")
      assert.strictEqual(e.reason, "Invalid")
      assert.strictEqual(e.source, `config file ${path}`)
      assert.include(e.detail, "port: a port is an integer from 0 to 65535")
      assert.include(e.detail, "store: ")
      assert.include(e.detail, "s3")
      assert.include(e.detail, "sync.maxWantBatches: expected a positive integer")
      assert.include(e.detail, "limits.maxConnections: expected a positive integer")
      assert.include(e.detail, "limits.shutdownGrace: \"soon\" is not a duration")
      assert.include(e.detail, "prot: is unexpected")
      assert.include(e.message, path)
      assert.notInclude(e.detail, "Expected undefined") // no noise from optional fields
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("a file that is not JSON, or missing, is a clear error", () =>
    Effect.gen(function* () {
      const path = yield* writeConfig(`{ "port": 1, }`)
      const notJson = yield* ServerConfig.load({ ...none, configPath: Option.some(path) }).pipe(withEnv({}), Effect.flip)
      assert.strictEqual(notJson.reason, "NotJson")
      const missing = yield* ServerConfig.load({ ...none, configPath: Option.some(`${path}.nope`) }).pipe(withEnv({}), Effect.flip)
      assert.strictEqual(missing.reason, "Unreadable")
      assert.include(missing.message, `${path}.nope`)
    }).pipe(Effect.provide(NodeContext.layer)))

  it.effect("environment and flag errors name the variable or the flag", () =>
    Effect.gen(function* () {
      const env = yield* ServerConfig.load(none).pipe(withEnv({ UPM_PORT: "http" }), Effect.flip)
      assert.strictEqual(env.source, "environment")
      assert.include(env.detail, "UPM_PORT: ")
      assert.notInclude(env.detail, "\n")
      const envStore = yield* ServerConfig.load(none).pipe(withEnv({ UPM_STORE: "ftp:x" }), Effect.flip)
      assert.include(envStore.detail, "UPM_STORE")
      const flags = yield* ServerConfig.load({ ...none, flags: { port: -1, shutdownGrace: "forever" } }).pipe(withEnv({}), Effect.flip)
      assert.strictEqual(flags.source, "flags")
      assert.include(flags.detail, "--port: a port is an integer from 0 to 65535")
      assert.include(flags.detail, "--shutdown-grace: \"forever\" is not a duration")
    }).pipe(Effect.provide(NodeContext.layer)))

  it.effect("describe masks a postgres password", () =>
    Effect.sync(() => {
      const store = Schema.decodeSync(ServerConfig.StoreSetting)("postgres://upm:s3cret@db:5432/upm")
      const d = ServerConfig.describe({ ...ServerConfig.defaults, store })
      assert.include(d.store, "upm:***@db:5432/upm")
      assert.notInclude(d.store, "s3cret")
    }))
})

