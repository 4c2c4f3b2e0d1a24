/**
 * Runs once before the whole suite: makes sure the compiled CLI (dist/, and dist/bundle/ which bin/upm.js prefers
 * when it is current) is current, since end-to-end tests spawn `bin/upm.js` as a real process; and starts the
 * throwaway PostgreSQL cluster the postgres tests share
 * (test/pg.ts; stopped by the returned teardown, which vitest runs whether tests pass or fail).
 */
import { execFileSync } from "node:child_process"
import type { TestProject } from "vitest/node"
import { setupPg } from "./pg.js"

export default async function setup(project: TestProject) {
  execFileSync("npx", ["tsc", "-p", "tsconfig.build.json"], { stdio: "inherit" })
  execFileSync("npm", ["run", "--silent", "bundle"], { stdio: "inherit" })
  return setupPg((info) => project.provide("upmPg", info))
}
