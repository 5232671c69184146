// scripts/jq-check.sh: the VM test's, CI's and the smoke test's JSON checks. jq 1.6's `jq -e`
// exits 0 on no input at all, which let a guest command that printed nothing (a box mid-reboot)
// pass a check: the VM test once reported fallback_ok from an empty status. jqe must fail then.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const lib = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../scripts/jq-check.sh');
const jqe = (filter: string, input: string, ...args: string[]) =>
  spawnSync('bash', ['-c', `. "${lib}"; jqe "$@"`, 'jqe', ...args, filter], { input, encoding: 'utf8' }).status;

test('jqe: true on a JSON text whose filter holds, false when it does not', () => {
  assert.is(jqe('.ok == true', '{"ok":true}\n'), 0);
  assert.is.not(jqe('.ok == true', '{"ok":false}\n'), 0);
  assert.is.not(jqe('select(.a == 2)', '{"a":1}\n{"a":3}\n'), 0);
  assert.is(jqe('select(.a == 2)', '{"a":1}\n{"a":2}\n'), 0);
  assert.is(jqe('.n >= $b.n', '{"n":3}', '--argjson', 'b', '{"n":2}'), 0);
});

test('jqe: no input, or only white space, fails (where jq -e alone succeeds)', () => {
  assert.is.not(jqe('.ok == true', ''), 0);
  assert.is.not(jqe('.ok == true', '\n  \n'), 0);
  assert.is.not(jqe('.', 'not json'), 0);
});

test.run();
