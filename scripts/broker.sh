#!/usr/bin/env bash
# The plant-in-a-box MQTT broker: mosquitto on a loopback port, mutual TLS only, the client
# certificate's CN as the MQTT identity, topic ACLs per identity, persistent sessions.
#
# Usage:
#   BROKER_CA=/path/to/ca.crt [BROKER_PORT=N] broker.sh start DIR
#   broker.sh stop DIR
#   broker.sh crl DIR FILE
#
# start: writes DIR/mosquitto.conf and DIR/acl, starts mosquitto in the background (its own
#   session, so a Ctrl-C aimed at the caller does not take it down), waits until it listens
#   and prints `BROKER_PORT=<port>` and `BROKER_PID=<pid>` on stdout. Idempotent: a broker
#   already running from DIR is reported, not started twice.
#   BROKER_CA is the dev CA certificate (scripts/pki.sh); the CA key beside it (same name,
#   .key) is used once to issue DIR/broker.{crt,key} (CN pks-broker, SAN localhost and
#   127.0.0.1) when DIR does not hold them yet. Client certificates of any other CA are refused.
#   BROKER_PORT: the port (start fails if it is taken); else the one DIR used last
#   (DIR/broker.port), so a restart keeps the address clients know, unless it was taken in
#   between; else a free port chosen here.
# stop: SIGTERM (mosquitto then writes its persistence database), waits for the exit,
#   SIGKILL after 10 s. Idempotent: nothing running is not an error.
# crl: installs FILE (a CRL signed by DIR/ca.crt, checked) as DIR/crl.pem and has the running
#   broker reload it (SIGHUP): client certificates it lists are refused from the next connection
#   on (issue 16 §3: revoked box certificates). The KMS of the dev stack writes DIR/crl.pem and
#   sends the SIGHUP itself (scripts/kms/revocation.ts). start makes an empty CRL (with the CA
#   key) when DIR has none: with `crlfile` set, mosquitto refuses every client without a CRL.
#
# Run as root, mosquitto drops to user `mosquitto`, which must write DIR (database, pid, log)
# and read its certificates: DIR and the files it uses are chowned to it. DIR must therefore
# be a directory of its own, not a shared one. Run as another user, it stays that user.
set -euo pipefail
umask 077

prog=broker.sh
here=$(cd "$(dirname "$0")" && pwd)
bad() { echo "$prog: $*" >&2; exit 2; }
die() { echo "$prog: $*" >&2; exit 1; }

# Largest MQTT packet (fixed header + topic + properties + payload) the broker accepts, in
# either direction. 256 KiB: a key-batch chunk must fit in it whole, with its topic and
# properties (keep payloads at or below 256 KiB - 4 KiB). A larger packet gets its sender
# disconnected (MQTT v5 clients learn the limit from CONNACK's Maximum Packet Size).
MAX_PACKET_SIZE=262144

[ $# -eq 2 ] || { [ $# -eq 3 ] && [ "$1" = crl ]; } || bad "usage: $prog start|stop DIR | crl DIR FILE"
cmd=$1
dir=$2
crl_in=${3:-}
[ -n "$dir" ] || bad "DIR is empty"
# mosquitto.conf takes paths to the end of the line; keep them plain.
[[ "$dir" =~ ^[A-Za-z0-9._/-]+$ ]] || bad "DIR '$dir' must be a plain path ([A-Za-z0-9._/-])"
command -v mosquitto >/dev/null || die "mosquitto not found (scripts/deps.sh test)"
# Absolute, so the running broker is recognised from any working directory.
dir=$(realpath -m -- "$dir")

pidfile() { echo "$dir/mosquitto.pid"; }

# The pid in DIR's pid file when it is a live mosquitto started with DIR's config, else empty
# (pids get reused; never signal a stranger).
running_pid() {
  local pid state
  [ -f "$(pidfile)" ] || return 0
  pid=$(tr -dc '0-9' <"$(pidfile)")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 0
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
  [ -n "$state" ] && [ "$state" != Z ] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "mosquitto -c $dir/mosquitto.conf" || return 0
  echo "$pid"
}

alive() { # $1 = pid; a zombie left for a non-reaping init counts as gone
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)
  [ -n "$state" ] && [ "$state" != Z ]
}

