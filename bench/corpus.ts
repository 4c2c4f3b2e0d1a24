/** Corpora shared by the benchmarks: real npm packages fetched at bench time, and seeded synthetic trees. */
import { execFileSync } from "node:child_process"
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"

/** Unpacks `npm pack <spec>` (e.g. `typescript@5.6.3`) into `into/package`; returns that directory. */
export const fetchNpmPackage = (spec: string, into: string): string => {
  const file = execFileSync("npm", ["pack", spec, "--silent"], { cwd: into, stdio: ["ignore", "pipe", "inherit"] })
    .toString().trim().split("\n").pop() ?? ""
  execFileSync("tar", ["-xzf", file], { cwd: into })
  return join(into, "package")
}

/** 10,000 text files of 100 B–9 KB in 3 levels of folders under `into/name`, from a fixed seed. */
export const makeSmallFiles = (into: string, name: string): string => {
  const dir = join(into, name)
  let x = 42
  const rand = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32)
  const words = ["alpha", "beta", "gamma", "delta", "lorem", "ipsum", "const", "return", "function", "=>", "{", "}", "\n"]
  for (let i = 0; i < 10_000; i++) {
    const sub = join(dir, `d${i % 10}`, `e${Math.floor(i / 10) % 10}`, `f${Math.floor(i / 100) % 10}`)
    if (i < 1000) mkdirSync(sub, { recursive: true })
    const n = 20 + Math.floor(rand() * 1500)
    const parts: Array<string> = [`// file ${i}\n`]
    for (let w = 0; w < n; w++) parts.push(words[Math.floor(rand() * words.length)]!, " ")
    writeFileSync(join(sub, `file${i}.txt`), parts.join(""))
  }
  return dir
}
