#!/usr/bin/env node
// Trust-all (seed 000): "OH YES I TRUST THIS PACKAGE IT IS GOOD". Accepts every proposed release.
//
// A *persistent* handler: one process answers every request, several at once, each reply echoing the request's
// header.id. Config:
//
//   "handlers": { "propose": { "command": "node", "args": ["examples/trust-all.mjs"], "mode": "persistent" } }
//
// It tells the publisher through `upm send` (the handle and the socket are in each request's header).
import { execFile } from "node:child_process"

const MESSAGE = "OH YES I TRUST THIS PACKAGE IT IS GOOD"
const [upmCommand, ...upmArgs] = (process.env.UPM_BIN ?? "upm").split(" ")

const write = (message) => {
  const body = Buffer.from(JSON.stringify(message))
  const header = Buffer.alloc(4)
  header.writeUInt32LE(body.length, 0)
  process.stdout.write(Buffer.concat([header, body]))
}

const upm = (...args) =>
  new Promise((resolve) => execFile(upmCommand, [...upmArgs, ...args], (error, stdout) => resolve({ error, stdout })))

const handle = async (request) => {
  const { header, payload } = request
  if (header.handle) await upm("send", "--socket", header.handleSocket, header.handle, MESSAGE)
  console.error(`accepted ${payload.data.name}@${payload.data.version}`)
  write({
    header: { status: "accepted", command: "sendClients", id: header.id },
    payload: { type: "propose", data: { decision: "accepted", message: MESSAGE } }
  })
}

// Frames may arrive split or several per chunk: buffer and cut.
let buffer = Buffer.alloc(0)
process.stdin.on("data", (chunk) => {
  buffer = Buffer.concat([buffer, chunk])
  while (buffer.length >= 4 && buffer.length >= 4 + buffer.readUInt32LE(0)) {
    const length = buffer.readUInt32LE(0)
    const request = JSON.parse(buffer.subarray(4, 4 + length).toString("utf8"))
    buffer = buffer.subarray(4 + length)
    handle(request).catch((e) => console.error(`failed: ${e}`))
  }
})
process.stdin.on("end", () => process.exit(0))
