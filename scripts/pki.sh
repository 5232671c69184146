#!/usr/bin/env bash
# Development PKI for the plant-in-a-box: a CA and the leaf certificates of the broker, the
# boxes, the KMS and ops. EC P-256 keys, SHA-256 signatures, nothing but openssl.
# NOT for production: CA keys sit in plain files (production CAs live in an HSM).
#
# Usage:
#   pki.sh ca DIR NAME [--cn CN] [--days N]
#       self-signed CA: DIR/NAME.key (0600) + DIR/NAME.crt, 10 years unless --days.
#   pki.sh issue DIR CA NAME --cn CN [--server] [--client] [--batch-signer] [--san DNS:x,IP:127.0.0.1]
#                [--days N] [--ou OU] [--serial-from FILE] [--force]
#       DIR/NAME.key (0600) + DIR/NAME.crt signed by DIR/CA.key + DIR/CA.crt, 1 year unless
#       --days. --server/--client set the extended key usage (both allowed; neither means no
#       EKU, i.e. any purpose); --batch-signer adds the KMS batch-signer EKU the boxes require.
#       --serial-from FILE takes the serial from a hex counter file
#       (openssl's CAserial format: created with a random start, bumped on each issue);
#       without it the serial is 128 random bits, so parallel issuing never collides.
#
# Idempotent: `ca` keeps an existing CA whose key matches its certificate; `issue` keeps an
# existing certificate that the CA signed, that matches its key and carries the same subject,
# SAN and usages, and refuses (exit 1) to replace a different one unless --force.
# Bad arguments: a message on stderr and exit 2. Prints the certificate path on success.
set -euo pipefail
umask 077

prog=pki.sh
usage() {
  sed -n '5,16p' "$0" | sed 's/^# \{0,1\}//' >&2
}
die() { echo "$prog: $*" >&2; exit 1; }
bad() { echo "$prog: $*" >&2; exit 2; }

command -v openssl >/dev/null || die "openssl not found"

