#!/usr/bin/env bash
# Builds the base rootfs of the dev image (Debian packages only, none of our code) into $1.
# Slow (debootstrap + kernel + initrd: a few minutes); build.sh caches its result keyed on the
# hash of recipe.sh + this file. Needs root (debootstrap, chroot, bind mounts of /proc /sys /dev).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=recipe.sh
. "$here/recipe.sh"

dest=${1:?usage: base.sh DEST}
[ "$(id -u)" -eq 0 ] || { echo "base.sh: needs root (debootstrap, chroot)" >&2; exit 1; }
rm -rf "$dest"
mkdir -p "$dest"

mounted=()
cleanup() {
  local m
  for ((i=${#mounted[@]}-1; i>=0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT

# Packages except the kernel: the kernel comes second so that the initrd is generated once,
# with our module list, instead of twice.
first=()
for p in "${PACKAGES[@]}"; do
  case "$p" in linux-image-*|initramfs-tools) ;; *) first+=("$p") ;; esac
done
echo "base: debootstrap $SUITE (${#first[@]} extra packages)" >&2
debootstrap --variant=minbase --include="$(IFS=,; echo "${first[*]},zstd")" "$SUITE" "$dest" "$MIRROR" >"$dest.debootstrap.log" 2>&1 \
  || { tail -30 "$dest.debootstrap.log" >&2; exit 1; }
rm -f "$dest.debootstrap.log"

for m in proc sys dev; do
  mount --bind "/$m" "$dest/$m"
  mounted+=("$dest/$m")
done

# Nothing starts services inside the chroot; no docs, man pages or foreign locales in the image.
printf '#!/bin/sh\nexit 101\n' > "$dest/usr/sbin/policy-rc.d"
chmod 755 "$dest/usr/sbin/policy-rc.d"
cat > "$dest/etc/dpkg/dpkg.cfg.d/01-pks-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
cat > "$dest/etc/apt/apt.conf.d/01-pks" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF

mkdir -p "$dest/etc/initramfs-tools/conf.d"
printf 'MODULES=list\nCOMPRESS=zstd\nRESUME=none\n' > "$dest/etc/initramfs-tools/conf.d/pks.conf"
printf '%s\n' "${INITRD_MODULES[@]}" >> "$dest/etc/initramfs-tools/modules"

echo "base: kernel + initrd" >&2
chroot "$dest" /usr/bin/env DEBIAN_FRONTEND=noninteractive LC_ALL=C \
  apt-get install -y -q linux-image-amd64 initramfs-tools >"$dest.kernel.log" 2>&1 \
  || { tail -30 "$dest.kernel.log" >&2; exit 1; }
rm -f "$dest.kernel.log"

# Base system identity. The root file system is found by PARTUUID on the kernel command line
# (each A/B slot's UKI names its own); fstab has no line for it, because both slots carry the
# same file system UUID and a UUID= line could name the other slot.
echo pks-dev > "$dest/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tpks-dev\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$dest/etc/hosts"
printf '# / comes from root=PARTUUID= on the command line; the data partition is added by build.sh\n' > "$dest/etc/fstab"
: > "$dest/etc/machine-id"
rm -f "$dest/var/lib/dbus/machine-id"

rm -f "$dest/usr/sbin/policy-rc.d"
chroot "$dest" apt-get clean
cleanup
mounted=()
rm -rf "$dest/var/lib/apt/lists/"* "$dest/var/cache/apt/"*.bin "$dest/var/log/"*.log "$dest/tmp/"*
rm -rf "$dest/usr/share/doc/"* "$dest/usr/share/man/"* "$dest/usr/share/info/"*

ls "$dest"/boot/vmlinuz-* "$dest"/boot/initrd.img-* >/dev/null
echo "base: done ($(du -sh "$dest" | cut -f1))" >&2
