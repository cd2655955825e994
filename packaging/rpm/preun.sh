#!/bin/sh
# %preun ($1: 0 erase, 1 upgrade): erasing stops and disables the service.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
	systemctl disable --now vmlineage.service >/dev/null 2>&1 || true
fi
exit 0
