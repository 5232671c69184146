#!/usr/bin/env node
// pksctl entry: the compiled CLI when the build exists (the appliance), else the TypeScript
// sources through tsx (a developer checkout, `npx pksctl`).
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const built = path.join(root, 'dist', 'appliance', 'pksctl', 'main.js');
if (existsSync(built) && !process.env.PKS_FROM_SOURCE) {
  await import(pathToFileURL(built).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import(pathToFileURL(path.join(root, 'appliance', 'pksctl', 'main.ts')).href);
}
