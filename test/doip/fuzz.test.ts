// A short, deterministic fuzz pass over the DoIP, ISO-TP and UDS parsers (fixed seed); the long
// run is `PKS_FUZZ_RUNS=200000 node --import tsx test/doip/fuzz-long.ts`.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runAll } from './fuzz-props.js';

test('hostile bytes at every parser: coded errors, never a crash (fast-check, seed 15)', async () => {
  assert.equal(await runAll(300, 15), []);
});

test.run();
