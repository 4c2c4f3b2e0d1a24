/** Test helpers: a directory as a comparable list (paths, kinds, exec bits, contents, link targets), and git. */
import { execFileSync } from "node:child_process"
import { lstatSync, readdirSync, readFileSync, readlinkSync } from "node:fs"
import { join } from "node:path"

export interface SnapshotEntry {
  readonly path: string
  readonly kind: "file" | "exec" | "symlink" | "directory"
  readonly content?: string
}

/** Everything below `dir` (not following symlinks), sorted by path; `.git` left out. */
export const snapshot = (dir: string, rel = ""): Array<SnapshotEntry> => {
  const out: Array<SnapshotEntry> = []
  for (const name of readdirSync(join(dir, rel)).sort()) {
    if (name === ".git") continue
    const path = rel === "" ? name : `${rel}/${name}`
    const abs = join(dir, path)
    const info = lstatSync(abs)
    if (info.isSymbolicLink()) out.push({ path, kind: "symlink", content: readlinkSync(abs) })
    else if (info.isDirectory()) out.push({ path, kind: "directory" }, ...snapshot(dir, path))
    else out.push({ path, kind: (info.mode & 0o100) !== 0 ? "exec" : "file", content: readFileSync(abs).toString("base64") })
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
}

/** Runs git with a fixed identity and no user/system config surprises; returns stdout. */
export const git = (cwd: string, ...args: Array<string>): string =>
  execFileSync("git", ["-c", "user.name=upm test", "-c", "user.email=test@upm.invalid", "-c", "core.autocrlf=false", ...args], {
    cwd,
    env: { ...process.env, GIT_CONFIG_NOSYSTEM: "1", GIT_CONFIG_GLOBAL: "/dev/null" },
    stdio: ["ignore", "pipe", "pipe"]
  }).toString()
