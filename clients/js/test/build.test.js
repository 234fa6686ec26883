// The package as shipped: its declarations and the example type-check, and it stays small.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { measure } from "../scripts/size.js";

const here = fileURLToPath(new URL("..", import.meta.url));

test("tsc --noEmit on the declarations and examples/player.ts", () => {
  const tsc = fileURLToPath(new URL("../node_modules/typescript/bin/tsc", import.meta.url));
  execFileSync(process.execPath, [tsc, "--noEmit", "-p", here], { cwd: here, stdio: "pipe" });
});

test("at most 15 KB minified (esbuild)", () => {
  const { minified, gzip, limit } = measure();
  console.log(`@livecart/client: ${minified} bytes minified, ${gzip} gzip (budget ${limit})`);
  assert.ok(minified <= limit, `${minified} > ${limit}`);
});

test("no runtime dependency: the module imports nothing but (in Node, lazily) ws", async () => {
  const { readFile } = await import("node:fs/promises");
  const src = await readFile(new URL("../src/index.js", import.meta.url), "utf8");
  const imports = [...src.matchAll(/\bimport\s*\(?\s*["']([^"']+)["']/g)].map((m) => m[1]);
  assert.deepEqual(imports, ["ws"]);
});
