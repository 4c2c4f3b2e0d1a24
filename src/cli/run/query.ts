/** The read commands' implementations: `match`, `versions`, `search`, `info`. Each prints text, or JSON with `--json`. */
import type { Command } from "@effect/cli"
import type { infoConfig, matchConfig, searchConfig, versionsConfig } from "../query.js"
import { Console, Effect, Either, Option } from "effect"
import { type PackageName, type Range, Version } from "../../domain/Package.js"
import { decodeReleaseMessage } from "../../domain/ReleaseMessage.js"
import { fingerprint, formatPublicKey } from "../../domain/SshKey.js"
import { planTree } from "../../services/Exporter.js"
import { getDecoded, ObjectStore } from "../../services/ObjectStore.js"
import { Remote } from "../../services/Remote.js"
import { NoMatchingVersion, PackageNotFound } from "../../services/Resolver.js"
import type { SyncSession } from "../../services/SyncClient.js"
import { verifySignature } from "../../services/Verifier.js"
import { clientLayer, formatBytes, printJson, readOptions } from "./client.js"

/** Levenshtein distance, for "did you mean". */
const distance = (a: string, b: string): number => {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = tmp
    }
  }
  return row[b.length]!
}

/** Names on the server that look like `name`: searched by each half, ranked by edit distance. */
export const suggestions = (session: SyncSession, name: string) =>
  Effect.gen(function* () {
    const [owner = "", pkg = ""] = name.split("/")
    const found = new Set<string>()
    for (const text of [pkg, owner, pkg.slice(0, 3)]) {
      if (text.length === 0) continue
      for (const n of yield* session.search(text).pipe(Effect.orElseSucceed(() => [] as ReadonlyArray<string>))) found.add(n)
    }
    return [...found]
      .map((n) => ({ n, d: distance(n, name) }))
      .filter(({ d }) => d <= Math.max(3, Math.floor(name.length / 2)))
      .sort((a, b) => a.d - b.d || (a.n < b.n ? -1 : 1))
      .slice(0, 3)
      .map(({ n }) => n)
  })

/** The best release for name@range, or a NotFound / NoMatchingVersion a person can act on. */
export const matchOrExplain = (session: SyncSession, name: PackageName, range: Range | undefined) =>
  Effect.gen(function* () {
    const match = yield* session.match(name, range)
    if (Option.isSome(match)) return match.value
    const all = yield* session.versions(name)
    if (all.length === 0) {
      return yield* new PackageNotFound({ name, path: [], suggestions: yield* suggestions(session, name) })
    }
    return yield* new NoMatchingVersion({ name, range: range ?? "(newest)", path: [], available: all.map((r) => r.version) })
  })

export const match = (o: Command.Command.ParseConfig<typeof matchConfig>) =>
  Effect.gen(function* () {
    const session = yield* (yield* Remote).session
    const found = yield* matchOrExplain(session, o.package.name, o.package.range)
    if (o.json) return yield* printJson({ name: o.package.name, version: found.version, hash: found.hash })
    yield* Console.log(`${found.version} ${found.hash}`)
  }).pipe(Effect.provide(clientLayer(o.server)))

export const versions = (o: Command.Command.ParseConfig<typeof versionsConfig>) =>
  Effect.gen(function* () {
    const session = yield* (yield* Remote).session
    const all = yield* session.versions(o.package.name)
    if (all.length === 0) {
      return yield* new PackageNotFound({ name: o.package.name, path: [], suggestions: yield* suggestions(session, o.package.name) })
    }
    if (o.json) return yield* printJson(all.map((r) => ({ version: r.version, hash: r.hash })))
    for (const r of all) yield* Console.log(`${r.version} ${r.hash}`)
  }).pipe(Effect.provide(clientLayer(o.server)))

export const search = (o: Command.Command.ParseConfig<typeof searchConfig>) =>
  Effect.gen(function* () {
    const session = yield* (yield* Remote).session
    const names = yield* session.search(o.text)
    if (o.json) return yield* printJson(names)
    for (const n of names) yield* Console.log(n)
  }).pipe(Effect.provide(clientLayer(o.server)))

export const info = (o: Command.Command.ParseConfig<typeof infoConfig>) =>
  Effect.gen(function* () {
    const store = yield* ObjectStore
    const session = yield* (yield* Remote).session
    const found = yield* matchOrExplain(session, o.package.name, o.package.range)
    if (!(yield* store.has(found.hash))) yield* session.pull(found.hash)
    const object = yield* getDecoded(found.hash)
    if (object.type !== "tag") return yield* Effect.dieMessage(`${found.hash} is not a tag`)
    const { shape, publicKey } = yield* verifySignature(found.hash, object.tag)
    const metadata = Either.getOrUndefined(decodeReleaseMessage(object.tag.message))
    const plan = yield* planTree(shape.tree)
    const files = plan.filter((e) => e.kind !== "directory").map((e) => e.path).sort()
    const sizes = yield* Effect.forEach(plan, (e) => (e.kind === "file" ? Effect.map(store.get(e.hash), (b) => b.body.length) : Effect.succeed(0)))
    const total = sizes.reduce((a, b) => a + b, 0)
    const result = {
      name: shape.name,
      version: Version.make(shape.version),
      hash: found.hash,
      tree: shape.tree,
      signer: fingerprint(publicKey),
      publicKey: formatPublicKey(publicKey),
      tagger: object.tag.tagger ?? "",
      description: metadata?.description ?? "",
      license: metadata?.license ?? "",
      dependencies: metadata?.dependencies ?? {},
      files,
      bytes: total
    }
    if (o.json) return yield* printJson(result)
    const lines = [
      `${result.name}@${result.version}${result.description === "" ? "" : ` — ${result.description}`}`,
      `release   ${result.hash}`,
      `tree      ${result.tree}`,
      `signer    ${result.signer}`,
      ...(result.license === "" ? [] : [`license   ${result.license}`]),
      `tagger    ${result.tagger}`,
      `dependencies${Object.keys(result.dependencies).length === 0 ? "  (none)" : ""}`,
      ...Object.entries(result.dependencies).map(([n, r]) => `  ${n} ${r}`),
      `files (${files.length}, ${formatBytes(total)})`,
      ...files.map((f) => `  ${f}`)
    ]
    yield* Console.log(lines.join("\n"))
  }).pipe(Effect.provide(clientLayer(o.server)))
