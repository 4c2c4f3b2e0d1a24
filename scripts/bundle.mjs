// Bundles the compiled CLI (tsc's dist/main.js) with esbuild into dist/bundle/: what every command loads in a few
// files, each command's own implementation (dynamic imports) in chunks loaded when it runs. Node's ESM loader pays
// per file: `upm --version` takes ~0.3 s of CPU from the bundle against ~1 s from the modules. bin/upm.js uses the
// bundle when it is at least as new as dist/main.js.
//
//   node scripts/bundle.mjs [DIST] [OUT]     (defaults: dist, dist/bundle)
import { build } from "esbuild"
import { join } from "node:path"

const dist = process.argv[2] ?? "dist"
const out = process.argv[3] ?? join(dist, "bundle")
await build({
  entryPoints: [join(dist, "main.js")],
  outdir: out,
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  logLevel: "warning",
  // Native addons and their optional companions stay packages, loaded from node_modules.
  external: ["better-sqlite3", "cpu-features", "pg-native", "ssh2"],
  // Bundled CommonJS dependencies call require(); ESM has none.
  banner: { js: "import { createRequire as __upmCreateRequire } from 'node:module'; const require = __upmCreateRequire(import.meta.url);" }
})
