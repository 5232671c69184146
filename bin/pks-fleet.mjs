#!/usr/bin/env node
// pks-fleet: the central ops CLI (scripts/fleet/main.ts).
import { launch } from './launch.mjs';

await launch('scripts/fleet/main');
