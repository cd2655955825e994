// Package xensource reads XenServer / XCP-ng /var/log/xensource.log: it
// parses lines of every header era (Parse, zero allocation), gives year-less
// syslog stamps a year (YearInferer), attaches multi-line backtraces to their
// entry (Grouper), and derives lifecycle records from the lines of one or
// more hosts (Deriver) with the same ids the XAPI tracer computes, so one
// operation seen through both sources is one record. Render writes the lines
// each host would log for a simulated operation, for the XAPI simulator.
//
// The line format and markers are described in the project's reference
// xensource-log.md and were checked against xapi-project/xen-api
// (ocaml/libs/log/debug.ml, ocaml/xapi-types/ref.ml,
// ocaml/xapi/message_forwarding.ml, xapi_xenops.ml, xapi_vm_migrate.ml).
package xensource
