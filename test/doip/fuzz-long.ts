// The long fuzz run of the ECU-protocol parsers: PKS_FUZZ_RUNS per property (default 100000),
// PKS_FUZZ_SEED (default: random, printed so a failure can be replayed).
import { runAll } from './fuzz-props.js';

const runs = Number(process.env.PKS_FUZZ_RUNS ?? 100_000);
const seed = Number(process.env.PKS_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
console.log(`fuzz: ${runs} runs per property, seed ${seed}`);
const t0 = Date.now();
const failed = await runAll(runs, seed);
for (const f of failed) console.log(`FAILED ${f}`);
console.log(JSON.stringify({ runs, seed, failed: failed.length, seconds: Math.round((Date.now() - t0) / 1000) }));
process.exit(failed.length ? 1 : 0);
