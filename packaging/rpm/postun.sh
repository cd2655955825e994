#!/bin/sh
# %postun ($1: 0 erase, 1 upgrade). rpm has no purge: the state in
# /var/lib/vmlineage is kept on erase (rpm convention); remove it by hand.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	if [ "$1" -ge 1 ]; then
		systemctl try-restart vmlineage.service >/dev/null 2>&1 || true
	fi
fi
exit 0
