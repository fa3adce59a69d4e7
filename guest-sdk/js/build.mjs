// Builds one JavaScript weir plugin into a component with componentize-js.
// Usage: node build.mjs <entry.js> <wit-dir> <world> <out.wasm>
//
// The http and fetch-event features are disabled (a plugin gets no network;
// the contract grants none), and AOT (weval) stays off: it downloads a
// compiler, which an offline build cannot.
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';

const [entry, witDir, world, out] = process.argv.slice(2);
if (!entry || !witDir || !world || !out) {
  console.error('usage: node build.mjs <entry.js> <wit-dir> <world> <out.wasm>');
  process.exit(2);
}
try {
  const { component } = await componentize({
    sourcePath: resolve(entry),
    witPath: resolve(witDir),
    worldName: world,
    disableFeatures: ['http', 'fetch-event'],
  });
  await writeFile(out, component);
} catch (e) {
  console.error(`componentize-js failed for ${entry}: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
}
