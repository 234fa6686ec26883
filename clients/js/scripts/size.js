// Prints the SDK's size minified (esbuild), the figure the 15 KB budget is about.
// `npm run size`; `node scripts/size.js --json` for tests.
import { buildSync } from "esbuild";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

export const LIMIT = 15 * 1024;

export function measure() {
  const out = buildSync({
    entryPoints: [fileURLToPath(new URL("../src/index.js", import.meta.url))],
    bundle: true,
    minify: true,
    format: "esm",
    platform: "neutral",
    external: ["ws"],
    write: false,
  });
  const code = out.outputFiles[0].contents;
  return { minified: code.length, gzip: gzipSync(code).length, limit: LIMIT };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = measure();
  if (process.argv.includes("--json")) console.log(JSON.stringify(r));
  else console.log(`@livecart/client: ${r.minified} bytes minified (${r.gzip} gzip); budget ${r.limit}`);
  process.exit(r.minified <= r.limit ? 0 : 1);
}
