package store

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"time"
)

// SchemaVersion is the schema this code writes. Open migrates older stores up
// to it and refuses newer ones with ErrNewerSchema.
const SchemaVersion = 9

// applicationID marks a SQLite file as an obs-agent store ("obsa").
const applicationID = 0x6f627361

// migrations[i] takes a store from version i to version i+1. They run in one
// transaction together with the version bump, so a crash mid-migration leaves
// the old version in place and the next Open redoes it.
var migrations = [][]string{
	// 0 -> 1: catalog and the small non-partitioned tables.
	{
		`CREATE TABLE schema_version (version INTEGER NOT NULL)`,
		`INSERT INTO schema_version (version) VALUES (0)`,
		// AUTOINCREMENT: session ids are the top bits of call ids, so an id
		// must never be handed out twice, even after the newest session row
		// is gone.
		`CREATE TABLE sessions (
			id INTEGER PRIMARY KEY AUTOINCREMENT,
			pid INTEGER NOT NULL,
			binary TEXT NOT NULL DEFAULT '',
			go_version TEXT NOT NULL DEFAULT '',
			patterns TEXT NOT NULL DEFAULT '',
			start_ns INTEGER NOT NULL,
			end_ns INTEGER NOT NULL DEFAULT 0,
			calls_recorded INTEGER NOT NULL DEFAULT 0,
			calls_lost INTEGER NOT NULL DEFAULT 0,
			exit_reason TEXT NOT NULL DEFAULT ''
		)`,
		`CREATE TABLE functions (
			id INTEGER PRIMARY KEY,
			name TEXT NOT NULL UNIQUE,
			package TEXT NOT NULL DEFAULT '',
			module TEXT NOT NULL DEFAULT ''
		)`,
		`CREATE TABLE partitions (
			name TEXT PRIMARY KEY,
			kind TEXT NOT NULL,
			start_ns INTEGER NOT NULL,
			end_ns INTEGER NOT NULL,
			created_ns INTEGER NOT NULL
		) WITHOUT ROWID`,
	},
	// 1 -> 2: retention bookkeeping.
	{
		`CREATE TABLE retention_log (
			hour_start_ns INTEGER PRIMARY KEY,
			state TEXT NOT NULL,
			archive TEXT NOT NULL DEFAULT '',
			updated_ns INTEGER NOT NULL
		)`,
		`CREATE INDEX partitions_by_start ON partitions (start_ns)`,
	},
	// 2 -> 3: who owns a session row (so the next run can tell a killed
	// agent's row from a live one) and the error records it could not keep.
	{
		`ALTER TABLE sessions ADD COLUMN agent_pid INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE sessions ADD COLUMN agent_start INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE sessions ADD COLUMN boot_id TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE sessions ADD COLUMN errors_lost INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE sessions ADD COLUMN errors_lost_by_function TEXT NOT NULL DEFAULT ''`,
	},
	// 3 -> 4: read structures (see derived.go). call_spans maps each
	// (hour, 10 s bucket of start, session) to the range of call ids that
	// started in it; derived records which side tables of an hour are
	// complete, so readers only trust finished ones.
	{
		`CREATE TABLE call_spans (
			hour_ns INTEGER NOT NULL,
			bucket_ns INTEGER NOT NULL,
			session INTEGER NOT NULL,
			min_id INTEGER NOT NULL,
			max_id INTEGER NOT NULL,
			PRIMARY KEY (hour_ns, bucket_ns, session)
		) WITHOUT ROWID`,
		// call_ranges: per (hour, session) the smallest and largest
		// call id, which tells the hour holding an id.
		`CREATE TABLE call_ranges (
			hour_ns INTEGER NOT NULL,
			session INTEGER NOT NULL,
			min_id INTEGER NOT NULL,
			max_id INTEGER NOT NULL,
			PRIMARY KEY (hour_ns, session)
		) WITHOUT ROWID`,
		`CREATE TABLE derived (
			name TEXT PRIMARY KEY,
			hour_ns INTEGER NOT NULL,
			state TEXT NOT NULL,
			next_id INTEGER NOT NULL DEFAULT 0
		) WITHOUT ROWID`,
	},
	// 4 -> 5: per-partition row counts kept by the writer (partinfo.go).
	// Partitions from before stay NULL: readers count those.
	{
		`ALTER TABLE partitions ADD COLUMN rows INTEGER`,
	},
	// 5 -> 6: partition_writes, per partition a write generation: the
	// number of write transactions that inserted into it, raised by the
	// writer in the inserting transaction. A verified retention drop
	// proves with one lookup that nothing reached the hour since it summed
	// the hour's rows (DropHourIf).
	{
		`CREATE TABLE partition_writes (
			name TEXT PRIMARY KEY,
			gen INTEGER NOT NULL
		) WITHOUT ROWID`,
		`INSERT INTO partition_writes (name, gen) SELECT name, 0 FROM partitions`,
	},
	// 6 -> 7 (processes): one row per traced process (processes.go).
	migrationProcesses,
	// 7 -> 8: the retention window and archive directory each session's
	// agent runs with (sessions.go).
	migrationSessionRetention,
	// 8 -> 9 (session_sinks): each sink's account per session (sinks.go).
	migrationSessionSinks,
}

