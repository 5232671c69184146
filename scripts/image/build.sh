#!/usr/bin/env bash
# Builds the bootable dev image of the appliance, in the A/B layout of issue 13: a GPT disk with
#   ESP        systemd-boot as /EFI/BOOT/BOOTX64.EFI and one UKI per root slot in /EFI/Linux
#              (named for rootfs-overlay/usr/lib/pks-update/bootchooser.sh: boot counting)
#   rootfs_a   ext4: Debian bookworm + node 20 + our build (at /usr/lib/pks) + rootfs-overlay/ +
#              the dev-only files of scripts/image/dev-rootfs/
#   rootfs_b   empty until the first update writes it
#   data       ext4 at /var/lib/pks, with /etc/pks bind-mounted from it: the keystore, the HSM
#              token, the sealed credentials, the site configuration and RAUC's and the
#              updater's state, which outlive every update
# Besides disk.raw, --out gets what update bundles of this image need: root.img (the slot
# image), uki-A.efi and uki-B.efi, pks-measurement.json, expected-pcrs.json.
#
# Usage: scripts/image/build.sh [--out DIR] [--no-tsc] [--rebuild-base]
#   --out DIR        where disk.raw, root.img, uki-A.efi, uki-B.efi and expected-pcrs.json go (default .cache/image/out)
#   --no-tsc         use dist/ as it is instead of compiling first
#   --rebuild-base   ignore the cached base rootfs and UKI
#
# The slow part (debootstrap, kernel, initrd, UKI) is cached in .cache/image/base-<key>/ and
# .cache/image/uki-<key>.efi, <key> being the hash of recipe.sh, base.sh, uki.sh and the EFI
# stub; a rebuild with a cached base takes seconds. Reusing the UKI (and fixed GUIDs/UUIDs, see
# recipe.sh) keeps the boot-chain PCRs the same from build to build.
# Needs root (debootstrap/chroot for the base; file ownership in the staged rootfs). No loop
# devices: mkfs.ext4 -d builds the root fs from a directory, mtools fills the ESP, sfdisk + dd
# assemble the disk.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=recipe.sh
. "$here/recipe.sh"

out=$root/.cache/image/out
tsc=1
rebuild=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --no-tsc) tsc=0; shift ;;
    --rebuild-base) rebuild=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "image build: needs root (debootstrap, chroot, file ownership)" >&2; exit 1; }
for tool in debootstrap objcopy mkfs.ext4 mkfs.vfat mcopy sfdisk; do
  command -v "$tool" >/dev/null || { echo "image build: $tool missing (scripts/deps.sh image)" >&2; exit 1; }
done
node_bin=${PKS_IMAGE_NODE:-/usr/bin/node}
case "$("$node_bin" --version)" in v20.*) ;; *) echo "image build: $node_bin is not Node 20" >&2; exit 1 ;; esac

t0=$(date +%s)
cache=$root/.cache/image
mkdir -p "$cache" "$out"
stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
key=$(cat "$here/recipe.sh" "$here/base.sh" "$here/uki.sh" "$stub" | sha256sum | cut -c1-16)
base=$cache/base-$key
uki_a=$cache/uki-$key-A.efi
uki_b=$cache/uki-$key-B.efi

# 1. base rootfs (cached)
if [ "$rebuild" = 1 ] || [ ! -f "$base/.pks-base-complete" ]; then
  rm -rf "$base" "$uki_a" "$uki_b"
  "$here/base.sh" "$base.tmp"
  touch "$base.tmp/.pks-base-complete"
  mv "$base.tmp" "$base"
  # drop bases of older recipes: they are hundreds of MB each
  for old in "$cache"/base-*; do [ "$old" = "$base" ] || rm -rf "$old"; done
  for old in "$cache"/uki-*.efi; do case "$old" in "$cache/uki-$key-"*) ;; *) rm -f "$old" ;; esac; done
else
  echo "image: base $key cached" >&2
fi

