// Host figures for the README: bundle size, `rauc info` verify time and `rauc install` time of a
// plain bundle into a file slot, through the same RAUC host as the tests (rauc-host.ts).
//   node --import tsx test/update/measure-install.ts BUNDLE [KEYS_DIR] [RUNS]
// (build one: scripts/update/bundle.sh --format plain --version 0.2.0 --svn 2 --out FILE)
import { statSync } from 'node:fs';
import path from 'node:path';
import { inspectBundle } from '../../services/updater/bundle.js';
import { raucInstall } from '../../services/updater/rauc.js';
import { startRaucHost } from './rauc-host.js';

const [bundle, keys = '.cache/update-keys', runs = '3'] = process.argv.slice(2);
if (!bundle) throw new Error('usage: measure-install.ts BUNDLE [KEYS_DIR] [RUNS]');
const rows = [];
for (let i = 0; i < Number(runs); i++) {
  const h = await startRaucHost({ slotBytes: 64 << 20, keys: path.resolve(keys) });
  try {
    const t0 = Date.now();
    await inspectBundle(bundle, { conf: h.conf, env: h.env });
    const t1 = Date.now();
    await raucInstall(bundle, { conf: h.conf, env: h.env, reportDir: h.reportDir }, () => undefined);
    rows.push({ verify_ms: t1 - t0, install_ms: Date.now() - t1 });
  } finally {
    await h.stop();
  }
}
console.log(JSON.stringify({ bundle_bytes: statSync(bundle).size, runs: rows }));