// Partition kinds. Every hour has one table of each kind.
const (
	KindCalls   = "calls"
	KindStats   = "stats"
	KindSamples = "samples"
	KindGaps    = "gaps"
)

// Kinds lists the partition kinds in the order they are created.
var Kinds = []string{KindCalls, KindStats, KindSamples, KindGaps}

// partitionDDL returns the statements that create one partition table in
// schema db ("main" or an attached name).
//
// calls: id is the caller's call id and the rowid, so a lookup by id (the
// parent chain of an error) is one b-tree search, and ids (session<<40|seq,
// seq taken at entry) arrive in ascending order, so inserts append to the
// right edge of the table b-tree; a row that appends is bound a NULL
// rowid, so SQLite does not search the b-tree for its id (rowidTail in
// rawwrite.go: 1.14-1.37 times the writer's records per CPU-second). No secondary index: every index we tried
// cost the writer more than the 350k records/s budget allows
// (BenchmarkWriteCalls, 5,000-row batches, 20% errors, 2 cores, 16 KiB
// pages; records/s, two runs each):
//
//	no secondary index                          356k, 445k
//	partial (start_ns) WHERE status != 0        293k, 321k
//	(start_ns)                                  ~220k-270k
//	(start_ns) + partial (parent_id)            ~150k-190k
//
// Reads get their speed from side structures that cost the writer a few
// statements per batch instead of an index entry per row (derived.go):
// call spans and ranges, the error lane, and parent and function indexes
// and stats rollups built in the background in short steps.
//
// The columns have no NOT NULL constraints: SQLite checks each with a VDBE
// instruction per row, and the seven of them cost the writer 4-5% of its
// CPU (1.04 and 1.05 records per CPU-second against partitions with them,
// 600,000-row stores, 1% errors, 2026-11-30). The writer binds those
// columns from Go integers only, so it never stores a NULL there; stores
// made before keep their partitions' constraints, and readers read both
// alike.
func partitionDDL(db, kind, table string) []string {
	q := db + "." + table
	switch kind {
	case KindCalls:
		return append([]string{
			`CREATE TABLE IF NOT EXISTS ` + q + ` (
				id INTEGER PRIMARY KEY,
				parent_id INTEGER,
				pid INTEGER,
				goid INTEGER,
				func_id INTEGER,
				start_ns INTEGER,
				duration_ns INTEGER,
				status INTEGER,
				error_type TEXT,
				error TEXT,
				error_truncated INTEGER DEFAULT 0
			)`}, callIndexes(q, table)...)
	case KindStats:
		return []string{`CREATE TABLE IF NOT EXISTS ` + q + ` (` + statsColumnsDDL + `)`,
			// A few hundred rows a minute: the index costs the writer
			// nothing, and summing per (pid, function) reads it in
			// order instead of sorting.
			`CREATE INDEX IF NOT EXISTS ` + q + `__fn ON ` + table + ` (pid, func_id, interval_start_ns)`,
			// For a range that covers an hour in part, the intervals
			// outside its 10-minute rollup buckets (partHourStats).
			`CREATE INDEX IF NOT EXISTS ` + q + `__start ON ` + table + ` (interval_start_ns)`}
	case KindSamples:
		return []string{`CREATE TABLE IF NOT EXISTS ` + q + ` (
			pid INTEGER NOT NULL,
			time_ns INTEGER NOT NULL,
			cpu_percent REAL,
			rss_bytes INTEGER,
			vms_bytes INTEGER,
			threads INTEGER,
			open_fds INTEGER,
			read_bytes INTEGER,
			write_bytes INTEGER,
			vol_ctx_switches INTEGER,
			inv_ctx_switches INTEGER,
			goroutines INTEGER
		)`,
			// Samples arrive every few seconds per process, so an index
			// costs the writer nothing and makes one process's range a
			// seek.
			`CREATE INDEX IF NOT EXISTS ` + q + `__pid ON ` + table + ` (pid, time_ns)`}
	case KindGaps:
		return []string{`CREATE TABLE IF NOT EXISTS ` + q + ` (
			pid INTEGER NOT NULL,
			func_id INTEGER NOT NULL,
			start_ns INTEGER NOT NULL,
			end_ns INTEGER NOT NULL DEFAULT 0,
			reason TEXT NOT NULL DEFAULT '',
			UNIQUE (pid, func_id, start_ns)
		)`}
	}
	panic("store: unknown partition kind " + kind)
}

