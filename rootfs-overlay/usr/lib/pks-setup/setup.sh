#!/bin/bash
# Plant IT's one-time setup of the box, run by pks-setup.service on the first boot (before
# pks-measure and the services), or by hand: /usr/lib/pks-setup/setup.sh [SITE_DIR].
#
# SITE_DIR (default /etc/pks-site) is what plant IT brings; everything else is made here:
#   site.env            BOX_ID SITE KMS_HOST KMS_PORT SMTP_HOST SMTP_PORT MAIL_TO TLS_SAN POOLS
#   kms-ca.crt          the KMS CA the keystore pins
#   tester-ca.crt       the plant's tester CA
#   mqtt-ca.crt mqtt-client.crt mqtt-client.key   the box's MQTT identity and its broker's CA
#   ops-public.pem      the ops command-signing public key
# Made on the box:
#   the HSM token (SoftHSM here; token store /var/lib/pks/vault/tokens, owned by pks-vault) with
#   random PINs, /etc/pks/softhsm2.conf; the tester API's and the unlock service's server keys
#   (never leave the box) and certificates from a box CA (certificate and serial kept in
#   /var/lib/pks/setup); /etc/pks/<service>.json for the five services (validated against the
#   services' own schemas); the credentials the units load, all TPM-sealed
#   (/etc/pks/credentials/{hsm-pin,hsm-so-pin,tls-key,unlock-tls-key,mqtt-key,box-ca-key}.sealed,
#   opened at boot into tmpfs by pks-unseal.service); the TPM's attestation key and the updater's
#   version floor (NV counter 0x01500016); and the provisioning record of the config
#   measurement (/var/lib/pks/attest/config-expected.json, see services/attest/site-expected.ts).
# No private key and no PIN is ever written in clear to the disk: they are made in tmpfs
# (/run/pks-setup), sealed, and gone with it. The mqtt-client.key is moved out of SITE_DIR.
# Idempotent only as a whole: it refuses to run on a provisioned box (/var/lib/pks/.provisioned).
set -euo pipefail
site=${1:-/etc/pks-site}
lib=/usr/lib/pks-setup
marker=/var/lib/pks/.provisioned
log() { echo "pks-setup: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root"
[ -e "$marker" ] && die "already provisioned ($marker); remove it to provision again"
[ -f "$site/site.env" ] || die "no $site/site.env"

# site.env: KEY=VALUE lines only, read as data, never sourced
declare -A env=()
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in ''|'#'*) continue ;; esac
  [[ "$line" =~ ^([A-Z_]+)=([A-Za-z0-9@.,:_+/-]*)$ ]] || die "site.env: bad line"
  env[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
done <"$site/site.env"
for k in BOX_ID SITE KMS_HOST KMS_PORT SMTP_HOST SMTP_PORT MAIL_TO TLS_SAN POOLS; do
  [ -n "${env[$k]:-}" ] || die "site.env: $k missing"
done
for f in kms-ca.crt tester-ca.crt mqtt-ca.crt mqtt-client.crt ops-public.pem; do
  [ -f "$site/$f" ] || die "$site/$f missing"
done
[ -f "$site/mqtt-client.key" ] || [ -f /etc/pks/credentials/mqtt-key ] || die "$site/mqtt-client.key missing"

umask 077
install -d -m 0755 /etc/pks /etc/pks/tls /etc/pks/uplink
install -d -m 0700 /etc/pks/credentials /var/lib/pks/setup
install -d -m 0755 /var/lib/pks/attest

# 1. the HSM token, owned by the vault's user in the vault's state directory
module=/usr/lib/softhsm/libsofthsm2.so
label="pks-${env[BOX_ID]}"
label=${label:0:32}
install -d -m 0700 -o pks-vault -g pks-vault /var/lib/pks/vault
pin=$(openssl rand -hex 16)
so_pin=$(openssl rand -hex 16)
# The PINs never touch the disk (issue 12): made in RAM, sealed to the TPM, then gone. Sealed to
# PCR 7 (Secure Boot state now) and to PCR 11 values the image signing key approved
# (/usr/lib/pks-image/pcr11-policy.json, made by the image build), so a signed update needs no
# re-provisioning and a changed UKI, kernel, initrd or command line does not unseal.
# The PINs go to the token through PKCS#11 from these files, never on a command line: a command
# line is readable in /proc and lands in the journal (_CMDLINE) of every message logged around it.
ram=/run/pks-setup
install -d -m 0700 -o pks-vault -g pks-vault "$ram"
install -d -m 0700 -o pks-vault -g pks-vault /var/lib/pks/vault/tokens
printf '%s\n' "$so_pin" >"$ram/hsm-so-pin"
printf '%s\n' "$pin" >"$ram/hsm-pin"
chown pks-vault:pks-vault "$ram/hsm-so-pin" "$ram/hsm-pin"
printf 'directories.tokendir = /var/lib/pks/vault/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' >/etc/pks/softhsm2.conf
chmod 0644 /etc/pks/softhsm2.conf
setpriv --reuid pks-vault --regid pks-vault --init-groups env SOFTHSM2_CONF=/etc/pks/softhsm2.conf \
  node /usr/lib/pks/dist/services/vault/token-init-cli.js --module "$module" --label "$label" \
  --so-pin-file "$ram/hsm-so-pin" --pin-file "$ram/hsm-pin" >/dev/null || die "HSM token initialisation failed"
[ -f /usr/lib/pks-image/pcr-signing.pem ] || die "no image signing key (/usr/lib/pks-image/pcr-signing.pem): refusing to leave the PIN in clear"
PKS_SEAL_TMP=$ram node /usr/lib/pks/dist/services/attest/seal-cli.js seal --tcti device:/dev/tpmrm0 --pubkey /usr/lib/pks-image/pcr-signing.pem \
  --in "$ram/hsm-pin" --out /etc/pks/credentials/hsm-pin.sealed --in "$ram/hsm-so-pin" --out /etc/pks/credentials/hsm-so-pin.sealed \
  || die "sealing the HSM PINs failed"
rm -f /etc/pks/credentials/hsm-pin /etc/pks/credentials/hsm-so-pin "$ram/hsm-pin" "$ram/hsm-so-pin"
unset pin so_pin
log "HSM PINs sealed to the TPM (PCR 7 + signed PCR 11)"
log "HSM token '$label' ready"

# 2. the tester API's TLS: box CA and the server certificate, made in tmpfs ($ram)
pki=$ram/pki
install -d -m 0700 "$pki"
"$lib/pki.sh" ca "$pki" box-ca --cn "PKS box CA ${env[BOX_ID]}" >/dev/null
"$lib/pki.sh" issue "$pki" box-ca server --cn pks.local --server --san "${env[TLS_SAN]}" --days 3650 --force >/dev/null
install -m 0644 "$pki/server.crt" /etc/pks/tls/server.crt
install -m 0644 "$pki/box-ca.crt" /etc/pks/tls/box-ca.crt
install -m 0644 "$site/tester-ca.crt" /etc/pks/tls/tester-ca.crt
log "tester API certificate issued for ${env[TLS_SAN]}"
# the unlock service's own server certificate (port 9443), from the same box CA
"$lib/pki.sh" issue "$pki" box-ca unlock-server --cn pks.local --server --san "${env[TLS_SAN]}" --days 3650 --force >/dev/null
install -m 0644 "$pki/unlock-server.crt" /etc/pks/tls/unlock-server.crt
# kept for a re-issue: the CA certificate in clear, its key only sealed (below)
install -m 0644 "$pki/box-ca.crt" /var/lib/pks/setup/box-ca.crt

# 3. the KMS side: pinned CA, broker CA, the box's MQTT identity, the ops key
install -m 0644 "$site/kms-ca.crt" /etc/pks/kms-ca.crt
install -m 0644 "$site/mqtt-ca.crt" /etc/pks/uplink/mqtt-ca.crt
install -m 0644 "$site/mqtt-client.crt" /etc/pks/uplink/mqtt-client.crt
install -m 0644 "$site/ops-public.pem" /etc/pks/uplink/ops-public.pem
if [ -f "$site/mqtt-client.key" ]; then
  install -m 0600 "$site/mqtt-client.key" "$ram/mqtt-key"
else
  # a box provisioned by an older image: its clear key is sealed now and removed
  install -m 0600 /etc/pks/credentials/mqtt-key "$ram/mqtt-key"
fi

# 3b. every private key sealed to the TPM like the PINs, in one run (one node start under TCG);
# the clear files exist only in tmpfs and are removed with it
PKS_SEAL_TMP=$ram node /usr/lib/pks/dist/services/attest/seal-cli.js seal --tcti device:/dev/tpmrm0 --pubkey /usr/lib/pks-image/pcr-signing.pem \
  --in "$pki/server.key" --out /etc/pks/credentials/tls-key.sealed \
  --in "$pki/unlock-server.key" --out /etc/pks/credentials/unlock-tls-key.sealed \
  --in "$ram/mqtt-key" --out /etc/pks/credentials/mqtt-key.sealed \
  --in "$pki/box-ca.key" --out /etc/pks/credentials/box-ca-key.sealed \
  || die "sealing the TLS and MQTT keys failed"
rm -f "$site/mqtt-client.key" /etc/pks/credentials/mqtt-key /etc/pks/credentials/tls-key /etc/pks/credentials/unlock-tls-key
rm -rf "$ram"
log "TLS and MQTT keys sealed to the TPM (PCR 7 + signed PCR 11)"

# 3c. the TPM's attestation key (under the EK, persisted; the uplink enrols it at the KMS) and the
# updater's version floor (an NV counter, nt=1: it only goes up); both kept by a second setup
PKS_TPM_TCTI=device:/dev/tpmrm0 node /usr/lib/pks/dist/services/attest/quote-cli.js enroll >/dev/null || die "making the attestation key failed"
floor=$(PKS_TPM_TCTI=device:/dev/tpmrm0 node /usr/lib/pks/dist/services/attest/counter-cli.js define) || die "defining the version floor failed: $floor"
log "TPM: attestation key made, version floor $floor"

# 4. the services' configs, checked against their schemas before anything starts on them
for k in "${!env[@]}"; do export "PKS_SITE_$k=${env[$k]}"; done
node "$lib/write-configs.mjs" /etc/pks
log "configs written: $(cd /etc/pks && ls ./*.json | tr '\n' ' ')"

# 5. the provisioning record of the config measurement (PCR 15's second event), then done
node /usr/lib/pks/dist/services/attest/site-expected-cli.js --out /var/lib/pks/attest/config-expected.json
sync
touch "$marker"
sync
log "box ${env[BOX_ID]} provisioned"
