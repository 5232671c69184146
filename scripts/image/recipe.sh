# The dev image recipe: everything that decides the cached base rootfs and the UKI.
# build.sh hashes this file together with base.sh; any change here rebuilds the base (minutes),
# anything else (our build, rootfs-overlay, the dev files) only restages it (seconds).
# Sourced by bash; plain assignments only.

SUITE=bookworm
MIRROR=${PKS_IMAGE_MIRROR:-http://deb.debian.org/debian}

# Debian packages on top of debootstrap's minbase. nodejs is NOT here: bookworm ships Node 18
# and our code needs Node 20, so build.sh copies the host's /usr/bin/node (v20, nodesource
# build, links only libc/libstdc++) into the image instead.
PACKAGES=(
  systemd systemd-sysv udev dbus kmod iproute2 procps ca-certificates libstdc++6
  linux-image-amd64 initramfs-tools
  tpm2-tools libtss2-tcti-device0 softhsm2 opensc
  python3-minimal can-utils
  rauc rauc-service squashfs-tools
)
# python3-minimal: pks-inject's CAN_RAW bridge (appliance/isotp/can-bridge.py; Node.js has no
# AF_CAN). can-utils: candump, the VM test's independent recorder of the bus (issue 15).
# rauc, rauc-service (its D-Bus service, which the updater calls), squashfs-tools (the updater
# reads pks-release and the measurement manifest out of a bundle with unsquashfs before it
# installs): the A/B updates (issue 13); RAUC itself mounts verity bundles through the kernel's
# loop, squashfs and dm-verity.

# The initrd only has to find an ext4 root on virtio-blk; a short list keeps it small, which
# matters under TCG where decompression is slow.
INITRD_MODULES=(virtio_pci virtio_blk virtio_scsi sd_mod ext4 crc32c_generic)

# Fixed identities: with these, the GPT (PCR 5) and the UKI's command line (PCR 11/12) are the
# same from build to build. Change them only on purpose.
DISK_GUID=6b1f5c57-7a0e-4c5e-9d7a-70b5c0de0001
ESP_PARTUUID=6b1f5c57-7a0e-4c5e-9d7a-70b5c0de0002
ROOT_PARTUUID=6b1f5c57-7a0e-4c5e-9d7a-70b5c0de0003
ROOT_FS_UUID=6b1f5c57-7a0e-4c5e-9d7a-70b5c0de0004
ESP_VOLUME_ID=50b5e5f1
# The A/B layout (issue 13): slot A is the partition above, slot B and the data partition
# (/var/lib/pks and /etc/pks, which outlive every update) come after it. Both slots hold the
# same kind of file system (an update writes a whole image), so nothing finds a root by its
# file system UUID: each slot's UKI names its own partition.
ROOT_B_PARTUUID=6b1f5c57-7a0e-4c5e-9d7a-70b5c0de0005
DATA_PARTUUID=6b1f5c57-7a0e-4c5e-9d7a-70b5c0de0006
DATA_FS_UUID=6b1f5c57-7a0e-4c5e-9d7a-70b5c0de0007

# Sizes in MiB. The root partition has a fixed size so the GPT does not move with the content.
# The ESP holds systemd-boot and the two slots' UKIs (~15 MiB each) plus one being replaced.
# The data partition also takes a bundle while it is installed (the updater copies it there).
ESP_MIB=96
ROOT_MIB=2048
DATA_MIB=3072

# Kernel command line baked into each slot's UKI. console=ttyS0 is the serial log; systemd's
# status lines on it are how boot.sh and the tests see progress. rauc.slot= tells RAUC which
# slot is booted (its custom backend does not ask the boot loader).
CMDLINE_COMMON="rootfstype=ext4 rw rootflags=noatime console=ttyS0,115200n8 quiet loglevel=4 systemd.show_status=1 systemd.log_target=console panic=10"
CMDLINE_A="root=PARTUUID=${ROOT_PARTUUID} rauc.slot=A ${CMDLINE_COMMON}"
CMDLINE_B="root=PARTUUID=${ROOT_B_PARTUUID} rauc.slot=B ${CMDLINE_COMMON}"
