import { assert, describe, it } from "@effect/vitest"
import { Either } from "effect"
import { execFileSync } from "node:child_process"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import {
  decodeTag, decodeTree, encodeTag, encodeTree, frame, hashOf, unframe, type TreeEntry
} from "../../src/domain/GitObject.js"
import { ObjectHash } from "../../src/domain/ObjectHash.js"

const h = (c: string) => ObjectHash.make(c.repeat(40))

describe("GitObject", () => {
  it("hashes a blob exactly as git does", () => {
    const body = new TextEncoder().encode("Hello World\n")
    const dir = mkdtempSync(join(tmpdir(), "upm-go-"))
    writeFileSync(join(dir, "f"), body)
    const git = execFileSync("git", ["hash-object", join(dir, "f")]).toString().trim()
    assert.strictEqual(hashOf("blob", body), git)
  })

  it("sorts directories as name/", () => {
    const entries: Array<TreeEntry> = [
      { mode: "100644", name: "a.b", hash: h("1") },
      { mode: "40000", name: "a", hash: h("2") },
      { mode: "100644", name: "a0", hash: h("3") }
    ]
    const decoded = Either.getOrThrow(decodeTree(encodeTree(entries)))
    assert.deepStrictEqual(decoded.map((e) => e.name), ["a.b", "a", "a0"])
  })

  it("rejects unsorted, duplicate and unsafe tree entries with a reason", () => {
    const raw = (mode: string, name: string) =>
      Buffer.concat([Buffer.from(`${mode} ${name}\0`), Buffer.from("11".repeat(20), "hex")])
    const cases: Array<[Buffer, string]> = [
      [Buffer.concat([raw("100644", "b"), raw("100644", "a")]), "Unsorted"],
      [Buffer.concat([raw("100644", "a"), raw("100644", "a")]), "Duplicate"],
      [raw("100644", ".."), "BadName"],
      [raw("100644", ".git"), "BadName"],
      [raw("100644", ""), "BadName"],
      [raw("160000", "sub"), "BadMode"],
      [raw("100664", "x"), "BadMode"],
      [raw("100644", "a").subarray(0, 20), "TruncatedHash"]
    ]
    for (const [body, reason] of cases) {
      const result = decodeTree(body)
      assert.isTrue(Either.isLeft(result) && result.left.reason === reason, `${reason}`)
    }
  })

  it("checks framing and size", () => {
    assert.isTrue(Either.isRight(unframe(frame("blob", new Uint8Array([1, 2, 3])))))
    const bad = unframe(new TextEncoder().encode("blob 4\0abc"))
    assert.isTrue(Either.isLeft(bad) && bad.left.reason === "SizeMismatch")
    const unknown = unframe(new TextEncoder().encode("blub 3\0abc"))
    assert.isTrue(Either.isLeft(unknown) && unknown.left.reason === "UnknownType")
  })

  it("round-trips a signed tag byte for byte and splits off the signature", () => {
    const text =
      `object ${h("a")}\ntype tree\ntag alice/x/v1.0.0\ntagger Alice <a@x> 1700000000 +0000\n\nrelease\n` +
      "-----BEGIN SSH SIGNATURE-----\nabc\n-----END SSH SIGNATURE-----\n"
    const tag = Either.getOrThrow(decodeTag(new TextEncoder().encode(text)))
    assert.strictEqual(tag.message, "release\n")
    assert.isTrue(tag.signature?.startsWith("-----BEGIN SSH SIGNATURE-----"))
    assert.strictEqual(Buffer.from(encodeTag(tag)).toString(), text)
  })

  it("rejects a file and a directory of one name even when other entries sort between them", () => {
    const raw = (mode: string, name: string) =>
      Buffer.concat([Buffer.from(`${mode} ${name}\0`), Buffer.from("11".repeat(20), "hex")])
    // git's order: "a" < "a-" < "a/" (the directory "a"): sorted, yet "a" appears twice
    const body = Buffer.concat([raw("100644", "a"), raw("100644", "a-"), raw("40000", "a")])
    const result = decodeTree(body)
    assert.isTrue(Either.isLeft(result) && result.left.reason === "Duplicate")
  })

  it("rejects a tagger line git's fsck would flag, accepts git's own", () => {
    const tag = (tagger: string) =>
      new TextEncoder().encode(`object ${h("a")}\ntype tree\ntag x\ntagger ${tagger}\n\nmsg\n`)
    for (const good of ["A U Thor <a@x> 1700000000 +0000", "<a@x> 0 -0130", "Name With Spaces <> 1 +0100"]) {
      assert.isTrue(Either.isRight(decodeTag(tag(good))), good)
    }
    for (const bad of ["A U Thor a@x 1700000000 +0000", "A <a@x>", "A <a@x> 01 +0000", "A <a@x> 1 0000", "A <<a@x>> 1 +0000"]) {
      const result = decodeTag(tag(bad))
      assert.isTrue(Either.isLeft(result) && result.left.reason === "BadHeader", bad)
    }
  })

  it("hashes the empty tree and blob as git does, without framing copies", () => {
    assert.strictEqual(hashOf("tree", new Uint8Array(0)), "4b825dc642cb6eb9a060e54bf8d69288fbee4904")
    assert.strictEqual(hashOf("blob", new Uint8Array(0)), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391")
    assert.strictEqual(hashOf("blob", frame("blob", new Uint8Array([1]))).length, 40)
  })
})
