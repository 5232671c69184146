#!/usr/bin/env node
// pks-inject: the tester station's injector over DoIP or ISO-TP (appliance/inject/main.ts).
import { launch } from './launch.mjs';

await launch('appliance/inject/main');
