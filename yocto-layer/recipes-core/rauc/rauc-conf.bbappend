# Our A/B slot layout for rauc's system.conf; only with DISTRO_FEATURES "pks".
require ${@bb.utils.contains('DISTRO_FEATURES', 'pks', '${BPN}_pks.inc', '', d)}
