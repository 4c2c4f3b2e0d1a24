/** Commands on the local store (UPM_HOME/store): `fsck`, `export`, `gc`. */
import type { Command } from "@effect/cli"
import type { exportConfig, fsckConfig, gcConfig } from "../local.js"
import { FileSystem, Path } from "@effect/platform"
import { Console, Effect, Either, Option, Stream } from "effect"
import type { ObjectHash } from "../../domain/ObjectHash.js"
import { ClientConfig } from "../../services/ClientConfig.js"
import { exportTarGz, exportTree, exportZip } from "../../services/Exporter.js"
import { findRelease, fsck as runFsck, gc as runGc } from "../../services/LocalStore.js"
import { getDecoded, ObjectStore } from "../../services/ObjectStore.js"
import { Remote } from "../../services/Remote.js"
import { verifySignature } from "../../services/Verifier.js"
import { clientLayer, formatBytes, json, noServer, printJson, server, verbose } from "./client.js"
import { CliError, ExitCode } from "../errors.js"
import { matchOrExplain } from "./query.js"

export const fsck = (o: Command.Command.ParseConfig<typeof fsckConfig>) =>
  Effect.gen(function* () {
    const report = yield* runFsck
    if (o.json) yield* printJson(report)
    else {
      for (const p of report.problems) yield* Console.log(`${p.what}: ${p.detail}`)
      yield* Console.error(`checked ${report.objects} objects, ${report.refs} refs (${report.releases} releases): ` +
        (report.problems.length === 0 ? "all good" : `${report.problems.length} problem(s)`))
    }
    if (report.problems.length > 0) {
      return yield* new CliError({
        code: ExitCode.Verification,
        detail: `the local store has ${report.problems.length} problem(s)`,
        hint: "`upm gc` removes unreachable objects; a release with problems is fetched again after removing its ref"
      })
    }
  }).pipe(Effect.provide(clientLayer(noServer)))

export const gc = (o: Command.Command.ParseConfig<typeof gcConfig>) =>
  Effect.gen(function* () {
    const config = yield* ClientConfig
    const report = yield* runGc(config.paths.store, o.dryRun)
    if (o.json) return yield* printJson(report)
    yield* Console.log(`${o.dryRun ? "would remove" : "removed"} ${report.removed} unreachable object(s) (${formatBytes(report.bytes)}); ${report.kept} kept`)
  }).pipe(Effect.provide(clientLayer(noServer)))

export const exportRelease = (o: Command.Command.ParseConfig<typeof exportConfig>) =>
  Effect.gen(function* () {
    const store = yield* ObjectStore
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const remote = yield* Remote
    // The release: from the local store when it has it, else from the server.
    let hash: ObjectHash
    if (o.ref._tag === "Hash") hash = o.ref.hash
    else {
      const local = yield* findRelease(o.ref.name, o.ref.range)
      if (Option.isSome(local)) hash = local.value.hash
      else hash = (yield* matchOrExplain(yield* remote.session, o.ref.name, o.ref.range)).hash
    }
    if (!(yield* store.has(hash))) yield* (yield* remote.session).pull(hash)
    const object = yield* getDecoded(hash)
    if (object.type !== "tag") return yield* new CliError({ code: ExitCode.Usage, detail: `${hash} is a ${object.type}, not a release` })
    const { shape } = yield* verifySignature(hash, object.tag)
    const base = `${shape.name.replace("/", "-")}-${shape.version}`
    const target = Option.getOrElse(o.out, () => (o.format === "dir" ? base : `${base}.${o.format}`))
    if (o.format === "dir") {
      const result = yield* exportTree(shape.tree, path.resolve(target))
      return yield* Console.error(`exported ${shape.name}@${shape.version} into ${target} (${result.files} files, ${formatBytes(result.bytes)})`)
    }
    const stream = o.format === "zip" ? exportZip(shape.tree, { prefix: base }) : exportTarGz(shape.tree, { prefix: base })
    if (target === "-") {
      return yield* stream.pipe(Stream.runForEach((chunk) => Effect.async<void>((resume) => {
        process.stdout.write(chunk, () => resume(Effect.void))
      })))
    }
    yield* stream.pipe(Stream.run(fs.sink(target)))
    yield* Console.error(`wrote ${target}`)
  }).pipe(Effect.provide(clientLayer(o.server)))
