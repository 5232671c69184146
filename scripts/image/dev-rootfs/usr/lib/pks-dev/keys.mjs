// Dev image only: the keystore's issuance records as the power-cut checks need them, read from
// its LMDB read-only (multi-process safe; the keystore keeps running). One line per key that
// ever left the AVAILABLE queue: "<id> <state> <uid> <tester>", then "#counters <json>".
// Usage: node keys.mjs [DATA_DIR]
const { openDbs } = await import('/usr/lib/pks/dist/services/keystore/db.js');
const dbs = openDbs(process.argv[2] ?? '/var/lib/pks/keystore/data', { readOnly: true });
const lines = [];
for (const { value: r } of dbs.keys.getRange()) {
  if (r.state !== 'AVAILABLE') lines.push(`${r.id} ${r.state} ${r.uid ?? '-'} ${r.tester ?? '-'}`);
}
const counters = Object.fromEntries([...dbs.counters.getRange()].map((e) => [e.key, e.value]));
process.stdout.write(lines.join('\n') + (lines.length ? '\n' : '') + `#counters ${JSON.stringify(counters)}\n`);
await dbs.root.close();
