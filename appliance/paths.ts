// Where services find each other. On the appliance: /run/pks/<service>/<caller>.sock (units'
// RuntimeDirectory=). In tests and the plant-in-a-box: $PKS_RUN_DIR instead of /run/pks.
import path from 'node:path';

export const runDir = (): string => process.env.PKS_RUN_DIR ?? '/run/pks';

/** The socket on which `service` listens for `caller`. */
export const socketPath = (service: string, caller: string, dir = runDir()): string => path.join(dir, service, `${caller}.sock`);
