#!/usr/bin/env node
// `npm run build` writes the modules (tsc: dist/main.js …) and bundles them (esbuild: dist/bundle/, what every
// command loads in a few files, the rest in lazily loaded chunks). The bundle starts ~3× faster (Node's ESM
// loader pays per file), so it is used when present and at least as new as the modules: a tsc-only rebuild
// never runs stale code.
import { statSync } from "node:fs"

const mtime = (path) => {
  try {
    return statSync(new URL(path, import.meta.url)).mtimeMs
  } catch {
    return -1
  }
}
const bundle = mtime("../dist/bundle/main.js")
await import(bundle >= 0 && bundle >= mtime("../dist/main.js") ? "../dist/bundle/main.js" : "../dist/main.js")
