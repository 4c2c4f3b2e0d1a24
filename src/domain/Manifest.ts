/**
 * `upm.json`, the manifest at the root of every release tree.
 *
 * ```json
 * { "name": "alice/greetings", "version": "1.2.0", "description": "Says hello",
 *   "dependencies": { "bob/colors": "^2.0.0" }, "ignore": ["*.log", "tmp/"] }
 * ```
 */
import { Schema } from "effect"
import { PackageName, Range, Version } from "./Package.js"

export const MANIFEST_FILE = "upm.json"

export const Manifest = Schema.Struct({
  name: PackageName,
  version: Version,
  description: Schema.optional(Schema.String.pipe(Schema.maxLength(1024))),
  license: Schema.optional(Schema.String.pipe(Schema.maxLength(128))),
  dependencies: Schema.optional(Schema.Record({ key: PackageName, value: Range })),
  /** Paths to include (gitignore-style patterns); when absent, everything not ignored. */
  files: Schema.optional(Schema.Array(Schema.String.pipe(Schema.maxLength(1024))).pipe(Schema.maxItems(1000))),
  /** Extra ignore patterns (gitignore syntax), added to `.upmignore`. */
  ignore: Schema.optional(Schema.Array(Schema.String.pipe(Schema.maxLength(1024))).pipe(Schema.maxItems(1000)))
})
export type Manifest = typeof Manifest.Type

/** Decodes `upm.json` text; errors name the field. */
export const decodeManifestJson = Schema.decodeUnknownEither(Schema.parseJson(Manifest), { errors: "all" })