pick_port() {
  # plain write: console.log would colour the number under FORCE_COLOR
  node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{process.stdout.write(s.address().port+'\\n');s.close()})" 2>/dev/null
}

write_config() { # $1 = port
  cat >"$dir/acl" <<'EOF'
# Topic ACLs, enforced on every publish and on every delivery. With use_identity_as_username
# the MQTT username is the client certificate's CN, so %u below is that CN (clients cannot
# pick it: the password/username they send is ignored). mosquitto refuses a pattern match
# when the username contains + # or /, and the dev PKI never issues such a CN.
#
# Topic tree: pks/v1/box/<box CN>/... . Box CNs are box-<id>; `kms` and `ops` are reserved
# and never box ids, so the pattern below grants them nothing they would not have anyway.

# Every box writes only its outbound topics and reads only its inbound ones, in its own subtree
# (appliance/contracts/topics.ts BOX_OUTBOUND / BOX_INBOUND): someone holding a box's MQTT key can
# neither publish an `ack` or `cmd` to it nor read what it sends (and what the KMS sends is
# signed anyway). The test test/uplink/broker-acl.test.ts checks these lists against topics.ts.
pattern write pks/v1/box/%u/reorder
pattern write pks/v1/box/%u/resend
pattern write pks/v1/box/%u/verify
pattern write pks/v1/box/%u/cmd-result
pattern write pks/v1/box/%u/status
pattern write pks/v1/box/%u/alert
pattern write pks/v1/box/%u/event
pattern write pks/v1/box/%u/csr
pattern write pks/v1/box/%u/resync
pattern write pks/v1/box/%u/update-status
pattern write pks/v1/box/%u/attest
pattern read pks/v1/box/%u/batch
pattern read pks/v1/box/%u/ack
pattern read pks/v1/box/%u/cmd
pattern read pks/v1/box/%u/cert
pattern read pks/v1/box/%u/sync
pattern read pks/v1/box/%u/update
pattern read pks/v1/box/%u/update-chunk
pattern read pks/v1/box/%u/attest-answer

# The KMS talks to every box.
user kms
topic readwrite pks/v1/#

# Central ops watch the status of every box, nothing more (commands go through the KMS,
# which signs them).
user ops
topic read pks/v1/+/+/status
EOF

  cat >"$dir/mosquitto.conf" <<EOF
# Generated by scripts/broker.sh; rewritten on every start.
user mosquitto
pid_file $dir/mosquitto.pid

# Sessions and their queued QoS 1/2 messages survive a restart: the database is written on a
# clean stop (SIGTERM) and every 10 s in between, so a crash loses at most 10 s of queue.
# Boxes and the KMS keep their own outbox until an application-level ack anyway.
persistence true
persistence_location $dir/
persistence_file mosquitto.db
autosave_interval 10
# Sessions of clients that never come back (MQTT v5 clients also bound them themselves with
# Session Expiry Interval).
persistent_client_expiration 14d
max_queued_messages 1000

# See MAX_PACKET_SIZE in scripts/broker.sh.
max_packet_size $MAX_PACKET_SIZE

log_dest file $dir/mosquitto.log
log_type error
log_type warning
log_type notice
log_type information
log_timestamp_format %Y-%m-%dT%H:%M:%S
connection_messages true

per_listener_settings false
allow_anonymous false
acl_file $dir/acl

# The only listener: loopback, TLS 1.2+ with ECDHE-ECDSA suites, a client certificate from
# the dev CA required, its CN being the username. MQTT 3.1.1 and 5 both accepted.
listener $1 127.0.0.1
protocol mqtt
cafile $dir/ca.crt
certfile $dir/broker.crt
keyfile $dir/broker.key
require_certificate true
use_identity_as_username true
# revoked client certificates (issue 16 §3), reloaded on SIGHUP: see 'crl' above
crlfile $dir/crl.pem
tls_version tlsv1.2
ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305
EOF
}

