#!/bin/sh
# RAUC pre-install handler: the version floor (services/updater/pre-install.ts). RAUC 1.8 has
# no min-bundle-version, so this refuses a bundle whose [meta.pks] svn is below the TPM NV
# counter before anything is written.
exec /usr/bin/node /usr/lib/pks/dist/services/updater/pre-install.js "$@"
