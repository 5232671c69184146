// Issue 9 item 7: the two processes that hold secrets in memory (the vault: clear SHE keys,
// ECDH secrets, the PIN; the keystore: wrapped batch keys, the issuance state) never leave a
// core dump: RLIMIT_CORE is 0 and the dump filter keeps no memory mapping, so neither the
// kernel nor systemd-coredump writes their memory to disk.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const unitDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../rootfs-overlay/usr/lib/systemd/system');

/** The last assignment of a [Service] key, as systemd reads it. */
function serviceKey(unit: string, key: string): string | undefined {
  let section = '';
  let value: string | undefined;
  for (const raw of readFileSync(path.join(unitDir, unit), 'utf8').split('\n')) {
    const line = raw.trim();
    const h = /^\[(.+)\]$/.exec(line);
    if (h) section = h[1]!;
    else if (section === 'Service' && line.startsWith(`${key}=`)) value = line.slice(key.length + 1).trim();
  }
  return value;
}

for (const svc of ['vault', 'keystore']) {
  test(`pks-${svc}.service: LimitCORE=0 and an empty CoredumpFilter`, () => {
    assert.is(serviceKey(`pks-${svc}.service`, 'LimitCORE'), '0');
    // bit mask of /proc/<pid>/coredump_filter: 0 = no mapping (private, shared, ELF, huge) dumped
    assert.is(serviceKey(`pks-${svc}.service`, 'CoredumpFilter'), '0');
  });
}

test.run();
