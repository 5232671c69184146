// A download in its own process, so the test can cut the power (SIGKILL) mid-way.
import { fetchUrl } from '../../services/updater/fetch.js';

const [url, file, size, sha] = process.argv.slice(2) as [string, string, string, string];
await fetchUrl(url, { file, size: Number(size), sha256: sha }, (have) => process.stdout.write(`${have}\n`));
process.stdout.write('done\n');
