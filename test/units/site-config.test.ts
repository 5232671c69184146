// The image's configuration as setup writes it (rootfs-overlay/usr/lib/pks-setup/write-configs.mjs
// with the groups systemd-sysusers makes from sysusers.d/pks.conf), issue 9 item 12: the
// sentinel reaches the tester API's and the uplink's status sockets (pair groups on both sides,
// the failed-login and uplink-stale checks configured), and SMTP requires STARTTLS unless the
// site explicitly asks for a plaintext relay.
import { execFile, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const overlay = path.join(root, 'rootfs-overlay');
const hasSysusers = spawnSync('systemd-sysusers', ['--version'], { stdio: 'ignore' }).status === 0;
if (!hasSysusers) console.log('SKIP site-config: systemd-sysusers is missing (Debian package "systemd")');
const withSysusers = hasSysusers ? test : test.skip;

let tmp = '';
test.before(() => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'pks-site-config-'));
});
test.after(() => rmSync(tmp, { recursive: true, force: true }));

const SITE = { BOX_ID: 'box-7', SITE: 'plant-a', POOLS: 'oem1.bcm.key4', MAIL_TO: 'it@plant.example', KMS_HOST: 'kms.example', KMS_PORT: '8883', SMTP_HOST: 'smtp.plant.example', SMTP_PORT: '587' };

async function writeConfigs(name: string, extra: Record<string, string> = {}): Promise<Record<string, any>> {
  const out = path.join(tmp, name);
  mkdirSync(out, { recursive: true });
  // write-configs imports <app>/dist/<module>.js: here the sources, through tsx
  const app = path.join(tmp, `app-${name}`);
  mkdirSync(app);
  symlinkSync(root, path.join(app, 'dist'));
  const env: NodeJS.ProcessEnv = { ...process.env, PKS_APP_DIR: app, PKS_GROUP_FILE: path.join(tmp, 'sysroot/etc/group') };
  for (const [k, v] of Object.entries({ ...SITE, ...extra })) env[`PKS_SITE_${k}`] = v;
  await new Promise<void>((resolve, reject) =>
    execFile(process.execPath, ['--import', 'tsx', path.join(overlay, 'usr/lib/pks-setup/write-configs.mjs'), out], { env, cwd: root, timeout: 60_000 }, (err, _o, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve())),
  );
  const read = (f: string) => JSON.parse(readFileSync(path.join(out, `${f}.json`), 'utf8'));
  return { sentinel: read('sentinel'), 'tester-api': read('tester-api'), uplink: read('uplink') };
}

withSysusers('the sentinel reaches the tester API and the uplink on sockets of their pair groups', async () => {
  mkdirSync(path.join(tmp, 'sysroot/etc'), { recursive: true });
  const r = spawnSync('systemd-sysusers', [`--root=${path.join(tmp, 'sysroot')}`, path.join(overlay, 'usr/lib/sysusers.d/pks.conf')], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  const groups = new Map(
    readFileSync(path.join(tmp, 'sysroot/etc/group'), 'utf8').split('\n').filter(Boolean).map((l) => {
      const [n, , gid, members] = l.split(':');
      return [n!, { gid: Number(gid), members: (members ?? '').split(',').filter(Boolean).sort() }] as const;
    }),
  );
  const c = await writeConfigs('default');
  for (const server of ['tester-api', 'uplink']) {
    const g = groups.get(`pks-${server}-sentinel`);
    assert.ok(g, `group pks-${server}-sentinel`);
    assert.equal(g!.members, ['pks-sentinel', `pks-${server}`].sort());
    assert.is(c[server].ipc.groups.sentinel, g!.gid, `${server} chgrp's the sentinel's socket to its pair group`);
  }
  const s = c.sentinel;
  assert.equal([...s.services].sort(), ['keystore', 'tester-api', 'uplink', 'vault']);
  assert.is(s.authFailures?.testerApi, true, 'failed-login check reads the tester API');
  assert.is(s.uplink?.service, true, 'uplink-stale check asks the uplink');
  assert.is(s.mail.starttls, 'required', 'STARTTLS required by default');
});

withSysusers('a plaintext SMTP relay only when the site says so', async () => {
  const c = await writeConfigs('plain', { SMTP_STARTTLS: 'off' });
  assert.is(c.sentinel.mail.starttls, 'off');
});

test.run();
