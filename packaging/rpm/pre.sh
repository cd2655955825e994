#!/bin/sh
# %pre ($1: 1 install, 2 upgrade): the system user and group.
getent group vmlineage >/dev/null || groupadd --system vmlineage
getent passwd vmlineage >/dev/null || useradd --system --gid vmlineage --home-dir /var/lib/vmlineage \
	--no-create-home --shell /sbin/nologin --comment "vmlineage agent" vmlineage
exit 0
