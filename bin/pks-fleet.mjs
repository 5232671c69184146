#!/usr/bin/env node
// pks-fleet entry (central ops CLI): the compiled CLI when built, else the TypeScript sources.
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const built = path.join(root, 'dist', 'scripts', 'fleet', 'main.js');
if (existsSync(built) && !process.env.PKS_FROM_SOURCE) {
  await import(pathToFileURL(built).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import(pathToFileURL(path.join(root, 'scripts', 'fleet', 'main.ts')).href);
}
