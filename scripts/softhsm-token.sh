#!/usr/bin/env bash
# Creates a private SoftHSM2 setup in DIR and a token labelled LABEL in it, idempotently:
# a token that already carries LABEL is left alone (its keys and PINs stay as they are).
# Prints the one line a caller evals: `export SOFTHSM2_CONF=DIR/softhsm2.conf`.
# Usage: scripts/softhsm-token.sh DIR LABEL SO_PIN USER_PIN
# Env:   PKCS11_MODULE  PKCS#11 module (default /usr/lib/softhsm/libsofthsm2.so)
# The PINs reach softhsm2-util on its command line because it only prompts on a tty; this
# script is for dev machines and tests, the appliance's setup takes PINs from its credential
# store instead.
set -euo pipefail

die() { echo "softhsm-token: $*" >&2; exit 2; }

[ $# -eq 4 ] || die "usage: softhsm-token.sh DIR LABEL SO_PIN USER_PIN"
dir=$1 label=$2 so_pin=$3 user_pin=$4
module=${PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

# PKCS#11 limits: labels are 32 bytes blank-padded, SoftHSM PINs 4..255 bytes.
[ -n "$label" ] && [ "${#label}" -le 32 ] || die "LABEL must be 1..32 characters"
[ "${label% }" = "$label" ] || die "LABEL must not end in a blank (PKCS#11 pads with blanks)"
for pin in "$so_pin" "$user_pin"; do
  [ "${#pin}" -ge 4 ] && [ "${#pin}" -le 255 ] || die "PINs must be 4..255 characters"
done
[ -r "$module" ] || die "PKCS#11 module not readable: $module"
command -v softhsm2-util >/dev/null || die "softhsm2-util not found (Debian package softhsm2)"

umask 077
mkdir -p -- "$dir"
dir=$(cd -- "$dir" && pwd -P)
mkdir -p -- "$dir/tokens"
conf="$dir/softhsm2.conf"
# Rewritten every time: the content is fully determined by DIR, so this stays idempotent.
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
  "$dir/tokens" >"$conf.tmp"
mv -f -- "$conf.tmp" "$conf"
export SOFTHSM2_CONF=$conf

has_label() {
  softhsm2-util --module "$module" --show-slots 2>/dev/null \
    | sed -n 's/^[[:space:]]*Label:[[:space:]]*//p' \
    | sed 's/[[:space:]]*$//' \
    | grep -Fxq -- "$label"
}

if ! has_label; then
  softhsm2-util --module "$module" --init-token --free --label "$label" \
    --so-pin "$so_pin" --pin "$user_pin" >/dev/null \
    || die "token initialisation failed"
  has_label || die "token '$label' not visible after initialisation"
fi

printf 'export SOFTHSM2_CONF=%s\n' "$conf"
