#!/usr/bin/env bash
# Writes vmlineage(1) in roff to stdout from the binary's own --help, so that
# the man page covers every command and can never drift from it.
# Usage: packaging/gen-man.sh BINARY VERSION
set -euo pipefail
bin=$1 version=$2
date=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}" +%Y-%m-%d)

# roff-escape: backslashes, and lines starting with . or ' (requests).
esc() { sed -e 's/\\/\\e/g' -e "s/^\([.']\)/\\\\\&\1/"; }

# subcommands CMD...: the names under "Available Commands:".
subcommands() {
	"$bin" "$@" --help 2>/dev/null | awk '/^Available Commands:/ {on=1; next} on && /^$/ {exit} on {print $1}' |
		grep -vx -e help -e completion || true
}

walk() {
	local sub
	for sub in $(subcommands "$@"); do
		echo "$* $sub"
		walk "$@" "$sub"
	done
}

cat <<ROFF
.TH VMLINEAGE 1 "$date" "vmlineage $version" "User Commands"
.SH NAME
vmlineage \- trace VM lifecycles and lineage on XenServer / XCP-ng pools
.SH SYNOPSIS
.B vmlineage
.I command
.RI [ flags ]
.SH DESCRIPTION
ROFF
"$bin" --help | awk '/^Usage:/ {exit} {print}' | esc | sed 's/^$/.PP/'
cat <<'ROFF'
.PP
Every command below is shown with its own \fB\-\-help\fR text.
The agent runs as the \fBvmlineage\fR systemd service (\fIvmlineage.service\fR),
reading \fI/etc/vmlineage/vmlineage.yaml\fR; check that file with
\fBvmlineage config check\fR.
.SH COMMANDS
ROFF
walk | while read -r cmd; do
	echo ".SS \"vmlineage $cmd\""
	echo ".nf"
	# shellcheck disable=SC2086
	"$bin" $cmd --help | esc
	echo ".fi"
done
cat <<'ROFF'
.SH FILES
.TP
.I /etc/vmlineage/vmlineage.yaml
agent configuration (0640 root:vmlineage, never overwritten by upgrades)
.TP
.I /var/lib/vmlineage
lineage store (lineage.db) and spools; removed by a package purge
.TP
.I /usr/lib/vmlineage/detectors
shipped detector plugins and their SHA256SUMS
.TP
.I /usr/share/vmlineage
Kibana saved objects and Elasticsearch index templates
.SH ENVIRONMENT
.TP
.B VMLINEAGE_XAPI_PASSWORD
XAPI password when xapi.password_file is not set (the variable's name is xapi.password_env)
.SH SECURITY
Passwords, API keys and tokens are read from files or environment variables,
never from the command line, and are never written to logs or to the output
of \fBconfig check\fR.
.SH SEE ALSO
.BR systemctl (1),
.BR journalctl (1)
ROFF
