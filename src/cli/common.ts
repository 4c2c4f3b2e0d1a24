/**
 * Shared by client subcommands: the common options (options.ts) and the client's layers and output helpers
 * (run/client.ts). Command definitions should import options.ts and load run/ lazily, to keep start-up small.
 */
export * from "./options.js"
export { clientLayer, type ClientServices, formatBytes, isTty, localStoreLayer, noServer, note, printJson } from "./run/client.js"
