// Package logsource is vmlineage's xensource.log fallback at run time: a
// Tailer that follows the hosts' log files (rotation, copytruncate, gzip
// generations, partial and overlong lines) and commits each file's offset in
// the same store transaction as the records derived from its lines; a
// Syslog listener for logs the hosts forward (RFC 3164/5424, UDP/TCP);
// Replay for old logs; and Failover, which lets the log-derived records into
// the store only while the pool master's XAPI is unreachable. Lines become
// records through agent/xensource (same ids as the XAPI tracer).
package logsource
