# TPM 2.0, CAN/vcan and dm-verity in the kernel; only with DISTRO_FEATURES "pks".
require ${@bb.utils.contains('DISTRO_FEATURES', 'pks', 'linux-yocto_pks.inc', '', d)}
