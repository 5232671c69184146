// meter.ts's memory sampler, in a process of its own: argv = the pids as JSON and the period
// in ms; a sample every period and a last one when told, each sent back, then it exits.
import { memoryOf } from './memory.js';

const pids = JSON.parse(process.argv[2]!) as Record<string, number>;
const sample = (): void => void process.send!(memoryOf(pids));
sample();
const timer = setInterval(sample, Number(process.argv[3]));
process.once('message', () => {
  clearInterval(timer);
  process.send!(memoryOf(pids), () => process.disconnect());
});
// the meter's process died: nothing to report to
process.once('disconnect', () => process.exit(0));
