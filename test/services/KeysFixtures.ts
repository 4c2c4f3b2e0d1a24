/**
 * Test helpers for signing: the committed test-only keys (test/fixtures/keys/README.md), loaded without the
 * Keys service so tests that are not about key files stay fast.
 */
import { createPrivateKey } from "node:crypto"
import { chmodSync, copyFileSync, mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Either } from "effect"
import ssh2 from "ssh2"
import { encodeTree } from "../../src/domain/GitObject.js"
import { parsePublicKeyBlob, formatPublicKey, type PublicKey } from "../../src/domain/SshKey.js"
import { signingKeyFromKeyObject, type SigningKey } from "../../src/services/Keys.js"

export const FIXTURES = join(import.meta.dirname, "..", "fixtures", "keys")
export const fixturePath = (name: string) => join(FIXTURES, name)

/** A copy of a fixture key in a fresh temp dir, mode 600 (git does not keep modes). */
export const privateCopy = (name: string, mode = 0o600): string => {
  const dir = mkdtempSync(join(tmpdir(), "upm-keys-"))
  const target = join(dir, name)
  copyFileSync(fixturePath(name), target)
  chmodSync(target, mode)
  return target
}

/** An unencrypted fixture key as a SigningKey held in memory. */
export const memoryKey = (name: string): SigningKey => {
  const parsed = ssh2.utils.parseKey(readFileSync(fixturePath(name)))
  if (parsed instanceof Error) throw parsed
  const publicKey: PublicKey = Either.getOrThrow(parsePublicKeyBlob(parsed.getPublicSSH()))
  return signingKeyFromKeyObject(createPrivateKey(parsed.getPrivatePEM()), publicKey, parsed.comment)
}

export const publicLine = (key: SigningKey) => formatPublicKey(key.publicKey)

/** The empty tree's body (hash 4b825dc642cb6eb9a060e54bf8d69288fbee4904). */
export const EMPTY_TREE = encodeTree([])
