package lineage

// schemaVersion is bumped with every change to schema; migrate() brings older
// files forward so a store survives upgrades.
const schemaVersion = 5

// schema is documented table by table in README.md ("Forensics with sqlite3");
// times are Unix milliseconds (UTC) so that sqlite3 users can write
// datetime(start_ms/1000,'unixepoch').
const schema = `
CREATE TABLE IF NOT EXISTS records (
  seq                   INTEGER PRIMARY KEY AUTOINCREMENT,
  id                    TEXT NOT NULL UNIQUE,
  pool_uuid             TEXT NOT NULL,
  host_uuid             TEXT NOT NULL DEFAULT '',
  host_name             TEXT NOT NULL DEFAULT '',
  vm_uuid               TEXT NOT NULL DEFAULT '',
  vm_name               TEXT NOT NULL DEFAULT '',
  parent_vm_uuid        TEXT NOT NULL DEFAULT '',
  activity              TEXT NOT NULL,
  operation             TEXT NOT NULL DEFAULT '',
  start_ms              INTEGER NOT NULL,
  end_ms                INTEGER,
  result                TEXT NOT NULL,
  error                 TEXT NOT NULL DEFAULT '',
  task_uuid             TEXT NOT NULL DEFAULT '',
  task_id               TEXT NOT NULL DEFAULT '',
  source                TEXT NOT NULL,
  destination_host_uuid TEXT NOT NULL DEFAULT '',
  json                  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_vm ON records(vm_uuid, start_ms);
CREATE INDEX IF NOT EXISTS records_parent ON records(parent_vm_uuid);
CREATE INDEX IF NOT EXISTS records_start ON records(start_ms);
CREATE INDEX IF NOT EXISTS records_task ON records(pool_uuid, task_id);
-- Records whose VM the logs could not name, by the name they give
-- (UnattributedCreations): without it each lookup read every such record,
-- once per change a catch-up weighed, and a restart's catch-up took
-- minutes on a store with thousands of them. Its condition says IS, not
-- =: SQLite weighs a partial index "col = constant" against every query's
-- "col = ?" and then prepares that statement again at each new value bound
-- (about 30 us each time; every vm_uuid=? lookup of the tracer and of
-- enrichment paid it). The column is NOT NULL, so IS '' means = ''.
CREATE INDEX IF NOT EXISTS records_unattributed ON records(vm_name, start_ms) WHERE vm_uuid IS '';

CREATE TABLE IF NOT EXISTS vms (
  uuid          TEXT PRIMARY KEY,
  pool_uuid     TEXT NOT NULL DEFAULT '',
  name          TEXT NOT NULL DEFAULT '',
  parent_uuid   TEXT NOT NULL DEFAULT '',
  parent_via    TEXT NOT NULL DEFAULT '',
  kind          TEXT NOT NULL DEFAULT 'vm',
  power_state   TEXT NOT NULL DEFAULT '',
  host_uuid     TEXT NOT NULL DEFAULT '',
  first_seen_ms INTEGER NOT NULL,
  last_seen_ms  INTEGER NOT NULL,
  destroyed_ms  INTEGER,
  xapi_ref      TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vms_parent ON vms(parent_uuid);
CREATE INDEX IF NOT EXISTS vms_name ON vms(name);

CREATE TABLE IF NOT EXISTS vm_states (
  vm_uuid     TEXT NOT NULL,
  from_ms     INTEGER NOT NULL,
  to_ms       INTEGER,
  power_state TEXT NOT NULL,
  host_uuid   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS vm_states_vm ON vm_states(vm_uuid, from_ms);

-- A destroyed VM whose uuid came back (the tracer re-creates it on a revert
-- of a destroyed VM) keeps its vms row, now alive again: each time it was
-- gone, from its destroy to its re-creation, is kept here so that it does
-- not look alive then.
CREATE TABLE IF NOT EXISTS vm_gaps (
  vm_uuid TEXT NOT NULL,
  from_ms INTEGER NOT NULL,
  to_ms   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS vm_gaps_vm ON vm_gaps(vm_uuid, from_ms);

CREATE TABLE IF NOT EXISTS vm_attrs (
  vm_uuid TEXT NOT NULL,
  kind    TEXT NOT NULL,
  value   TEXT NOT NULL,
  from_ms INTEGER NOT NULL,
  to_ms   INTEGER
);
CREATE INDEX IF NOT EXISTS vm_attrs_value ON vm_attrs(kind, value, from_ms);
CREATE INDEX IF NOT EXISTS vm_attrs_vm_time ON vm_attrs(vm_uuid, kind, from_ms);

CREATE TABLE IF NOT EXISTS hosts (
  uuid          TEXT PRIMARY KEY,
  pool_uuid     TEXT NOT NULL DEFAULT '',
  name          TEXT NOT NULL DEFAULT '',
  address       TEXT NOT NULL DEFAULT '',
  first_seen_ms INTEGER NOT NULL,
  last_seen_ms  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS pools (
  uuid TEXT PRIMARY KEY,
  name TEXT NOT NULL DEFAULT '',
  master_uuid TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;

-- Indexes no query needs, dropped from older stores: every state or
-- address change paid for them (vm_attrs_vm_time serves what vm_attrs_vm did).
DROP INDEX IF EXISTS vm_states_open;
DROP INDEX IF EXISTS vm_attrs_vm;

CREATE TABLE IF NOT EXISTS agent_state (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;
`

