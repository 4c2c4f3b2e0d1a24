#!/usr/bin/env python3
"""A moderation queue (seed 000): every proposed release waits for a maintainer.

Per-request handler for the `propose` type:

    "handlers": { "propose": { "command": "python3", "args": ["examples/moderation-queue.py"] } }

It reads one request frame on stdin, tells the user what happens (through `upm send`, when the publisher is
listening), and answers `queued`. The maintainer decides later with `upm queue list|accept|reject`.
"""
import json
import os
import shlex
import struct
import subprocess
import sys

MESSAGE = "Ah okay, I will put it in the list for proposed packages, the maintainer will accept it maybe"


def read_frame(stream):
    header = stream.read(4)
    if len(header) < 4:
        return None
    (length,) = struct.unpack("<I", header)
    return json.loads(stream.read(length).decode("utf-8"))


def write_frame(stream, message):
    body = json.dumps(message).encode("utf-8")
    stream.write(struct.pack("<I", len(body)) + body)
    stream.flush()


def upm(*args):
    """Runs the upm CLI (UPM_BIN may name it, e.g. "node /opt/upm/bin/upm.js")."""
    command = shlex.split(os.environ.get("UPM_BIN", "upm")) + list(args)
    return subprocess.run(command, capture_output=True, text=True, check=False)


def main():
    request = read_frame(sys.stdin.buffer)
    if request is None:
        return
    header, payload = request["header"], request["payload"]
    release = payload["data"]
    handle = header.get("handle")
    if handle:
        upm("send", "--socket", header["handleSocket"], handle, MESSAGE)
    print(f"queued {release['name']}@{release['version']} from {release['signer']}", file=sys.stderr)
    write_frame(sys.stdout.buffer, {
        "header": {"status": "queued", "command": "sendClients", "id": header["id"]},
        "payload": {"type": "propose", "data": {"decision": "queued", "message": MESSAGE}},
    })


if __name__ == "__main__":
    main()
