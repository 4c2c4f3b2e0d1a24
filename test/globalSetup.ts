/**
 * Runs once before the whole suite: makes sure the compiled CLI (dist/) is current, since end-to-end tests
 * spawn `bin/upm.js` as a real process.
 */
import { execFileSync } from "node:child_process"

export default function setup() {
  execFileSync("npx", ["tsc", "-p", "tsconfig.build.json"], { stdio: "inherit" })
}
