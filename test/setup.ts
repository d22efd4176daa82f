// Runs before every test file (vitest.config.ts setupFiles): the temp
// directories the file's tests made are removed once it is done, so that a
// test run leaves nothing behind in the OS temp dir.
import { afterAll } from "vitest"
import { removeTempDirs } from "./helpers.js"

afterAll(removeTempDirs)