# Names become file names; CN/OU go into a DN given to openssl -subj, where '/', ',', '+', '='
# and '\' would change the DN's structure, so a conservative alphabet is enforced.
valid_name() { [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]]; }
valid_dn_value() { [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9\ ._-]{0,63}$ ]]; }
valid_days() { [[ "$1" =~ ^[1-9][0-9]{0,4}$ ]] && [ "$1" -le 36500 ]; }
valid_san() {
  local item
  IFS=',' read -r -a items <<<"$1"
  [ ${#items[@]} -gt 0 ] || return 1
  for item in "${items[@]}"; do
    case "$item" in
      DNS:*) [[ "${item#DNS:}" =~ ^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$ ]] || return 1 ;;
      IP:*) local ip=${item#IP:}
            [[ "$ip" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ || "$ip" =~ ^[0-9A-Fa-f:]+$ ]] || return 1 ;;
      URI:*) [[ "${item#URI:}" =~ ^[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9._~:/?@!\$\&\'\(\)*+\;=%-]+$ ]] || return 1 ;;
      *) return 1 ;;
    esac
  done
}

# DIR must exist or be creatable; keys are 0600 inside it whatever the umask of the caller.
prepare_dir() {
  [ -n "$1" ] || bad "DIR is empty"
  mkdir -p -- "$1" || die "cannot create directory '$1'"
}

new_key() { # $1 = target path; written atomically so a half-written key is never picked up
  local tmp="$1.tmp.$$"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve \
    -out "$tmp" 2>/dev/null || { rm -f -- "$tmp"; die "key generation failed for $1"; }
  chmod 0600 -- "$tmp"
  mv -f -- "$tmp" "$1"
}

pub_of_key() { openssl pkey -in "$1" -pubout 2>/dev/null; }
pub_of_cert() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null; }
key_matches_cert() { [ "$(pub_of_key "$1")" = "$(pub_of_cert "$2")" ] && [ -n "$(pub_of_key "$1")" ]; }

random_serial() { # 128 bits, top bit clear so the DER INTEGER stays positive and 16 bytes
  local hex; hex=$(openssl rand -hex 16)
  printf '0x%x%s' $(( 0x${hex:0:1} & 7 )) "${hex:1}"
}

cmd_ca() {
  [ $# -ge 2 ] || { usage; bad "ca needs DIR NAME"; }
  local dir=$1 name=$2; shift 2
  local cn="" days=3650
  while [ $# -gt 0 ]; do
    case "$1" in
      --cn) [ $# -ge 2 ] || bad "--cn needs a value"; cn=$2; shift 2 ;;
      --days) [ $# -ge 2 ] || bad "--days needs a value"; days=$2; shift 2 ;;
      *) bad "ca: unknown argument '$1'" ;;
    esac
  done
  valid_name "$name" || bad "NAME '$name' must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}"
  [ -n "$cn" ] || cn="PKS dev CA $name"
  valid_dn_value "$cn" || bad "--cn '$cn' must match [A-Za-z0-9][A-Za-z0-9 ._-]{0,63}"
  valid_days "$days" || bad "--days '$days' must be an integer 1..36500"
  prepare_dir "$dir"
  local key="$dir/$name.key" crt="$dir/$name.crt"

  if [ -f "$key" ] && [ -f "$crt" ]; then
    key_matches_cert "$key" "$crt" || die "$crt does not match $key; remove both to recreate the CA"
    echo "$crt"
    return 0
  fi
  [ -f "$crt" ] && die "$crt exists without its key $key; remove it to recreate the CA"
  [ -f "$key" ] || new_key "$key"
  local tmp="$crt.tmp.$$"
  openssl req -new -x509 -key "$key" -sha256 -days "$days" -subj "/CN=$cn" \
    -set_serial "$(random_serial)" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$tmp" 2>/dev/null || { rm -f -- "$tmp"; die "CA certificate creation failed"; }
  chmod 0644 -- "$tmp"
  mv -f -- "$tmp" "$crt"
  echo "$crt"
}

# The fields that decide whether an existing certificate is the one asked for.
describe_cert() {
  openssl x509 -in "$1" -noout -subject -nameopt RFC2253 \
    -ext basicConstraints,keyUsage,extendedKeyUsage,subjectAltName 2>/dev/null
}

cmd_issue() {
  [ $# -ge 3 ] || { usage; bad "issue needs DIR CA NAME --cn CN"; }
  local dir=$1 ca=$2 name=$3; shift 3
  local cn="" ou="" san="" days=365 server=0 client=0 batch=0 serial_file="" force=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --cn) [ $# -ge 2 ] || bad "--cn needs a value"; cn=$2; shift 2 ;;
      --ou) [ $# -ge 2 ] || bad "--ou needs a value"; ou=$2; shift 2 ;;
      --san) [ $# -ge 2 ] || bad "--san needs a value"; san=$2; shift 2 ;;
      --days) [ $# -ge 2 ] || bad "--days needs a value"; days=$2; shift 2 ;;
      --serial-from) [ $# -ge 2 ] || bad "--serial-from needs a file"; serial_file=$2; shift 2 ;;
      --server) server=1; shift ;;
      --client) client=1; shift ;;
      --batch-signer) batch=1; shift ;;
      --force) force=1; shift ;;
      *) bad "issue: unknown argument '$1'" ;;
    esac
  done
  valid_name "$ca" || bad "CA '$ca' must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}"
  valid_name "$name" || bad "NAME '$name' must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}"
  [ "$ca" != "$name" ] || bad "NAME must differ from CA"
  [ -n "$cn" ] || bad "issue needs --cn CN"
  valid_dn_value "$cn" || bad "--cn '$cn' must match [A-Za-z0-9][A-Za-z0-9 ._-]{0,63}"
  [ -z "$ou" ] || valid_dn_value "$ou" || bad "--ou '$ou' must match [A-Za-z0-9][A-Za-z0-9 ._-]{0,63}"
  [ -z "$san" ] || valid_san "$san" || bad "--san '$san' must be a comma list of DNS:name, IP:address or URI:uri"
  valid_days "$days" || bad "--days '$days' must be an integer 1..36500"

  local ca_key="$dir/$ca.key" ca_crt="$dir/$ca.crt"
  [ -f "$ca_key" ] && [ -f "$ca_crt" ] || bad "CA '$ca' not found: need $ca_key and $ca_crt (pki.sh ca $dir $ca)"
  prepare_dir "$dir"
  local key="$dir/$name.key" crt="$dir/$name.crt"

  local subj="/CN=$cn"
  [ -z "$ou" ] || subj="/OU=$ou$subj"
  local eku=""
  [ $server -eq 0 ] || eku="serverAuth"
  [ $client -eq 0 ] || eku="${eku:+$eku,}clientAuth"
  # the KMS batch-signer EKU (appliance/batch-format.ts BATCH_SIGNER_EKU)
  [ $batch -eq 0 ] || eku="${eku:+$eku,}2.25.6459951301980883885668975603564161222"

  work=$(mktemp -d "$dir/.issue.XXXXXX")
  trap 'rm -rf -- "$work"' EXIT
  {
    echo "basicConstraints=critical,CA:FALSE"
    # digitalSignature covers ECDHE-ECDSA handshakes; no keyEncipherment for EC keys
    echo "keyUsage=critical,digitalSignature"
    [ -z "$eku" ] || echo "extendedKeyUsage=$eku"
    [ -z "$san" ] || echo "subjectAltName=$san"
    echo "subjectKeyIdentifier=hash"
    echo "authorityKeyIdentifier=keyid"
  } >"$work/ext.cnf"

  # A throwaway key lets the wanted certificate be built and compared before touching files.
  local use_key="$key"
  [ -f "$key" ] || { use_key="$work/new.key"; new_key "$use_key"; }
  openssl req -new -key "$use_key" -subj "$subj" -out "$work/req.csr" 2>/dev/null \
    || die "CSR creation failed for $name"
  sign() { # $@ = serial arguments
    openssl x509 -req -in "$work/req.csr" -CA "$ca_crt" -CAkey "$ca_key" "$@" \
      -sha256 -days "$days" -extfile "$work/ext.cnf" -out "$work/new.crt" 2>/dev/null \
      || die "signing failed for $name (is $ca_crt a CA matching $ca_key? is the serial file valid?)"
  }
  sign -set_serial "$(random_serial)"

  if [ -f "$crt" ] && [ -f "$key" ] && [ $force -eq 0 ]; then
    if openssl verify -CAfile "$ca_crt" "$crt" >/dev/null 2>&1 && key_matches_cert "$key" "$crt" \
      && [ "$(describe_cert "$crt")" = "$(describe_cert "$work/new.crt")" ]; then
      echo "$crt"
      return 0
    fi
    die "$crt exists with other contents (or another CA/key); pass --force to replace it"
  fi

  if [ -n "$serial_file" ]; then # re-sign only now, so a kept certificate never bumps the counter
    if [ -f "$serial_file" ]; then sign -CAserial "$serial_file"; else sign -CAserial "$serial_file" -CAcreateserial; fi
  fi
  [ "$use_key" = "$key" ] || mv -f -- "$use_key" "$key"
  chmod 0644 -- "$work/new.crt"
  mv -f -- "$work/new.crt" "$crt"
  echo "$crt"
}

[ $# -ge 1 ] || { usage; bad "missing subcommand (ca|issue)"; }
sub=$1; shift
case "$sub" in
  ca) cmd_ca "$@" ;;
  issue) cmd_issue "$@" ;;
  -h|--help|help) usage; exit 0 ;;
  *) usage; bad "unknown subcommand '$sub' (ca|issue)" ;;
esac