# 2. the slots' UKIs (cached with the base: rebuilding them would change PCR 4 and 11)
[ -f "$uki_a" ] || "$here/uki.sh" "$base" "$uki_a" A
[ -f "$uki_b" ] || "$here/uki.sh" "$base" "$uki_b" B
loader=/usr/lib/systemd/boot/efi/systemd-bootx64.efi
[ -f "$loader" ] || { echo "image build: $loader missing (scripts/deps.sh image: systemd-boot-efi)" >&2; exit 1; }

# 3. our build: dist/ + production node_modules + package.json
if [ "$tsc" = 1 ]; then
  echo "image: tsc" >&2
  # tsc emits even with type errors; the typecheck gate is CI's, not the image's (set
  # PKS_IMAGE_STRICT_TSC=1 to make it one here too)
  if ! (cd "$root" && rm -rf dist && npx tsc -p tsconfig.json >"$cache/tsc.log" 2>&1; rc=$?; node scripts/copy-assets.mjs; exit $rc); then
    [ "${PKS_IMAGE_STRICT_TSC:-0}" = 1 ] && { cat "$cache/tsc.log" >&2; exit 1; }
    echo "image: tsc reported type errors (see $cache/tsc.log); using what it emitted" >&2
  fi
fi
[ -d "$root/dist" ] || { echo "image build: no dist/ (run npx tsc -p tsconfig.json)" >&2; exit 1; }
app=$cache/app
rm -rf "$app"
mkdir -p "$app"
cp -a "$root/dist" "$app/dist"
rm -rf "$app/dist/test"
# data files the modules read next to themselves (e.g. services/tester-api/openapi.json): tsc
# emits only JavaScript
(cd "$root" && find appliance services -name '*.json' -type f -exec cp --parents {} "$app/dist/" \;)
cp "$root/package.json" "$root/package-lock.json" "$app/"
[ -d "$root/bin" ] && cp -a "$root/bin" "$app/bin"
cp -a "$root/node_modules" "$app/node_modules"
(cd "$app" && npm prune --omit=dev --offline --no-audit --no-fund --loglevel=error >/dev/null)
rm -f "$app/package-lock.json" "$app/node_modules/.package-lock.json" "$app/node_modules/.pks-lock-sha"
# one owner and no group/other write bits: the tree is measured with its modes (PCR 15)
chown -R 0:0 "$app"
chmod -R u+rwX,go+rX,go-w "$app"

