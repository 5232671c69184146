# systemd features the appliance relies on (TPM2 for systemd-measure/pcrphase, seccomp for the
# units' SystemCallFilter=); only with DISTRO_FEATURES "pks".
require ${@bb.utils.contains('DISTRO_FEATURES', 'pks', '${BPN}_pks.inc', '', d)}