install_certs() {
  local ca=${BROKER_CA:-}
  if [ -z "$ca" ]; then
    [ -f "$dir/ca.crt" ] && [ -f "$dir/broker.crt" ] && [ -f "$dir/broker.key" ] \
      || bad "BROKER_CA is not set and $dir holds no ca.crt + broker.crt + broker.key"
  else
    local base=${ca%.crt}
    [ -f "$base.crt" ] || bad "BROKER_CA: no CA certificate at $base.crt"
    install -m 0644 -- "$base.crt" "$dir/ca.crt"
    if [ ! -f "$dir/broker.crt" ] || [ ! -f "$dir/broker.key" ] \
      || ! openssl verify -CAfile "$dir/ca.crt" "$dir/broker.crt" >/dev/null 2>&1; then
      [ -f "$base.key" ] || bad "BROKER_CA: no CA key at $base.key to issue the broker certificate"
      local cadir cname
      cadir=$(dirname -- "$base"); cname=$(basename -- "$base")
      "$here/pki.sh" issue "$cadir" "$cname" broker --cn pks-broker --server \
        --san DNS:localhost,IP:127.0.0.1 >/dev/null
      install -m 0644 -- "$cadir/broker.crt" "$dir/broker.crt"
      install -m 0600 -- "$cadir/broker.key" "$dir/broker.key"
    fi
  fi
  openssl verify -CAfile "$dir/ca.crt" "$dir/broker.crt" >/dev/null 2>&1 \
    || die "$dir/broker.crt is not signed by $dir/ca.crt"
  [ -f "$dir/crl.pem" ] || empty_crl "${ca%.crt}"
}

empty_crl() { # $1 = CA base path (without .crt/.key)
  [ -n "$1" ] && [ -f "$1.key" ] || bad "$dir holds no crl.pem and there is no CA key (BROKER_CA) to make an empty one"
  local t; t=$(mktemp -d)
  : >"$t/index.txt"
  echo 01 >"$t/crlnumber"
  printf '[ca]\ndefault_ca = d\n[d]\ndatabase = %s/index.txt\ncrlnumber = %s/crlnumber\ndefault_md = sha256\ndefault_crl_days = 30\n' "$t" "$t" >"$t/ca.cnf"
  openssl ca -gencrl -config "$t/ca.cnf" -keyfile "$1.key" -cert "$1.crt" -out "$dir/crl.pem" 2>"$t/err" \
    || { cat "$t/err" >&2; rm -rf -- "$t"; die "could not make an empty CRL"; }
  rm -rf -- "$t"
  chmod 0644 "$dir/crl.pem"
}

cmd_crl() {
  [ -f "$crl_in" ] || bad "no CRL file at '$crl_in'"
  [ -f "$dir/ca.crt" ] || bad "$dir holds no ca.crt (start the broker first)"
  openssl crl -in "$crl_in" -CAfile "$dir/ca.crt" -noout 2>&1 | grep -q 'verify OK' \
    || die "$crl_in is not a CRL signed by $dir/ca.crt"
  install -m 0644 -- "$crl_in" "$dir/crl.pem.new"
  mv -f -- "$dir/crl.pem.new" "$dir/crl.pem"
  local pid; pid=$(running_pid)
  [ -z "$pid" ] || kill -HUP "$pid"
}

