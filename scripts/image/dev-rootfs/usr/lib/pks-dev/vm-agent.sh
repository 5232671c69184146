#!/bin/bash
# Dev image only. Reads `<id> <base64 command>` lines from the console device, runs each
# command with bash as root, answers `@@PKS-RESULT <id> <rc> <base64 combined output>`.
# base64 on both ways keeps the framing intact whatever the command prints.
set -u
dev=${1:-/dev/hvc0}
stty -F "$dev" raw -echo 2>/dev/null || true
exec <"$dev" >"$dev"
printf '@@PKS-AGENT-READY\n'
while IFS=' ' read -r id cmd; do
  id=${id//[^A-Za-z0-9_-]/}
  [ -n "$id" ] || continue
  script=$(printf '%s' "$cmd" | base64 -d 2>/dev/null) || { printf '@@PKS-RESULT %s 254 \n' "$id"; continue; }
  out=$(bash -c "$script" </dev/null 2>&1)
  rc=$?
  printf '@@PKS-RESULT %s %d %s\n' "$id" "$rc" "$(printf '%s' "$out" | base64 -w0)"
done
