/** `upm receive` lives beside `upm send` (src/cli/send.ts); re-exported here for symmetry. */
export { receive } from "./send.js"