hand_to_mosquitto() {
  [ "$(id -u)" -eq 0 ] || return 0
  id mosquitto >/dev/null 2>&1 || die "running as root but there is no user 'mosquitto' to drop to"
  touch "$dir/mosquitto.log"
  chown mosquitto: "$dir" "$dir/mosquitto.log" "$dir/broker.key" "$dir/broker.crt" "$dir/ca.crt" \
    "$dir/acl" "$dir/mosquitto.conf" "$dir/crl.pem"
  [ ! -e "$dir/mosquitto.db" ] || chown mosquitto: "$dir/mosquitto.db"
  chmod 0700 "$dir"
  # every directory above DIR must let the mosquitto user pass
  runuser -u mosquitto -- test -w "$dir" 2>/dev/null \
    || die "user mosquitto cannot reach $dir (a parent directory is closed to it)"
}

# True once the process $1 itself listens on 127.0.0.1:$2 (not merely someone else).
listening() {
  if command -v ss >/dev/null; then
    ss -Hltnp "sport = :$2" 2>/dev/null | grep -q "pid=$1,"
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null
  fi
}

launch() { # $1 = port; prints the pid, or exits 10 when the port is taken, 1 on other failures
  local port=$1 pid i
  write_config "$port"
  hand_to_mosquitto
  rm -f -- "$dir/mosquitto.pid"
  touch "$dir/mosquitto.log"
  local mark; mark=$(wc -l <"$dir/mosquitto.log")
  setsid mosquitto -c "$dir/mosquitto.conf" </dev/null >>"$dir/mosquitto.out" 2>&1 &
  pid=$!
  for i in $(seq 1 200); do
    if ! alive "$pid"; then
      if tail -n +"$((mark + 1))" "$dir/mosquitto.log" | grep -q 'Address already in use'; then
        exit 10
      fi
      echo "$prog: mosquitto exited during start; log:" >&2
      tail -n +"$((mark + 1))" "$dir/mosquitto.log" >&2 || true
      tail -n 20 "$dir/mosquitto.out" >&2 || true
      exit 1
    fi
    if [ -s "$dir/mosquitto.pid" ] && listening "$pid" "$port"; then
      echo "$pid"
      return 0
    fi
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  die "mosquitto did not listen on 127.0.0.1:$port within 10 s (see $dir/mosquitto.log)"
}

cmd_start() {
  mkdir -p -- "$dir"
  local pid port
  pid=$(running_pid)
  if [ -n "$pid" ]; then
    echo "BROKER_PORT=$(cat "$dir/broker.port")"
    echo "BROKER_PID=$pid"
    return 0
  fi
  # Only an explicit BROKER_PORT is binding; the remembered one gives way if it was taken.
  local fixed=1
  port=${BROKER_PORT:-}
  if [ -z "$port" ]; then
    fixed=0
    [ ! -f "$dir/broker.port" ] || port=$(tr -dc '0-9' <"$dir/broker.port")
    [ -n "$port" ] || port=$(pick_port)
  fi
  [[ "$port" =~ ^[1-9][0-9]{0,4}$ ]] && [ "$port" -le 65535 ] || bad "BROKER_PORT '$port' is not a port number"
  install_certs

  local try rc
  for try in 1 2 3 4 5; do
    rc=0
    pid=$(launch "$port") || rc=$?
    if [ $rc -eq 0 ]; then
      echo "$port" >"$dir/broker.port"
      echo "BROKER_PORT=$port"
      echo "BROKER_PID=$pid"
      return 0
    fi
    [ $rc -eq 10 ] || exit "$rc"
    [ $fixed -eq 0 ] || die "port $port on 127.0.0.1 is in use"
    port=$(pick_port) # the free port was taken in between; take another
  done
  die "no free port found"
}

cmd_stop() {
  local pid i
  pid=$(running_pid)
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 200); do
    alive "$pid" || return 0
    sleep 0.05
  done
  echo "$prog: mosquitto ($pid) ignored SIGTERM for 10 s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

case "$cmd" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  crl) cmd_crl ;;
  *) bad "unknown command '$cmd' (start|stop)" ;;
esac
