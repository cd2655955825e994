// Package xapisim is a XAPI (XenServer / XCP-ng pool master) simulator for
// vmlineage's tests and demos. It serves real XML-RPC and JSON-RPC over HTTP
// or HTTPS with the byte layout of xapi's ocaml-rpc marshaller, keeps a
// database with xapi's generation-counter semantics so event.from coalesces,
// drops and orders events as a real pool does, and plays timed scenarios of
// VM lifecycle operations on a virtual clock. For every scenario it also
// computes the ground truth: the lifecycle records and the family tree a
// correct tracer must derive.
//
// Reference: /work/shared/reference/xapi.md sections 2-11 (xen-api
// ocaml/xapi/xapi_event.ml, ocaml/database/db_cache_types.ml,
// mirage/ocaml-rpc src/lib/xmlrpc.ml).
package xapisim