// statsColumnsDDL are the columns of a stats partition and of its rollup.
const statsColumnsDDL = `
			pid INTEGER NOT NULL,
			func_id INTEGER NOT NULL,
			interval_start_ns INTEGER NOT NULL,
			interval_end_ns INTEGER NOT NULL,
			calls INTEGER NOT NULL,
			errors INTEGER NOT NULL,
			panics INTEGER NOT NULL,
			recorded INTEGER NOT NULL,
			sampled INTEGER NOT NULL,
			dropped INTEGER NOT NULL,
			total_ns INTEGER NOT NULL,
			max_ns INTEGER NOT NULL,
			hist BLOB`

var partitionName = regexp.MustCompile(`^(calls|stats|samples|gaps)_([0-9]{10})$`)

// hourOf returns the UTC hour that holds ns.
func hourOf(ns int64) time.Time {
	return time.Unix(0, ns).UTC().Truncate(time.Hour)
}

// tableName is the partition table of kind for the hour.
func tableName(kind string, hour time.Time) string {
	return kind + "_" + hour.UTC().Format("2006010215")
}

// ParsePartitionName splits "calls_2026112710" into its kind and hour.
func ParsePartitionName(name string) (kind string, hour time.Time, ok bool) {
	m := partitionName.FindStringSubmatch(name)
	if m == nil {
		return "", time.Time{}, false
	}
	h, err := time.Parse("2006010215", m[2])
	if err != nil {
		return "", time.Time{}, false
	}
	return m[1], h.UTC(), true
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// readVersion returns the schema version, 0 for an empty database.
func readVersion(ctx context.Context, q execer) (int, error) {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type='table' AND name='schema_version'`).Scan(&n); err != nil {
		return 0, err
	}
	if n == 0 {
		var tables int
		if err := q.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master`).Scan(&tables); err != nil {
			return 0, err
		}
		if tables > 0 {
			return 0, fmt.Errorf("%w: the file is a SQLite database without an obs-agent schema_version table", ErrCorrupt)
		}
		return 0, nil
	}
	var v int
	if err := q.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v); err != nil {
		return 0, err
	}
	return v, nil
}

func newerSchemaError(path string, v int) error {
	return fmt.Errorf("%w: %s has schema version %d, this obs-agent knows up to %d; upgrade obs-agent to read or write it", ErrNewerSchema, path, v, SchemaVersion)
}

// migrate brings the database on conn from its version to target inside one
// write transaction.
func migrate(ctx context.Context, conn *sql.Conn, path string, target int) (err error) {
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_, _ = conn.ExecContext(context.Background(), "ROLLBACK")
		}
	}()
	v, err := readVersion(ctx, conn)
	if err != nil {
		return err
	}
	if v > len(migrations) {
		return newerSchemaError(path, v)
	}
	if v >= target {
		_, err = conn.ExecContext(ctx, "COMMIT")
		return err
	}
	if v == 0 {
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA application_id = %d", applicationID)); err != nil {
			return err
		}
	}
	for i := v; i < target; i++ {
		for _, stmt := range migrations[i] {
			if _, err := conn.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migrate to version %d: %w", i+1, err)
			}
		}
	}
	if _, err := conn.ExecContext(ctx, `UPDATE schema_version SET version = ?`, target); err != nil {
		return err
	}
	_, err = conn.ExecContext(ctx, "COMMIT")
	return err
}

// benchIndexes selects the secondary indexes of the calls partitions; only
// benchmarks change it (OBS_BENCH_INDEXES), to measure what an index costs:
// 0 none (the default), 1 the error-lane index, 2 (start_ns), 3 (start_ns)
// and (parent_id). See partitionDDL for the measurements.
var benchIndexes = 0

func callIndexes(q, table string) []string {
	errLane := `CREATE INDEX IF NOT EXISTS ` + q + `__errors ON ` + table + ` (start_ns) WHERE status != 0`
	start := `CREATE INDEX IF NOT EXISTS ` + q + `__start ON ` + table + ` (start_ns)`
	parent := `CREATE INDEX IF NOT EXISTS ` + q + `__parent ON ` + table + ` (parent_id) WHERE parent_id IS NOT NULL`
	switch benchIndexes {
	case 1:
		return []string{errLane}
	case 2:
		return []string{start}
	case 3:
		return []string{start, parent}
	}
	return nil
}
