/** The one ObjectStore contract suite, run against the SQLite and PostgreSQL layers. */
import { describe, it } from "@effect/vitest"
import { pgSkipMessage, pgTestsEnabled } from "../pg.js"
import { objectStoreConformance } from "./ObjectStoreConformance.js"
import { damageSql, layerPgTest, layerSqliteTest } from "./SqlStoresLayers.js"

objectStoreConformance("sqlite", layerSqliteTest, { damage: damageSql })

if (pgTestsEnabled) {
  objectStoreConformance("postgres", layerPgTest, { damage: damageSql })
} else {
  describe("ObjectStore conformance: postgres", () => {
    it.skip(pgSkipMessage, () => {})
  })
}
