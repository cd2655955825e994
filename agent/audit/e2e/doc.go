// Package e2e holds the RBAC audit log's end-to-end tests: the XAPI
// simulator's pools fetched over /audit_log, followed as files through
// rotations, relayed by a real rsyslog, and joined with the records the
// real tracer stores. They live apart from agent/audit so that the
// parser's fuzz targets build without the agent's whole dependency tree.
package e2e
