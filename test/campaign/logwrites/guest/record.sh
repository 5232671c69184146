#!/usr/bin/env bash
# Runs as root in the dev image's guest: records the keystore's block writes during issuance with
# dm-log-writes (issue 17.2). The keystore's data directory moves onto a small ext4 on a loop
# device behind a log-writes target whose log is a second loop device:
#   1. initial.img: mkfs.ext4 on the data device and the keystore's LMDB copied in (keystore
#      stopped), before logging starts: the replay's starting image;
#   2. dm-log-writes over it, mounted on the keystore's data directory, MARK "start", keystore
#      started: from here every write it makes is in the log, in completion order, with the
#      FLUSH/FUA of each fdatasync;
#   3. line.mjs injects ECUs through the tester API and marks every answer a tester got;
#   4. keystore stopped (MARK "stopped"), unmounted, target removed (the kernel writes the final
#      super block); the recorded end state goes back into the box's data directory so the box
#      goes on from what the testers were told.
# Usage: record.sh DIR ECUS [FS_MB] [LOG_MB] [WORKERS]
# Prints one JSON line: {"entries":N,"log_bytes":N,"line":{...}}; the files stay in DIR:
# initial.img, log.img (trimmed to what was logged), events.log.
set -euo pipefail
dir=${1:?usage: record.sh DIR ECUS [FS_MB] [LOG_MB] [WORKERS]}
ecus=${2:?}
fs_mb=${3:-64}
log_mb=${4:-900}
workers=${5:-4}
data=/var/lib/pks/keystore/data
dev=pks-lw
here=$(cd "$(dirname "$0")" && pwd)

say() { echo "record: $*" >&2; }
ddev= ldev= mounted=0
cleanup() {
  [ "$mounted" = 1 ] && { systemctl stop pks-keystore || true; umount "$data" || true; }
  dmsetup remove "$dev" 2>/dev/null || true
  [ -n "$ddev" ] && losetup -d "$ddev" 2>/dev/null || true
  [ -n "$ldev" ] && losetup -d "$ldev" 2>/dev/null || true
  systemctl start --no-block pks-keystore || true
}
trap cleanup EXIT

modprobe loop
modprobe dm-log-writes
mountpoint -q "$data" && { echo "record: $data is already a mount point" >&2; exit 1; }
dmsetup info "$dev" >/dev/null 2>&1 && { echo "record: $dev exists" >&2; exit 1; }
mkdir -p "$dir"
rm -f "$dir"/{data,log,initial}.img "$dir/events.log"
truncate -s "${fs_mb}M" "$dir/data.img"
truncate -s "${log_mb}M" "$dir/log.img"
ddev=$(losetup -f --show "$dir/data.img")
ldev=$(losetup -f --show "$dir/log.img")

# 1. the starting image: no discards (the log would only carry them), inode tables and journal
# written now rather than by ext4lazyinit during the recording
mkfs.ext4 -q -F -b 4096 -N 128 -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$ddev"
systemctl stop pks-keystore
mnt=$(mktemp -d)
mount -o noatime "$ddev" "$mnt"
cp -a "$data/." "$mnt/"
chown --reference="$data" "$mnt"
chmod --reference="$data" "$mnt"
umount "$mnt"
rmdir "$mnt"
blockdev --flushbufs "$ddev"
cp --sparse=always "$dir/data.img" "$dir/initial.img"

# 2. logging from here on
dmsetup create "$dev" --table "0 $(blockdev --getsz "$ddev") log-writes $ddev $ldev"
mount -o noatime "/dev/mapper/$dev" "$data"
mounted=1
dmsetup message "$dev" 0 mark start
systemctl start pks-keystore
for _ in $(seq 1 300); do systemctl is-active -q pks-keystore && break; sleep 1; done
systemctl is-active -q pks-keystore || { say "keystore did not start"; exit 1; }
# the tester API reconnects to the keystore by itself
say "logging; the line starts ($ecus ECUs, $workers stations)"

# 3. the line
line=$(node "$here/line.mjs" --dir "$dir" --ecus "$ecus" --workers "$workers" --dev "$dev")

# 4. stop, unmount, final super block
systemctl stop pks-keystore
dmsetup message "$dev" 0 mark stopped
umount "$data"
mounted=0
dmsetup remove "$dev"
losetup -d "$ldev"; ldev=
# the log's end from its own super block and entries (the removal added the kernel's last mark)
read -r entries log_bytes < <(node -e '
  const fs = require("fs"); const fd = fs.openSync(process.argv[1], "r"); const b = Buffer.alloc(32);
  fs.readSync(fd, b, 0, 28, 0); const n = Number(b.readBigUInt64LE(16)); const ss = b.readUInt32LE(24);
  let off = ss;
  for (let i = 0; i < n; i++) {
    fs.readSync(fd, b, 0, 32, off);
    const nr = Number(b.readBigUInt64LE(8)), flags = Number(b.readBigUInt64LE(16));
    off += ss + (flags & 4 ? 0 : nr * ss);
  }
  console.log(n, off);' "$dir/log.img")
truncate -s "$log_bytes" "$dir/log.img"

# the box goes on from the recorded end state
mnt=$(mktemp -d)
mount -o noatime "$ddev" "$mnt"
cp -a "$mnt/." "$data/"
umount "$mnt"
rmdir "$mnt"
losetup -d "$ddev"; ddev=
rm -f "$dir/data.img"
trap - EXIT
systemctl start pks-keystore
echo "{\"entries\":$entries,\"log_bytes\":$log_bytes,\"line\":$line}"
