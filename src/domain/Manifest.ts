/**
 * `upm.json`, the manifest at the root of every release tree.
 *
 * ```json
 * { "name": "alice/greetings", "version": "1.2.0", "description": "Says hello",
 *   "dependencies": { "bob/colors": "^2.0.0" }, "ignore": ["*.log", "tmp/"] }
 * ```
 */
import { Either, ParseResult, Schema } from "effect"
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

// ---------------------------------------------------------------------------------------------
// Errors a person can act on: which field, what is wrong, how to fix it.

/** The largest `upm.json` accepted. */
export const MAX_MANIFEST_BYTES = 1024 * 1024

export const ManifestIssue = Schema.Struct({
  /** The field, as a dotted path (`dependencies.bob/colors`), or "" for the whole file. */
  field: Schema.String,
  message: Schema.String,
  fix: Schema.String
})
export type ManifestIssue = typeof ManifestIssue.Type

export class ManifestInvalid extends Schema.TaggedError<ManifestInvalid>()("ManifestInvalid", {
  path: Schema.String,
  issues: Schema.Array(ManifestIssue)
}) {
  override get message() {
    return `${this.path} is not valid:\n` +
      this.issues.map((i) => `  ${i.field === "" ? "(file)" : i.field}: ${i.message}\n    fix: ${i.fix}`).join("\n")
  }
}

const FIXES: Record<string, string> = {
  name: `set "name" to "<owner>/<package>", lower case, e.g. "alice/greetings"`,
  version: `set "version" to a semver version without a leading v, e.g. "1.0.0"`,
  description: `make "description" a string of at most 1024 characters`,
  license: `make "license" an SPDX identifier such as "MIT"`,
  dependencies: `map "owner/name" to a semver range, e.g. { "bob/colors": "^2.0.0" }`,
  files: `make "files" a list of path patterns, e.g. ["src/", "README.md"]`,
  ignore: `make "ignore" a list of gitignore patterns, e.g. ["*.log", "tmp/"]`
}

const fixFor = (field: string, message: string): string => {
  if (message.includes("is missing")) {
    const top = field.split(".")[0] ?? field
    return `add ${FIXES[top] === undefined ? `"${top}"` : FIXES[top]!.replace(/^(set|make|map) /, "")}`
  }
  if (message.includes("is unexpected")) return `remove "${field}" (known fields: ${Object.keys(FIXES).join(", ")})`
  return FIXES[field.split(".")[0] ?? ""] ?? "see docs/cli.md for the upm.json format"
}

/**
 * Decodes `upm.json` text; on failure every problem is listed with its field and a fix. Unknown fields are
 * refused (a misspelt "dependencies" must not silently install nothing).
 */
export const parseManifest = (text: string, path: string): Either.Either<Manifest, ManifestInvalid> => {
  const invalid = (issues: ReadonlyArray<ManifestIssue>) => Either.left(new ManifestInvalid({ path, issues }))
  if (text.length > MAX_MANIFEST_BYTES) {
    return invalid([{ field: "", message: `larger than ${MAX_MANIFEST_BYTES} bytes`, fix: "a manifest lists metadata, not data" }])
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    return invalid([{ field: "", message: `not JSON: ${e instanceof Error ? e.message : String(e)}`, fix: "check commas, quotes and braces" }])
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return invalid([{ field: "", message: "not a JSON object", fix: `start from {"name": "alice/greetings", "version": "1.0.0"}` }])
  }
  return Schema.decodeUnknownEither(Manifest, { errors: "all", onExcessProperty: "error" })(json).pipe(
    Either.mapLeft((e) =>
      new ManifestInvalid({
        path,
        issues: ParseResult.ArrayFormatter.formatErrorSync(e)
          .map((i) => {
            const field = i.path.map(String).join(".")
            const message = i.message.replace(/^Expected [^,]+, actual /, "got ")
            return { field, message, fix: fixFor(field, i.message) }
          })
          // A record reports its bad entry and then itself again: keep the most precise.
          .filter((i, _, all) => !all.some((j) => j.field.startsWith(`${i.field}.`)))
      }))
  )
}
