/**
 * Fixtures for the message-protocol tests: a real server (Listener on 127.0.0.1:0 + the real MessageProtocol
 * layer + memory store), handler scripts written in Node, seeded releases, and process/descriptor counters.
 */
import { readdirSync, readFileSync, readlinkSync } from "node:fs"
import { NodeContext } from "@effect/platform-node"
import { Effect, Layer, Schema, Stream } from "effect"
import { encodeTag, encodeTree, type TreeEntry } from "../../src/domain/GitObject.js"
import type { PackageName, Version } from "../../src/domain/Package.js"
import { SyncProtocol } from "../../src/services/Connection.js"
import { HandlersConfig, type HandlerSpecInput } from "../../src/services/Handlers.js"
import * as Listener from "../../src/services/Listener.js"
import { connect, type ConnectOptions } from "../../src/services/MessageClient.js"
import { layerServer, MessagesConfig, type MessagesConfigInput } from "../../src/services/MessageServer.js"
import { layerMemory, ObjectStore } from "../../src/services/ObjectStore.js"
import { layerAcceptAll } from "../../src/services/ProposalPolicy.js"
import * as Registry from "../../src/services/Registry.js"
import * as SyncLimits from "../../src/services/SyncLimits.js"
import * as SyncServer from "../../src/services/SyncServer.js"
import { checkTagShape, layerUnsigned, VerifiedRelease } from "../../src/services/Verifier.js"

/** A sync protocol that answers nothing: these tests are about messages. */
const noSync = Layer.succeed(SyncProtocol, SyncProtocol.of({ serve: () => Stream.empty }))

/**
 * Node prelude for handler scripts: `onRequest(async (req) => reply)` handles framing for both modes;
 * `write(obj)` sends a frame. Requests are answered concurrently in persistent mode.
 */
const PRELUDE = String.raw`
const write = (obj) => { const b = Buffer.from(JSON.stringify(obj)); const h = Buffer.alloc(4); h.writeUInt32LE(b.length, 0); process.stdout.write(Buffer.concat([h, b])) }
const reply = (req, status, data, extra = {}) => ({ header: { status, command: "sendClients", id: req.header.id, ...extra }, payload: { type: req.payload.type, data } })
const onRequest = (fn) => {
  let buf = Buffer.alloc(0)
  process.stdin.on("data", (chunk) => {
    buf = Buffer.concat([buf, chunk])
    while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32LE(0)) {
      const len = buf.readUInt32LE(0)
      const req = JSON.parse(buf.subarray(4, 4 + len).toString("utf8"))
      buf = buf.subarray(4 + len)
      Promise.resolve(fn(req)).then((out) => { if (out !== undefined) write(out) })
    }
  })
}
`

/** A handler written in JavaScript (run by this Node), with the prelude above. */
export const nodeHandler = (code: string, spec: Partial<HandlerSpecInput> = {}): HandlerSpecInput => ({
  command: process.execPath,
  args: ["-e", PRELUDE + code],
  ...spec
})

export interface TestServerConfig {
  readonly handlers?: Record<string, HandlerSpecInput>
  readonly messages?: MessagesConfigInput
  /** Serve the real sync protocol (pushes go through the propose policy), not a silent one. */
  readonly sync?: boolean
}

/** The real message server on a loopback port, over a memory store. */
export const TestServer = (config: TestServerConfig = {}) => {
  const deps = Layer.mergeAll(Registry.layer, layerUnsigned, layerAcceptAll).pipe(Layer.provideMerge(layerMemory))
  const messaging = layerServer({
    handlers: Schema.decodeSync(HandlersConfig)(config.handlers ?? {}),
    messages: Schema.decodeSync(MessagesConfig)(config.messages ?? {}),
    accounts: { scryptN: 1024 }
  }).pipe(Layer.provideMerge(deps))
  const sync = config.sync === true
    ? SyncServer.layer.pipe(Layer.provide(SyncLimits.layerDefault), Layer.provide(messaging))
    : noSync
  return Listener.layer({ ...Listener.defaultOptions, port: 0 }).pipe(
    Layer.provide(sync),
    Layer.provideMerge(messaging),
    Layer.orDie,
    Layer.provideMerge(NodeContext.layer)
  )
}

/** A client session to the test server. */
export const client = (options: Partial<ConnectOptions> = {}) =>
  Effect.flatMap(Listener.Listener, (l) => connect({ host: "127.0.0.1", port: l.address.port, timeout: "20 seconds", ...options }))

/** Stores a minimal release graph (one file) and returns it as the Verifier would describe it. */
export const seedRelease = (name: string, version: string, content = `hello from ${name}@${version}\n`) =>
  Effect.gen(function* () {
    const store = yield* ObjectStore
    const blob = yield* store.put("blob", new TextEncoder().encode(content))
    const entries: ReadonlyArray<TreeEntry> = [{ mode: "100644", name: "README", hash: blob }]
    const tree = yield* store.put("tree", encodeTree(entries))
    const tag = {
      object: tree, type: "tree" as const, tag: `${name}/v${version}`,
      tagger: "Test <test@example.org> 0 +0000", message: "release\n", signature: undefined
    }
    const tagHash = yield* store.put("tag", encodeTag(tag))
    const shape = yield* checkTagShape(tagHash, tag)
    return new VerifiedRelease({ ...shape, signer: "unsigned" })
  })

export const sealRelease = (name: string, version: string) =>
  Effect.gen(function* () {
    const release = yield* seedRelease(name, version)
    yield* Effect.flatMap(Registry.Registry, (r) => r.seal(release))
    return release
  })

export type { PackageName, Version }

// ---------------------------------------------------------------------------------------------
// Leak checks (Linux /proc)

/** Live children of this process, and how many of them are zombies. */
export const children = () => {
  let live = 0
  let zombies = 0
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8")
      // pid (comm) state ppid …  — comm may contain spaces: split after the last ')'
      const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      if (Number(ppid) === process.pid) {
        if (state === "Z") zombies++
        else live++
      }
    } catch {
      // the process went away while we looked
    }
  }
  return { live, zombies }
}

/** Open descriptors of this process that are pipes or sockets (what a leaked child or connection leaves). */
export const openPipesAndSockets = () =>
  readdirSync("/proc/self/fd").filter((fd) => {
    try {
      return /^(pipe|socket):/.test(readlinkSync(`/proc/self/fd/${fd}`))
    } catch {
      return false
    }
  }).length

/**
 * Waits (real time, bounded, also under the TestClock) until `check` holds: for what the OS finishes on its own
 * (a child reaped, a descriptor closed, a file a child wrote), which no Effect event signals.
 */
export const eventually = (check: () => boolean, what: string, within = 5000) =>
  Effect.gen(function* () {
    const start = Date.now()
    while (!check()) {
      if (Date.now() - start > within) return yield* Effect.dieMessage(`not ${what} within ${within} ms`)
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 20)))
    }
  })
