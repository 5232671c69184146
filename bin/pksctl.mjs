#!/usr/bin/env node
// pksctl: the admin CLI of the box (appliance/pksctl/main.ts).
import { launch } from './launch.mjs';

await launch('appliance/pksctl/main');
