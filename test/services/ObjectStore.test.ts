/** Runs the one ObjectStore contract suite against every layer. */
import { FileSystem, Path } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { Context, Effect, Layer } from "effect"
import type { ObjectHash } from "../../src/domain/ObjectHash.js"
import { layerFs } from "../../src/services/FsStore.js"
import * as ObjectStore from "../../src/services/ObjectStore.js"
import { type Damage, objectStoreConformance } from "./ObjectStoreConformance.js"

objectStoreConformance("memory", ObjectStore.layerMemory)

/** The root of the fs store under test, so the suite can damage its files. */
class FsRoot extends Context.Tag("test/FsRoot")<FsRoot, string>() {}

/** A fresh bare repository in a temp directory, removed after the test. */
const fsLayer = Layer.unwrapScoped(Effect.gen(function* () {
  const fs = yield* FileSystem.FileSystem
  const root = yield* fs.makeTempDirectoryScoped({ prefix: "upm-store-" })
  return Layer.merge(layerFs(root), Layer.succeed(FsRoot, root))
})).pipe(Layer.provideMerge(NodeContext.layer))

/** Flips a byte in the middle of a loose object, or cuts its file in half (files are read-only, as git makes them). */
const damageFs = (hash: ObjectHash, how: Damage) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const file = path.join(yield* FsRoot, "objects", hash.slice(0, 2), hash.slice(2))
    const bytes = yield* fs.readFile(file)
    yield* fs.chmod(file, 0o644)
    const damaged = how === "truncate" ? bytes.subarray(0, Math.floor(bytes.length / 2)) : Uint8Array.from(bytes)
    if (how === "flip") damaged[Math.floor(damaged.length / 2)]! ^= 0x01
    yield* fs.writeFile(file, damaged)
  })

objectStoreConformance("fs", fsLayer, { damage: damageFs })
