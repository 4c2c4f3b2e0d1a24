/** Runs the one ObjectStore contract suite against every layer. */
import * as ObjectStore from "../../src/services/ObjectStore.js"
import { objectStoreConformance } from "./ObjectStoreConformance.js"

objectStoreConformance("memory", ObjectStore.layerMemory)
