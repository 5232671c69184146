// The updater's health check over the unit states: a unit the new slot does not have at all
// (not-found, masked) fails the check at once, since no wait mends it; a unit that is only not
// active yet is waited for until the timeout. systemd is not PID 1 on the build host, so a
// systemctl on PATH answers as `systemctl show` does; the real one runs in the VM test's
// fallback (`./build.sh vm-test --updates`, fallback_ok).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { waitHealthy, type HealthConfig } from '../../services/updater/health.js';
import { isPksError } from '../../appliance/errors.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'pks-health-'));
const oldPath = process.env.PATH;
function systemctlSays(blocks: Array<Record<string, string>>): void {
  const text = blocks.map((b) => Object.entries(b).map(([k, v]) => `${k}=${v}`).join('\n')).join('\n\n');
  writeFileSync(path.join(dir, 'systemctl'), `#!/bin/sh\ncat <<'EOF'\n${text}\nEOF\n`);
  chmodSync(path.join(dir, 'systemctl'), 0o755);
  process.env.PATH = `${dir}:${oldPath}`;
}
const cfg = (timeoutSeconds: number): HealthConfig => ({ units: ['pks-a.service', 'pks-b.service'], keystore: false, vault: false, timeoutSeconds, intervalSeconds: 0.1 });
const running = { Id: 'pks-b.service', LoadState: 'loaded', ActiveState: 'active', SubState: 'running' };

async function fails(c: HealthConfig): Promise<{ ms: number; detail: string }> {
  const t = Date.now();
  try {
    await waitHealthy(c, null, null, null);
  } catch (e) {
    assert.ok(isPksError(e) && e.code === 'PKS_UPDATE_HEALTH_FAILED', String(e));
    return { ms: Date.now() - t, detail: e.detail ?? '' };
  }
  throw new Error('health check passed');
}

test('a unit the slot does not have fails the health check at once', async () => {
  for (const load of ['not-found', 'masked']) {
    systemctlSays([{ Id: 'pks-a.service', LoadState: load, ActiveState: 'inactive', SubState: 'dead' }, running]);
    const r = await fails(cfg(60));
    assert.ok(r.ms < 5000, `waited ${r.ms} ms`);
    assert.match(r.detail, `pks-a.service is ${load}`);
  }
});

test('a unit that is not active yet is waited for until the timeout', async () => {
  systemctlSays([{ Id: 'pks-a.service', LoadState: 'loaded', ActiveState: 'activating', SubState: 'start' }, running]);
  const r = await fails(cfg(1));
  assert.ok(r.ms >= 1000, `gave up after ${r.ms} ms`);
  assert.match(r.detail, 'pks-a.service is activating');
});

test('all units active: healthy', async () => {
  systemctlSays([{ ...running, Id: 'pks-a.service' }, running]);
  await waitHealthy(cfg(5), null, null, null);
});

test.after(() => {
  process.env.PATH = oldPath;
  rmSync(dir, { recursive: true, force: true });
});

test.run();