// upgrades[v] brings a store at user_version v to v+1. They run after schema
// (whose CREATE ... IF NOT EXISTS leaves existing tables alone) inside one
// transaction each.
var upgrades = map[int][]string{
	// v1 -> v2: the hash chain (issue 6). chain_seq is NULL until the record
	// is sealed; sealing gives the next sequence number, the previous
	// record's hash and its own. Records stored before the upgrade are sealed
	// in storage order by sealLegacy.
	1: {
		`ALTER TABLE records ADD COLUMN chain_seq INTEGER`,
		`ALTER TABLE records ADD COLUMN chain_prev TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE records ADD COLUMN chain_hash TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE records ADD COLUMN sealed_ms INTEGER`,
		`CREATE UNIQUE INDEX IF NOT EXISTS records_chain ON records(chain_seq) WHERE chain_seq IS NOT NULL`,
		`CREATE INDEX IF NOT EXISTS records_unsealed ON records(seq) WHERE chain_seq IS NULL`,
		`CREATE TABLE IF NOT EXISTS checkpoints (
		  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
		  chain_seq  INTEGER NOT NULL,
		  chain_hash TEXT NOT NULL,
		  records    INTEGER NOT NULL,
		  at_ms      INTEGER NOT NULL,
		  reason     TEXT NOT NULL DEFAULT ''
		)`,
	},
	// v2 -> v3: records_unattributed's condition from vm_uuid='' to
	// vm_uuid IS '' (see schema), which stops every vm_uuid=? statement
	// being prepared again at each execution.
	2: {
		`DROP INDEX IF EXISTS records_unattributed`,
		`CREATE INDEX records_unattributed ON records(vm_name, start_ms) WHERE vm_uuid IS ''`,
	},
	// v3 -> v4: a VM made (clone, copy, snapshot, checkpoint) from a VM
	// never seen keeps how it was made in parent_via with no parent_uuid,
	// so its later records list the parent unknown; VMs stored before took
	// it from their creating record, if any. The unary + keeps SQLite off
	// records_parent, which for parent '' would scan most records once per
	// root VM (a 1,000,000-VM store took over ten minutes; 0.7 s with it).
	3: {
		`UPDATE vms SET parent_via=(SELECT r.activity FROM records r WHERE r.vm_uuid=vms.uuid AND +r.parent_vm_uuid=''
		   AND r.result='success' AND r.activity IN ('clone','copy','snapshot','checkpoint') ORDER BY r.start_ms LIMIT 1)
		 WHERE parent_uuid='' AND parent_via='' AND EXISTS(SELECT 1 FROM records r WHERE r.vm_uuid=vms.uuid AND +r.parent_vm_uuid=''
		   AND r.result='success' AND r.activity IN ('clone','copy','snapshot','checkpoint'))`,
	},
	// v4 -> v5: vm_gaps, the times a re-created VM did not exist (schema
	// makes it; repeated here so the step stands on its own). Gaps of VMs
	// re-created before the upgrade were not kept and stay unknown.
	4: {
		`CREATE TABLE IF NOT EXISTS vm_gaps (vm_uuid TEXT NOT NULL, from_ms INTEGER NOT NULL, to_ms INTEGER NOT NULL)`,
		`CREATE INDEX IF NOT EXISTS vm_gaps_vm ON vm_gaps(vm_uuid, from_ms)`,
	},
}
