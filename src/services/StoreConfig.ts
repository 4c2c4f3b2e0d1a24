/**
 * Choosing a storage backend from one string, as `upm serve --store …`, `upm store copy --from/--to …` and the
 * config file's `store` take it:
 *
 *   fs:PATH          a bare git repository at PATH (the embedded default)
 *   sqlite:PATH      one SQLite file at PATH
 *   postgres:URL     a PostgreSQL database; URL is a libpq-style URL, given whole (`postgres://…`,
 *                    `postgresql://…`) or after the prefix (`postgres:postgresql://…`). `pool=N` in its query
 *                    sets this process's connection pool size (default 10) and is not sent to the server.
 *   memory           nothing kept (tests, trials)
 *
 * The URL is kept Redacted: printing a spec never shows a password.
 */
import type { FileSystem, Path } from "@effect/platform"
import { Effect, Either, Layer, ParseResult, Redacted, Schema } from "effect"
import { layerFs } from "./FsStore.js"
import { layerMemory, type ObjectStore, type StoreError } from "./ObjectStore.js"

const Path_ = Schema.String.pipe(Schema.minLength(1, { message: () => "the path is empty" }), Schema.maxLength(4096))
const PoolSize = Schema.Int.pipe(Schema.between(1, 1000))

export const StoreSpec = Schema.Union(
  Schema.TaggedStruct("fs", { path: Path_ }),
  Schema.TaggedStruct("sqlite", { path: Path_ }),
  Schema.TaggedStruct("postgres", { url: Schema.Redacted(Schema.String), maxConnections: Schema.optional(PoolSize) }),
  Schema.TaggedStruct("memory", {})
)
export type StoreSpec = typeof StoreSpec.Type

const POOL = /([?&])pool=([^&]*)(&|$)/

const parse = (input: string): Either.Either<StoreSpec, string> => {
  if (input === "memory") return Either.right({ _tag: "memory" })
  const colon = input.indexOf(":")
  const kind = colon < 0 ? input : input.slice(0, colon)
  const rest = colon < 0 ? "" : input.slice(colon + 1)
  switch (kind) {
    case "fs":
    case "sqlite":
      return rest.length === 0 ? Either.left(`"${kind}:" needs a path, e.g. ${kind}:/var/lib/upm/store`) : Either.right({ _tag: kind, path: rest })
    case "postgres":
    case "postgresql": {
      // `postgres://h/db` is itself the URL; `postgres:postgresql://h/db` carries one after the prefix.
      let url = rest.startsWith("//") ? input : rest
      if (!/^postgres(ql)?:\/\//.test(url)) {
        return Either.left(`"${input}" is not a PostgreSQL URL (postgres://user@host:5432/database)`)
      }
      const pool = POOL.exec(url)
      let maxConnections: number | undefined
      if (pool !== null) {
        const n = Number(pool[2])
        if (!Number.isInteger(n) || n < 1 || n > 1000) return Either.left(`pool=${pool[2]}: the pool size is a whole number from 1 to 1000`)
        maxConnections = n
        url = url.replace(POOL, (_, before: string, _value: string, after: string) => (after === "&" ? before : ""))
      }
      return Either.right({
        _tag: "postgres",
        url: Redacted.make(url),
        ...(maxConnections === undefined ? {} : { maxConnections })
      })
    }
    default:
      return Either.left(`unknown store "${input}": use fs:PATH, sqlite:PATH, postgres:URL or memory`)
  }
}

const format = (spec: StoreSpec): string => {
  switch (spec._tag) {
    case "fs":
    case "sqlite":
      return `${spec._tag}:${spec.path}`
    case "postgres": {
      const url = Redacted.value(spec.url)
      const pool = spec.maxConnections === undefined ? "" : `${url.includes("?") ? "&" : "?"}pool=${spec.maxConnections}`
      return `${/^postgres:\/\//.test(url) ? "" : "postgres:"}${url}${pool}`
    }
    case "memory":
      return "memory"
  }
}

/** A store spec as written on the command line or in the config file. */
export const StoreSpecFromString = Schema.transformOrFail(Schema.String, Schema.typeSchema(StoreSpec), {
  strict: true,
  decode: (input, _, ast) =>
    Either.match(parse(input.trim()), {
      onLeft: (message) => ParseResult.fail(new ParseResult.Type(ast, input, message)),
      onRight: (spec) => ParseResult.succeed(spec)
    }),
  encode: (spec) => ParseResult.succeed(format(spec))
}).annotations({ identifier: "StoreSpec", description: "fs:PATH | sqlite:PATH | postgres:URL | memory" })

export const decodeStoreSpec = Schema.decodeUnknown(StoreSpecFromString)

/** For logs and messages: the spec with any password in a PostgreSQL URL masked. */
export const describeStoreSpec = (spec: StoreSpec): string =>
  spec._tag === "postgres"
    ? format({ ...spec, url: Redacted.make(Redacted.value(spec.url).replace(/\/\/([^:@/]*):[^@/]*@/, "//$1:***@")) })
    : format(spec)

/**
 * The ObjectStore layer a spec names. The SQLite and PostgreSQL modules (and their native driver and client
 * library) are loaded only when a spec names them, so a CLI start that does not use them does not pay for them.
 */
export const layerFromSpec = (spec: StoreSpec): Layer.Layer<ObjectStore, StoreError, FileSystem.FileSystem | Path.Path> => {
  switch (spec._tag) {
    case "fs":
      return layerFs(spec.path)
    case "sqlite":
      return Layer.unwrapEffect(
        Effect.map(Effect.promise(() => import("./SqliteStore.js")), (m) => m.layerSqlite(spec.path))
      )
    case "postgres":
      return Layer.unwrapEffect(
        Effect.map(Effect.promise(() => import("./PgStore.js")), (m) =>
          m.layerPg({
            url: spec.url,
            ...(spec.maxConnections === undefined ? {} : { maxConnections: spec.maxConnections })
          }))
      )
    case "memory":
      return layerMemory
  }
}
