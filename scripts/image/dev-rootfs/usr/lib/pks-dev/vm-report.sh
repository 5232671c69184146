#!/bin/bash
# Dev image only: one JSON line for the host once the boot is over (no start job left).
set -u
# the boot is over when no start job is left but ours; give up waiting after ${1:-240}s
while [ "$SECONDS" -lt "${1:-240}" ]; do
  [ "$(systemctl list-jobs --no-legend --no-pager 2>/dev/null | grep -vc pks-vm-report)" = 0 ] && break
  sleep 1
done
str() { printf '"%s"' "$(printf '%s' "$1" | tr -d '"\\' | tr '\n' ' ')"; }
failed=$(systemctl --failed --plain --no-legend --no-pager 2>/dev/null | awk '{print $1}' | tr '\n' ' ')
tpm=false; [ -c /dev/tpm0 ] && tpm=true
tpmrm=false; [ -c /dev/tpmrm0 ] && tpmrm=true
manuf=""
pcrs=""
if [ "$tpmrm" = true ]; then
  manuf=$(tpm2_getcap -T device:/dev/tpmrm0 properties-fixed 2>/dev/null | awk '/TPM2_PT_MANUFACTURER/{f=1} f&&/value:/{print $2; exit}')
  pcrs=$(tpm2_pcrread -T device:/dev/tpmrm0 sha256:4,7,11,15 2>/dev/null | awk '/^ +[0-9]+ *:/{gsub(/ /,""); print}' | tr '\n' ' ')
fi
measure=$(systemctl is-active pks-measure.service 2>/dev/null)
running=$(systemctl is-system-running 2>/dev/null)
# /dev/ttyS0 opened afresh: the descriptor systemd gave us at start may have been hung up since
report() { printf "$@" >/dev/ttyS0 2>/dev/null || printf "$@"; }
report 'PKS-VM-REPORT {"system":%s,"pks_measure":%s,"boot_id":%s,"kernel":%s,"multi_user":%s,"failed":%s,"tpm0":%s,"tpmrm0":%s,"tpm_manufacturer":%s,"pcrs":%s}\n' \
  "$(str "$running")" "$(str "$measure")" "$(str "$(cat /proc/sys/kernel/random/boot_id)")" "$(str "$(uname -r)")" \
  "$(str "$(systemctl is-active multi-user.target)")" "$(str "$failed")" \
  "$tpm" "$tpmrm" "$(str "$manuf")" "$(str "$pcrs")"
