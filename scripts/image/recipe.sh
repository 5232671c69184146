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
)
# python3-minimal: pks-inject's CAN_RAW bridge (appliance/isotp/can-bridge.py; Node.js has no
# AF_CAN). can-utils: candump, the VM test's independent recorder of the bus (issue 15).

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

# Sizes in MiB. The root partition has a fixed size so the GPT does not move with the content.
ESP_MIB=96
ROOT_MIB=2048

# Kernel command line baked into the UKI. console=ttyS0 is the serial log; systemd's status
# lines on it are how boot.sh and the tests see progress.
CMDLINE="root=PARTUUID=${ROOT_PARTUUID} rootfstype=ext4 rw console=ttyS0,115200n8 quiet loglevel=4 systemd.show_status=1 systemd.log_target=console panic=10"
