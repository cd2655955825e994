#!/bin/sh
# %post ($1: 1 install, 2 upgrade). Not enabled: it needs xapi.url first.
chown root:vmlineage /etc/vmlineage/vmlineage.yaml
chmod 0640 /etc/vmlineage/vmlineage.yaml
install -d -o vmlineage -g vmlineage -m 0750 /var/lib/vmlineage
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
