/**
 * Package names, versions, ranges and release refs.
 *
 * - An owner and a package name are each 1–64 characters of `a-z 0-9 - _ .`, starting with a letter or digit,
 *   lower case only (so two names never differ only in case on a case-insensitive disk).
 * - A version is a strict semver 2.0.0 version (no leading `v`, no build-metadata-only differences: build
 *   metadata is rejected, since `1.0.0+a` and `1.0.0+b` would be the same release).
 * - A release is the annotated tag `<owner>/<name>/v<version>`, stored under `refs/tags/`.
 */
import { Either, Schema } from "effect"
import semver from "semver"

const SEGMENT = /^[a-z0-9][a-z0-9._-]{0,63}$/

export const Segment = Schema.String.pipe(
  Schema.filter((s) =>
    (SEGMENT.test(s) && !s.includes("..") && !s.endsWith(".lock") && !s.endsWith(".")) ||
    `"${s}" is not a valid name: 1–64 of a-z 0-9 . _ - starting with a letter or digit`)
)

export const PackageName = Schema.String.pipe(
  Schema.filter((s) => {
    const parts = s.split("/")
    return (parts.length === 2 && parts.every((p) => Schema.is(Segment)(p))) ||
      `"${s}" is not a package name: expected owner/name, each 1–64 of a-z 0-9 . _ - starting with a letter or digit`
  }),
  Schema.brand("PackageName")
)
export type PackageName = typeof PackageName.Type

export const ownerOf = (name: PackageName): string => name.slice(0, name.indexOf("/"))

export const Version = Schema.String.pipe(
  Schema.filter((s) =>
    (s.length <= 128 && semver.valid(s) === s && !s.includes("+")) ||
    `"${s}" is not a semver version (like 1.2.3 or 1.2.3-beta.1, no build metadata)`),
  Schema.brand("Version")
)
export type Version = typeof Version.Type

/** A semver range as the `semver` package reads it (`^1.2`, `>=3.1 <4`, `*`, an exact version). */
export const Range = Schema.String.pipe(
  Schema.filter((s) => (s.length <= 256 && semver.validRange(s) !== null) || `"${s}" is not a semver range`),
  Schema.brand("Range")
)
export type Range = typeof Range.Type

export const compareVersions = (a: Version, b: Version): number => semver.compare(a, b)

/**
 * The highest version satisfying `range`. Prereleases match only when the range names a prerelease of the
 * same major.minor.patch (semver's default rule); with no range, the highest stable version, else the highest.
 */
export const maxSatisfying = (versions: ReadonlyArray<Version>, range: Range | undefined): Version | undefined => {
  if (range === undefined) {
    const stable = versions.filter((v) => semver.prerelease(v) === null)
    const pool = stable.length > 0 ? stable : versions
    return [...pool].sort(compareVersions).at(-1)
  }
  const best = semver.maxSatisfying([...versions], range)
  return best === null ? undefined : Version.make(best)
}

/** The tag name of a release: `owner/name/v1.2.3`. */
export const releaseTagName = (name: PackageName, version: Version): string => `${name}/v${version}`

/** The ref of a release: `refs/tags/owner/name/v1.2.3`. */
export const releaseRefName = (name: PackageName, version: Version): string => `refs/tags/${releaseTagName(name, version)}`

export class InvalidReleaseName extends Schema.TaggedError<InvalidReleaseName>()("InvalidReleaseName", {
  input: Schema.String,
  detail: Schema.String
}) {}

/** Reads `owner/name/v1.2.3` (a tag name) or `refs/tags/owner/name/v1.2.3` (a ref). */
export const parseRelease = (
  input: string
): Either.Either<{ readonly name: PackageName; readonly version: Version }, InvalidReleaseName> => {
  const tagName = input.startsWith("refs/tags/") ? input.slice("refs/tags/".length) : input
  const match = /^([^/]+\/[^/]+)\/v([^/]+)$/.exec(tagName)
  if (!match) return Either.left(new InvalidReleaseName({ input, detail: "expected owner/name/v<version>" }))
  const name = Schema.decodeUnknownEither(PackageName)(match[1])
  if (Either.isLeft(name)) return Either.left(new InvalidReleaseName({ input, detail: `bad package name "${match[1]}"` }))
  const version = Schema.decodeUnknownEither(Version)(match[2])
  if (Either.isLeft(version)) return Either.left(new InvalidReleaseName({ input, detail: `bad version "${match[2]}"` }))
  return Either.right({ name: name.right, version: version.right })
}

/**
 * A package identifier as users type it: `owner/name`, `owner/name@range`, or seed 000's `owner/name>3.1`
 * style (an operator directly after the name).
 */
export const parseIdentifier = (
  input: string
): Either.Either<{ readonly name: PackageName; readonly range: Range | undefined }, InvalidReleaseName> => {
  const match = /^([a-z0-9][a-z0-9._-]*\/[a-z0-9][a-z0-9._-]*)(?:@(.+)|([<>=~^].*))?$/.exec(input.trim())
  if (!match) return Either.left(new InvalidReleaseName({ input, detail: "expected owner/name[@range]" }))
  const name = Schema.decodeUnknownEither(PackageName)(match[1])
  if (Either.isLeft(name)) return Either.left(new InvalidReleaseName({ input, detail: `bad package name "${match[1]}"` }))
  const rangeText = match[2] ?? match[3]
  if (rangeText === undefined) return Either.right({ name: name.right, range: undefined })
  const range = Schema.decodeUnknownEither(Range)(rangeText)
  if (Either.isLeft(range)) return Either.left(new InvalidReleaseName({ input, detail: `bad range "${rangeText}"` }))
  return Either.right({ name: name.right, range: range.right })
}
