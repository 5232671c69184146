// Shared by the bin entries: a checkout runs its TypeScript sources through tsx (dist/ may be
// stale); the appliance ships only dist/ and runs that.
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** `entry`: the module path without extension, relative to the repository root. */
export async function launch(entry) {
  const source = path.join(root, `${entry}.ts`);
  if (existsSync(source) && !process.env.PKS_FROM_DIST) {
    const { register } = await import('tsx/esm/api');
    register();
    await import(pathToFileURL(source).href);
  } else {
    await import(pathToFileURL(path.join(root, 'dist', `${entry}.js`)).href);
  }
}
