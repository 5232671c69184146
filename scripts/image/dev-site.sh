#!/usr/bin/env bash
# The dev image's "site": what plant IT brings to the box's one-time setup, made on the host
# because its private halves belong to others (the KMS, the plant's tester CA, ops):
#   kms-ca.crt            the KMS CA the keystore pins (batch signatures chain to it)
#   tester-ca.crt         the plant's tester CA (only its certificates reach the tester API)
#   mqtt-ca.crt           the CA of the KMS broker (here the KMS CA)
#   mqtt-client.{crt,key} the box's MQTT client identity (CN = box id)
#   ops-public.pem        the ops command-signing public key
#   site.env              box id, site name, broker and SMTP relay addresses
# into DIR/site/ (what the image gets, at /etc/pks-site), keeping the private keys the host's
# tests need (KMS batch signer, tester client certificates) in DIR/host/. Idempotent: an
# existing site is kept, so a rebuilt image pins the same CAs and the host keeps working.
# Usage: scripts/image/dev-site.sh DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=${1:?usage: dev-site.sh DIR}
pki=$root/scripts/pki.sh
umask 077
mkdir -p "$dir/host" "$dir/site"
[ -f "$dir/.complete" ] && exit 0

box_id=box-vm-1
h=$dir/host
"$pki" ca "$h" kms-ca --cn "Dev KMS CA" >/dev/null
"$pki" issue "$h" kms-ca kms-batch-signer --cn kms-batch-signer --batch-signer --days 3650 >/dev/null
"$pki" issue "$h" kms-ca mqtt-client --cn "$box_id" --client --days 3650 >/dev/null
"$pki" ca "$h" tester-ca --cn "Dev plant tester CA" >/dev/null
for t in tester-vm-1 tester-vm-2; do
  "$pki" issue "$h" tester-ca "$t" --cn "$t" --client --days 3650 >/dev/null
done
openssl ecparam -name prime256v1 -genkey -noout -out "$h/ops.key" 2>/dev/null
openssl ec -in "$h/ops.key" -pubout -out "$h/ops-public.pem" 2>/dev/null

s=$dir/site
cp "$h/kms-ca.crt" "$s/kms-ca.crt"
cp "$h/kms-ca.crt" "$s/mqtt-ca.crt"
cp "$h/tester-ca.crt" "$s/tester-ca.crt"
cp "$h/mqtt-client.crt" "$s/mqtt-client.crt"
cp "$h/mqtt-client.key" "$s/mqtt-client.key"
cp "$h/ops-public.pem" "$s/ops-public.pem"
# 10.0.2.2 is the host as QEMU's user network shows it. Nothing needs to listen there for the
# services to be READY: the uplink keeps retrying (a WAN that is down), the sentinel queues mail.
cat >"$s/site.env" <<EOF
BOX_ID=$box_id
SITE=plant-vm
KMS_HOST=10.0.2.2
KMS_PORT=18883
SMTP_HOST=10.0.2.2
SMTP_PORT=12525
# the dev relay on the host is plaintext: an explicit setting (the product default is STARTTLS required)
SMTP_STARTTLS=off
MAIL_TO=plant-it@plant.example
TLS_SAN=DNS:pks.local,DNS:localhost,IP:127.0.0.1,IP:10.0.2.15
POOLS=oem1.bcm.key4
# the VM test's two testers inject far faster than a line (keystore quota default: 500/h each)
RESERVATIONS_PER_HOUR=20000
EOF
chmod 0644 "$s"/*.crt "$s"/*.pem "$s/site.env"
chmod 0600 "$s/mqtt-client.key"
touch "$dir/.complete"
