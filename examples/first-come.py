#!/usr/bin/env python3
"""First come, first served package names, guarded by a password (seed 000).

Per-request handler for `propose`:

    "handlers": { "propose": { "command": "python3", "args": ["examples/first-come.py"],
                               "env": { "FIRST_COME_DB": "/var/lib/upm/first-come.json" } } }

The first publisher of a package name sets a password; later releases of that name need it. The handler asks
through `upm receive`, so it needs the publisher's conversation (`upm publish` opens one). Passwords are kept as
salted scrypt hashes and compared in constant time.
"""
import hashlib
import hmac
import json
import os
import shlex
import struct
import subprocess
import sys
import tempfile

DB = os.environ.get("FIRST_COME_DB", "first-come.json")


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
    command = shlex.split(os.environ.get("UPM_BIN", "upm")) + list(args)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip() or "upm failed")
    return result.stdout.rstrip("\n")


def load():
    try:
        with open(DB, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def save(db):
    # Write then rename: a crash never leaves half a file.
    directory = os.path.dirname(os.path.abspath(DB))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".first-come-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(db, f)
    os.replace(tmp, DB)


def hash_password(password, salt):
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=16384, r=8, p=1, dklen=32)


def decide(request):
    header, release = request["header"], request["payload"]["data"]
    name = release["name"]
    handle, socket = header.get("handle"), header.get("handleSocket")
    if not handle:
        return "rejected", f"{name}: this server asks for a password; publish with a conversation (upm publish)"
    send = lambda text: upm("send", "--socket", socket, handle, text)
    receive = lambda prompt: upm("receive", "--socket", socket, handle, prompt)
    db = load()
    entry = db.get(name)
    if entry is None:
        send(f"Okay, nobody ever created a package named {name}, so you are allowed. please setup a password")
        password = receive("password")
        if len(password) < 8:
            return "rejected", "a password has at least 8 characters"
        salt = os.urandom(16)
        db[name] = {"salt": salt.hex(), "hash": hash_password(password, salt).hex()}
        save(db)
        return "accepted", f"{name} is yours"
    send("Oh, but somebody already created a package with that name. if you have the password, i'll do it.")
    password = receive("password")
    expected = bytes.fromhex(entry["hash"])
    if hmac.compare_digest(hash_password(password, bytes.fromhex(entry["salt"])), expected):
        return "accepted", "password ok"
    return "rejected", "wrong password"


def main():
    request = read_frame(sys.stdin.buffer)
    if request is None:
        return
    try:
        decision, text = decide(request)
    except RuntimeError as e:
        decision, text = "rejected", f"could not talk with you: {e}"
    print(f"{request['payload']['data']['name']}: {decision} ({text})", file=sys.stderr)
    key = "message" if decision != "rejected" else "reason"
    write_frame(sys.stdout.buffer, {
        "header": {"status": decision, "command": "sendClients", "id": request["header"]["id"]},
        "payload": {"type": "propose", "data": {"decision": decision, key: text}},
    })


if __name__ == "__main__":
    main()
