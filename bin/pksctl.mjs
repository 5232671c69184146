#!/usr/bin/env node
// pksctl entry: the TypeScript sources through tsx in a checkout (`npx pksctl`), the compiled
// CLI in dist/ on the appliance.
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const built = path.join(root, 'dist', 'appliance', 'pksctl', 'main.js');
const source = path.join(root, 'appliance', 'pksctl', 'main.ts');
// a checkout runs its sources (dist/ may be stale); the appliance ships only dist/
if (existsSync(source) && !process.env.PKS_FROM_DIST) {
  const { register } = await import('tsx/esm/api');
  register();
  await import(pathToFileURL(source).href);
} else {
  await import(pathToFileURL(built).href);
}
