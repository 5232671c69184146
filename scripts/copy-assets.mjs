// Files the services read at run time that tsc does not emit: copied next to their module in dist/.
import { copyFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';

const ASSETS = ['services/tester-api/openapi.json', 'services/unlock/console/index.html', 'services/unlock/console/console.js', 'services/unlock/console/console.css', 'appliance/isotp/can-bridge.py'];
for (const a of ASSETS) {
  const to = path.join('dist', a);
  mkdirSync(path.dirname(to), { recursive: true });
  copyFileSync(a, to);
}
