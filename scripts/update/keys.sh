#!/usr/bin/env bash
# Dev keys for signed update bundles (never for production: the production maintenance CA key
# lives offline and signs short-lived signing certificates in a ceremony).
#   scripts/update/keys.sh [--dir DIR] init            maintenance CA + signing cert "signer" + empty CRL
#   scripts/update/keys.sh [--dir DIR] issue NAME       another signing certificate NAME.{pem,key}
#   scripts/update/keys.sh [--dir DIR] revoke NAME      revoke NAME's certificate, re-issue the CRL
# DIR defaults to .cache/update-keys. Output:
#   ca.pem / ca.key          the maintenance CA (EC P-256), basicConstraints CA, keyCertSign+cRLSign
#   NAME.pem / NAME.key      a signing certificate: CA:false, digitalSignature, EKU codeSigning
#                            (system.conf: check-purpose=codesign)
#   crl.pem                  the CA's CRL (30 days), re-issued on every revoke
#   keyring.pem              ca.pem + crl.pem: what the box carries as /etc/rauc/keyring.pem
#                            (system.conf: check-crl=true, so a keyring without a CRL is refused)
set -euo pipefail
dir=.cache/update-keys
if [ "${1:-}" = "--dir" ]; then dir=$2; shift 2; fi
cmd=${1:-init}
name=${2:-}
mkdir -p "$dir"
cd "$dir"

conf=openssl.cnf
cat > "$conf" <<'CNF'
[ca]
default_ca = maint
[maint]
dir = .
database = index.txt
new_certs_dir = .
serial = serial
crlnumber = crlnumber
default_md = sha256
default_crl_days = 30
policy = any
unique_subject = no
[any]
commonName = supplied
[ca_ext]
basicConstraints = critical,CA:true
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[leaf_ext]
basicConstraints = critical,CA:false
keyUsage = critical,digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF

keyring() {
  openssl ca -config "$conf" -gencrl -keyfile ca.key -cert ca.pem -out crl.pem 2>/dev/null
  cat ca.pem crl.pem > keyring.pem
}

issue() {
  local n=$1
  [[ "$n" =~ ^[a-z0-9][a-z0-9-]{0,31}$ ]] || { echo "keys.sh: bad name '$n'" >&2; exit 2; }
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$n.key" -out "$n.csr" -subj "/CN=pks-update-$n" 2>/dev/null
  openssl ca -batch -config "$conf" -keyfile ca.key -cert ca.pem -in "$n.csr" -out "$n.pem" -days 825 -extensions leaf_ext -notext 2>/dev/null
  rm -f "$n.csr"
  chmod 600 "$n.key"
}

case "$cmd" in
  init)
    if [ -f ca.pem ] && [ -f signer.pem ] && [ -f keyring.pem ]; then exit 0; fi
    rm -f index.txt* serial* crlnumber* ./*.pem ./*.key
    : > index.txt
    echo 1000 > serial
    echo 1000 > crlnumber
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 3650 \
      -subj "/CN=PKS dev maintenance CA" -config "$conf" -extensions ca_ext 2>/dev/null
    chmod 600 ca.key
    issue signer
    keyring
    ;;
  issue)
    issue "$name"
    keyring
    ;;
  revoke)
    [ -f "$name.pem" ] || { echo "keys.sh: no certificate '$name'" >&2; exit 2; }
    openssl ca -config "$conf" -keyfile ca.key -cert ca.pem -revoke "$name.pem" -crl_reason keyCompromise 2>/dev/null
    keyring
    ;;
  *) echo "keys.sh: unknown command '$cmd'" >&2; exit 2 ;;
esac
