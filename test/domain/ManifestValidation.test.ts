import { assert, describe, it } from "@effect/vitest"
import { Either } from "effect"
import { parseManifest } from "../../src/domain/Manifest.js"

const issues = (text: string) => {
  const r = parseManifest(text, "/x/upm.json")
  assert.isTrue(Either.isLeft(r), "expected an invalid manifest")
  return Either.isLeft(r) ? r.left.issues : []
}

describe("parseManifest", () => {
  it("accepts a valid manifest", () => {
    const r = parseManifest(JSON.stringify({ name: "alice/hello", version: "1.0.0", dependencies: { "bob/x": "^1" } }), "upm.json")
    assert.isTrue(Either.isRight(r))
  })

  it("names each bad field with a fix, all at once", () => {
    const found = issues(JSON.stringify({ name: "Alice/Hello", version: "v1.0", dependencies: { "bob/x": "not a range" } }))
    const fields = found.map((i) => i.field).sort()
    assert.deepStrictEqual(fields, ["dependencies.bob/x", "name", "version"])
    const name = found.find((i) => i.field === "name")!
    assert.include(name.message, "is not a package name")
    assert.include(name.fix, "<owner>/<package>")
    assert.include(found.find((i) => i.field === "version")!.fix, "1.0.0")
  })

  it("says which required field is missing and how to add it", () => {
    const found = issues(JSON.stringify({ name: "alice/hello" }))
    assert.strictEqual(found.length, 1)
    assert.strictEqual(found[0]!.field, "version")
    assert.include(found[0]!.fix, "add")
  })

  it("refuses unknown (misspelt) fields", () => {
    const found = issues(JSON.stringify({ name: "alice/hello", version: "1.0.0", dependecies: {} }))
    assert.strictEqual(found[0]!.field, "dependecies")
    assert.include(found[0]!.fix, "remove")
  })

  it("reports JSON syntax errors and non-objects", () => {
    assert.include(issues("{ name: }")[0]!.message, "not JSON")
    assert.include(issues("[]")[0]!.message, "not a JSON object")
    const r = parseManifest("{", "/x/upm.json")
    assert.isTrue(Either.isLeft(r) && r.left.message.includes("/x/upm.json"))
  })
})
