/**
 * Fixtures for sync tests: releases built into memory stores, a server (SyncProtocol over its own store) and
 * clients (each with its own store) joined by in-memory duplexes.
 */
import { Chunk, Effect, Layer, Option, Stream } from "effect"
import { encodeTag, encodeTree, type TreeEntry } from "../../src/domain/GitObject.js"
import type { ObjectHash } from "../../src/domain/ObjectHash.js"
import { PackageName, Version } from "../../src/domain/Package.js"
import { SyncProtocol } from "../../src/services/Connection.js"
import { getDeflated, makeMemory, ObjectStore } from "../../src/services/ObjectStore.js"
import type { ResolvePolicy } from "../../src/services/Policies.js"
import * as ProposalPolicy from "../../src/services/ProposalPolicy.js"
import * as Registry from "../../src/services/Registry.js"
import * as SyncClient from "../../src/services/SyncClient.js"
import * as SyncLimits from "../../src/services/SyncLimits.js"
import * as SyncServer from "../../src/services/SyncServer.js"
import * as Verifier from "../../src/services/Verifier.js"

export type Files = { readonly [name: string]: string | Files }

const text = new TextEncoder()

/** Stores a directory tree (strings are files) and returns the root tree's hash. */
export const importTree = (store: ObjectStore["Type"], files: Files): Effect.Effect<ObjectHash> =>
  Effect.gen(function* () {
    const entries: Array<TreeEntry> = []
    for (const [name, value] of Object.entries(files)) {
      if (typeof value === "string") {
        entries.push({ mode: "100644", name, hash: yield* Effect.orDie(store.put("blob", text.encode(value))) })
      } else {
        entries.push({ mode: "40000", name, hash: yield* importTree(store, value) })
      }
    }
    return yield* Effect.orDie(store.put("tree", encodeTree(entries)))
  })

/** Stores a (unsigned) release tag over `files`; returns the tag hash. */
export const makeRelease = (store: ObjectStore["Type"], name: string, version: string, files: Files, tagName?: string) =>
  Effect.gen(function* () {
    const tree = yield* importTree(store, files)
    const body = encodeTag({
      object: tree,
      type: "tree",
      tag: tagName ?? `${name}/v${version}`,
      tagger: "Alice <alice@example.com> 1700000000 +0000",
      message: `${name} ${version}\n`,
      signature: undefined
    })
    return { tag: yield* Effect.orDie(store.put("tag", body)), tree }
  })

/** A folder `depth` levels deep with `width` files per level. */
export const deepFiles = (depth: number, width = 2, salt = ""): Files => {
  const level: Record<string, string | Files> = {}
  for (let i = 0; i < width; i++) level[`f${i}.txt`] = `file ${i} at depth ${depth}${salt}\n`
  if (depth > 1) level["sub"] = deepFiles(depth - 1, width, salt)
  return level
}

export const wideFiles = (count: number, salt = ""): Files => {
  const dir: Record<string, string> = {}
  for (let i = 0; i < count; i++) dir[`file-${String(i).padStart(5, "0")}.txt`] = `content ${i}${salt}\n`
  return { "upm.json": `{"name":"x"}${salt}`, lib: dir }
}

export interface ServerOptions {
  readonly limits?: Partial<SyncLimits.SyncLimitsShape>
  readonly policy?: Layer.Layer<ProposalPolicy.ProposalPolicy>
  readonly conversations?: Layer.Layer<ProposalPolicy.Conversations>
  readonly versions?: ReadonlyArray<number>
  /** The server's store (a fresh memory store by default). */
  readonly store?: ObjectStore["Type"]
  /** A ResolvePolicy for `match` (none by default: the registry answers). */
  readonly resolve?: Layer.Layer<ResolvePolicy>
}

/** A server: its store, its registry and its SyncProtocol. */
export const makeServer = (options: ServerOptions = {}) =>
  Effect.gen(function* () {
    const store = options.store ?? (yield* makeMemory)
    const storeLayer = Layer.succeed(ObjectStore, store)
    // Registry.make: no namespace authority (the sync tests push unsigned tags under Verifier.layerUnsigned).
    const registryLayer = Layer.effect(Registry.Registry, Registry.make).pipe(Layer.provide(storeLayer))
    const deps = Layer.mergeAll(
      storeLayer,
      registryLayer,
      Verifier.layerUnsigned,
      options.policy ?? ProposalPolicy.layerAcceptAll,
      options.conversations ?? ProposalPolicy.layerNoConversations,
      SyncLimits.layer(options.limits ?? {}),
      options.resolve ?? Layer.empty
    )
    const ctx = yield* Layer.build(deps)
    const sync = yield* SyncServer.makeWith(options.versions ?? SyncServer.SERVER_VERSIONS).pipe(Effect.provide(ctx))
    const registry = yield* Effect.provide(Registry.Registry, ctx)
    return { store, registry, sync, serve: sync.serve }
  })

export type Server = Effect.Effect.Success<ReturnType<typeof makeServer>>

/**
 * A memory store that also serves objects deflated (as the fs store does), so the two ends negotiate protocol
 * version 3 (deflated SENDs). Its deflated bytes are zlib level 1 of the framed object.
 */
export const deflating = (store: ObjectStore["Type"]): ObjectStore["Type"] =>
  ObjectStore.of({
    ...store,
    getDeflated: (hash) =>
      getDeflated(hash).pipe(Effect.provideService(ObjectStore, store), Effect.catchTag("CorruptObject", Effect.die))
  })

/** A client with its own memory store (`deflated`: one that serves deflated bytes), connected in memory to `server`. */
export const makeClient = (
  server: { readonly serve: SyncProtocol["Type"]["serve"] },
  options: Partial<SyncClient.SyncClientOptions> = {},
  deflated = false
) =>
  Effect.gen(function* () {
    const memory = yield* makeMemory
    const store = deflated ? deflating(memory) : memory
    // Version 0 unless the test asks for more (the v0 flows are what most tests pin down).
    const client = yield* SyncClient.make(SyncClient.connectMemory(server.serve), { versions: [0], ...options }).pipe(
      Effect.provideService(ObjectStore, store)
    )
    return { store, client, connect: client.connect({ host: "memory", port: 0 }) }
  })

/** Runs the server on fixed input bytes and returns everything it wrote, as latin1 text. */
export const rawSession = (server: { readonly serve: SyncProtocol["Type"]["serve"] }, input: ReadonlyArray<Uint8Array | string>) =>
  server.serve(
    Stream.fromIterable(input.map((c) => (typeof c === "string" ? new Uint8Array(Buffer.from(c, "latin1")) : c))),
    { id: 1, remoteAddress: "memory" }
  ).pipe(
    Stream.runCollect,
    Effect.map((chunks) => Buffer.concat(Chunk.toArray(chunks)).toString("latin1"))
  )

export const pkg = (s: string) => PackageName.make(s)
export const ver = (s: string) => Version.make(s)
export const isSome = Option.isSome