# 4. staged rootfs: base + node + our build + overlay + dev files
stage=$cache/stage
rm -rf "$stage"
cp -a "$base" "$stage"
rm -f "$stage/.pks-base-complete"
# Kernel modules for hardware a PKS never has (graphics, sound, media, Wi-Fi, Bluetooth,
# InfiniBand, physical Ethernet NICs, sensors) and for file systems it never mounts: half the
# root file system, and every update writes the whole slot (under TCG about a second per
# 5 MiB). Kept: virtio, USB storage, SCSI disks, vfat/ext4/squashfs, dm-verity, TPM, CAN.
# Pruned here, not in the cached base, so the initrd (its own short list) does not change.
for kdir in "$stage"/usr/lib/modules/*/; do
  kver=$(basename "$kdir")
  (cd "$kdir/kernel" && rm -rf sound drivers/gpu drivers/media drivers/infiniband drivers/iio drivers/staging \
    drivers/comedi drivers/isdn drivers/mtd drivers/target drivers/mmc drivers/bluetooth drivers/hwmon \
    drivers/net/wireless drivers/net/ethernet drivers/net/wwan drivers/net/usb drivers/net/hamradio \
    drivers/net/arcnet drivers/net/fddi drivers/net/hippi drivers/net/wan drivers/net/ieee802154 \
    drivers/net/appletalk drivers/net/plip drivers/net/slip drivers/net/ppp \
    net/wireless net/mac80211 net/bluetooth net/sunrpc net/ieee802154 net/mac802154 net/nfc \
    fs/nfsd fs/ocfs2 fs/btrfs fs/xfs fs/f2fs fs/nfs fs/smb fs/gfs2 fs/jfs fs/ubifs fs/ceph fs/nilfs2 \
    fs/reiserfs fs/dlm fs/cifs fs/afs fs/orangefs fs/coda)
  chroot "$stage" depmod -a "$kver"
done
install -m 0755 "$node_bin" "$stage/usr/bin/node"
rm -rf "$stage/usr/lib/pks"
cp -a "$app" "$stage/usr/lib/pks"
if [ -f "$stage/usr/lib/pks/bin/pksctl.mjs" ]; then
  ln -sf ../lib/pks/bin/pksctl.mjs "$stage/usr/bin/pksctl"
elif [ -f "$stage/usr/lib/pks/dist/appliance/pksctl/main.js" ]; then
  printf '#!/bin/sh\nexec /usr/bin/node /usr/lib/pks/dist/appliance/pksctl/main.js "$@"\n' > "$stage/usr/bin/pksctl"
  chmod 755 "$stage/usr/bin/pksctl"
fi
cp -a "$root/rootfs-overlay/." "$stage/"
cp -a "$here/dev-rootfs/." "$stage/"
# what the updater reports as the running release until RAUC has installed one (SVN 1: the
# version floor setup defines); a bundle brings its own
printf 'VERSION=%s\nSVN=1\nCOMPATIBLE=pks-appliance\n' "$(node -p 'require("'"$root"'/package.json").version')" > "$stage/usr/lib/pks-release"
# Plant IT's first-boot setup (rootfs-overlay/usr/lib/pks-setup): its unit goes where systemd
# finds it, and the two helpers it shares with the dev machine come from scripts/.
install -m 0755 "$root/scripts/pki.sh" "$stage/usr/lib/pks-setup/"
install -m 0644 "$stage/usr/lib/pks-setup/pks-setup.service" "$stage/usr/lib/systemd/system/pks-setup.service"
# Dev image only: the site inputs plant IT would bring (CAs, the box's MQTT identity, addresses),
# made on the host, whose private halves stay in .cache/image/dev-site/host for the tests.
"$here/dev-site.sh" "$cache/dev-site"
install -d -m 0700 "$stage/etc/pks-site"
cp -a "$cache/dev-site/site/." "$stage/etc/pks-site/"
chown -R 0:0 "$stage/etc/pks-site"
# Users and the /etc/pks directories now rather than at first boot: the PCR 15 expected value
# covers /etc/pks as the booted system will see it before any site configuration.
systemd-sysusers --root="$stage" >/dev/null 2>&1
systemd-tmpfiles --root="$stage" --create --prefix=/etc/pks >/dev/null 2>&1 || true

# A/B updates (issue 13): RAUC's system config (two slots, verity bundles only, the custom
# backend over systemd-boot's boot counting) and the maintenance keyring (the dev CA with its
# CRL, scripts/update/keys.sh; bundles of this tree are signed with its dev signing key). The
# ESP is mounted at /efi for the boot chooser; the data partition at /var/lib/pks, and /etc/pks
# from it, so a slot switch finds the same site configuration and sealed credentials. Neither
# is nofail: without its data the box must not come up pretending to be unprovisioned.
update_keys=$root/.cache/update-keys
[ -f "$update_keys/keyring.pem" ] || "$root/scripts/update/keys.sh" --dir "$update_keys" init >/dev/null
install -d -m 0755 "$stage/etc/rauc" "$stage/efi"
install -m 0644 "$root/scripts/update/dev-image/system.conf" "$stage/etc/rauc/system.conf"
install -m 0644 "$update_keys/keyring.pem" "$stage/etc/rauc/keyring.pem"
cat >> "$stage/etc/fstab" <<'FSTAB'
PARTLABEL=data        /var/lib/pks  ext4  defaults,noatime  0 2
/var/lib/pks/etc-pks  /etc/pks      none  bind,x-systemd.requires-mounts-for=/var/lib/pks  0 0
PARTLABEL=ESP         /efi          vfat  umask=0077,noatime  0 0
FSTAB
install -d -m 0711 "$stage/var/lib/pks"

# Units: everything the overlay's presets enable, plus the dev image's own units.
units=()
for u in "$root"/rootfs-overlay/usr/lib/systemd/system/*.service "$root"/rootfs-overlay/usr/lib/systemd/system/*.target \
         "$root"/rootfs-overlay/usr/lib/systemd/system/*.timer "$root"/rootfs-overlay/usr/lib/systemd/system/*.socket \
         "$root"/rootfs-overlay/usr/lib/systemd/system/*.path; do
  [ -f "$u" ] || continue
  case "$u" in *@.*) continue ;; esac   # templates are enabled by instance
  units+=("$(basename "$u")")
done
if [ ${#units[@]} -gt 0 ]; then
  systemctl --root="$stage" preset "${units[@]}" >/dev/null 2>&1 || systemctl --root="$stage" preset "${units[@]}"
fi
# pks-measure.service is enabled here too in case the preset does not list it yet
systemctl --root="$stage" enable systemd-networkd.service pks-vm-agent.service pks-vm-report.service >/dev/null 2>&1
[ -f "$stage/usr/lib/systemd/system/pks-measure.service" ] && systemctl --root="$stage" enable pks-measure.service >/dev/null 2>&1
systemctl --root="$stage" enable pks-setup.service >/dev/null 2>&1
# the virtio console belongs to the agent, not to a getty
ln -sf /dev/null "$stage/etc/systemd/system/serial-getty@hvc0.service"
# and the serial console to the boot log: a getty there hangs the tty up (vhangup), and the boot
# report, written on it later, then fails with EIO
ln -sf /dev/null "$stage/etc/systemd/system/serial-getty@ttyS0.service"

# 5. expected PCR values (boot chain from the UKI, PCR 15 from the staged tree)
mkdir -p "$stage/usr/lib/pks-image"
if [ -f "$root/services/attest/expected-cli.ts" ]; then
  signkey=$cache/pcr-signing.key
  [ -f "$signkey" ] || (umask 077; openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$signkey" 2>/dev/null)
  # the vault's pin for update re-authorisation (issue 12 with 13), inside the measured pks-app
  # tree: a changed pin changes PCR 15 and closes the gate
  openssl pkey -in "$signkey" -pubout -out "$stage/usr/lib/pks/measurement-signing.pem"
  chmod 0644 "$stage/usr/lib/pks/measurement-signing.pem"
  (cd "$root" && node --import tsx services/attest/expected-cli.ts --rootfs "$stage" --slot A="$uki_a" --slot B="$uki_b" --loader "$loader") > "$out/expected-pcrs.json"
  install -m 0644 "$out/expected-pcrs.json" "$stage/usr/lib/pks-image/expected-pcrs.json"
  # Issue 12: the image signing key approves the UKI's PCR 11 values (one signature per boot
  # phase); setup seals the HSM PIN to PolicyAuthorize(this key) + PCR 7, pks-unseal opens it.
  # The dev key stays on the host (.cache/image/pcr-signing.key), like the dev site's private
  # halves; it is kept across builds so that a new image unseals what an older one sealed.
  openssl pkey -in "$signkey" -pubout -out "$stage/usr/lib/pks-image/pcr-signing.pem"
  (cd "$root" && node --import tsx services/attest/seal-cli.ts sign-policy --expected "$out/expected-pcrs.json" --key "$signkey" --out "$stage/usr/lib/pks-image/pcr11-policy.json")
  chmod 0644 "$stage/usr/lib/pks-image/pcr-signing.pem" "$stage/usr/lib/pks-image/pcr11-policy.json"
  cp "$stage/usr/lib/pks-image/pcr11-policy.json" "$out/pcr11-policy.json"
  cp "$stage/usr/lib/pks-image/pcr-signing.pem" "$out/pcr-signing.pem"
  # what the KMS verifies quotes against, signed by the same key (the fleet's reference values)
  (cd "$root" && node --import tsx scripts/image/reference.ts --expected "$out/expected-pcrs.json" --key "$signkey") > "$out/reference-values.json"
  # this image's application measurement, signed: what a bundle of it carries for the vault
  (cd "$root" && node --import tsx services/attest/measurement-manifest-cli.ts --release "$(node -p 'require("./package.json").version')" --key "$signkey" --expected "$out/expected-pcrs.json") > "$out/pks-measurement.json"
fi

# 6. file systems and disk
img=$out/.build
rm -rf "$img"
mkdir -p "$img"
# the data partition starts with what the staged tree has under /var/lib/pks and /etc/pks (the
# latter as etc-pks, bind-mounted back); the root slot keeps only the empty mount points
data=$img/data
install -d -m 0711 "$data"
cp -a "$stage/var/lib/pks/." "$data/"
cp -a "$stage/etc/pks" "$data/etc-pks"
find "$stage/var/lib/pks" -mindepth 1 -delete
truncate -s "${DATA_MIB}M" "$img/data.img"
mkfs.ext4 -q -F -L data -U "$DATA_FS_UUID" -E "hash_seed=$DATA_FS_UUID,root_owner=0:0" -d "$data" "$img/data.img"
# the ESP: systemd-boot picks the newest slot UKI that has boot tries left (loader.conf
# default pks-*, no menu); slot B's entry has none until an update installs it
mkfs.vfat -C -i "$ESP_VOLUME_ID" -n ESP -F 32 "$img/esp.img" $((ESP_MIB * 1024)) >/dev/null
printf 'default pks-*\ntimeout 0\neditor no\n' > "$img/loader.conf"
MTOOLS_SKIP_CHECK=1 mmd -i "$img/esp.img" ::/EFI ::/EFI/BOOT ::/EFI/Linux ::/loader
MTOOLS_SKIP_CHECK=1 mcopy -i "$img/esp.img" "$loader" ::/EFI/BOOT/BOOTX64.EFI
MTOOLS_SKIP_CHECK=1 mcopy -i "$img/esp.img" "$img/loader.conf" ::/loader/loader.conf
MTOOLS_SKIP_CHECK=1 mcopy -i "$img/esp.img" "$uki_a" ::/EFI/Linux/pks-1-A.efi
MTOOLS_SKIP_CHECK=1 mcopy -i "$img/esp.img" "$uki_b" ::/EFI/Linux/pks-0-B+0-3.efi
truncate -s "${ROOT_MIB}M" "$img/root.img"
mkfs.ext4 -q -F -L pks-root -U "$ROOT_FS_UUID" -E "hash_seed=$ROOT_FS_UUID,root_owner=0:0" -d "$stage" "$img/root.img"

esp_start=2048                           # 1 MiB
esp_size=$((ESP_MIB * 2048))
root_size=$((ROOT_MIB * 2048))
a_start=$((esp_start + esp_size))
b_start=$((a_start + root_size))
data_start=$((b_start + root_size))
data_size=$((DATA_MIB * 2048))
total=$((data_start + data_size + 2048))  # + room for the backup GPT
truncate -s 0 "$img/disk.raw"
truncate -s $((total * 512)) "$img/disk.raw"
sfdisk -q --no-reread --no-tell-kernel "$img/disk.raw" <<EOF
label: gpt
label-id: $DISK_GUID
unit: sectors
first-lba: 2048
start=$esp_start, size=$esp_size, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$ESP_PARTUUID, name="ESP"
start=$a_start, size=$root_size, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$ROOT_PARTUUID, name="rootfs_a"
start=$b_start, size=$root_size, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$ROOT_B_PARTUUID, name="rootfs_b"
start=$data_start, size=$data_size, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$DATA_PARTUUID, name="data"
EOF
dd if="$img/esp.img" of="$img/disk.raw" bs=1M seek=$((esp_start / 2048)) conv=notrunc,sparse status=none
dd if="$img/root.img" of="$img/disk.raw" bs=1M seek=$((a_start / 2048)) conv=notrunc,sparse status=none
dd if="$img/data.img" of="$img/disk.raw" bs=1M seek=$((data_start / 2048)) conv=notrunc,sparse status=none
mv "$img/disk.raw" "$out/disk.raw"
mv "$img/root.img" "$out/root.img"
cp "$uki_a" "$out/uki-A.efi"
cp "$uki_b" "$out/uki-B.efi"
rm -f "$out/uki.efi"   # the single UKI of the layout before A/B
rm -rf "$img"

echo "image: $out/disk.raw ($(du -h "$out/disk.raw" | cut -f1) used of $(du -h --apparent-size "$out/disk.raw" | cut -f1)) in $(( $(date +%s) - t0 ))s" >&2
