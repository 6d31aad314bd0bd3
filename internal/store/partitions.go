package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/obs-agent/obs-agent/internal/safefile"
)

// Partition describes one hour table.
type Partition struct {
	Name       string
	Kind       string // calls, stats, samples or gaps
	Start, End time.Time
	Created    time.Time
	Rows       int64
	// Bytes is the space the table, its indexes and side tables take: the
	// pages of their b-trees (partinfo.go). -1 when the SQLite build cannot
	// read pages (sqlite_dbpage).
	Bytes int64
}

// DropPartition drops one partition table (DROP TABLE, never DELETE) and
// its catalog row in one transaction.
func (s *Store) DropPartition(ctx context.Context, name string) error {
	if _, _, ok := ParsePartitionName(name); !ok {
		return fmt.Errorf("store: drop partition: %q is not a partition name (want e.g. calls_2026112710)", name)
	}
	return s.dropTables(ctx, "drop partition "+name, []string{name}, nil, nil)
}

// DropHour drops the four partitions of the UTC hour holding t and records
// the drop in retention_log, all in one transaction: after a crash either
// everything of the hour is gone and logged, or nothing is.
func (s *Store) DropHour(ctx context.Context, t time.Time, archive string) error {
	hour := t.UTC().Truncate(time.Hour)
	return s.dropHour(ctx, hour, archive, nil)
}

// ErrArchiveMismatch is returned by DropHourIf when the hour's rows are not
// the rows of the archive: the hour is not dropped.
var ErrArchiveMismatch = errors.New("the archive does not hold the hour's rows")

// DropHourIf drops the hour as DropHour does, but only when the
// fingerprint of its partitions equals want, the fingerprint of the archive
// that is to hold them. Otherwise nothing is dropped and the error wraps
// ErrArchiveMismatch.
//
// The fingerprint is summed on a read snapshot, outside the write lock:
// summing a 1M-call hour takes seconds (BenchmarkDropStall in
// internal/retention), and every writer would wait for it. The same
// snapshot reads the write generations of the hour's partitions
// (partition_writes), which every transaction that inserts into a
// partition raises, in this process or any other. The dropping
// transaction reads them again, an O(1) lookup under the write lock: if
// any moved, rows reached the hour after it was summed, and the hour is
// kept (ErrArchiveMismatch). Nothing of the hour is scanned while the
// writer waits.
func (s *Store) DropHourIf(ctx context.Context, t time.Time, archive string, want Fingerprint) error {
	hour := t.UTC().Truncate(time.Hour)
	op := "fingerprint hour " + hour.Format("2006010215")
	if err := s.writable(); err != nil {
		return err
	}
	rt, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return classify(op, err)
	}
	gens, err := hourGens(ctx, rt, hour)
	var snap Fingerprint
	if err == nil {
		snap, err = hourFingerprint(ctx, rt, "main", hour)
	}
	rt.Rollback() //nolint:errcheck // read-only
	if err != nil {
		return classify(op, err)
	}
	if !maps.Equal(snap, want) {
		return fmt.Errorf("%w: %s has %s, the store %s", ErrArchiveMismatch, archive, want, snap)
	}
	if testHookAfterSnapshot != nil {
		testHookAfterSnapshot()
	}
	return s.dropHour(ctx, hour, archive, func(tx *wtx) error {
		now, err := hourGens(tx.ctx, s.wc, hour)
		if err != nil {
			return err
		}
		if !maps.Equal(now, gens) {
			return fmt.Errorf("%w: rows reached the hour after %s was written (write generations %v, then %v)", ErrArchiveMismatch, archive, gens, now)
		}
		return nil
	})
}

// testHookAfterSnapshot, set by tests, runs between DropHourIf's snapshot
// and its dropping transaction.
var testHookAfterSnapshot func()

// dropTxHook, set by BenchmarkLockHolds, runs right before a drop asks
// for the write lock, after its waits for the checkpointer and the writer.
var dropTxHook func()

// hourGens reads the write generations of the hour's partitions
// (partition_writes): four primary-key lookups.
func hourGens(ctx context.Context, q rowsQuerier, hour time.Time) (map[string]int64, error) {
	var names []any
	for _, k := range Kinds {
		names = append(names, tableName(k, hour))
	}
	rows, err := q.QueryContext(ctx, `SELECT name, gen FROM partition_writes WHERE name IN (?, ?, ?, ?)`, names...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var n string
		var g int64
		if err := rows.Scan(&n, &g); err != nil {
			return nil, err
		}
		out[n] = g
	}
	return out, rows.Err()
}

type rowsQuerier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

func (s *Store) dropHour(ctx context.Context, hour time.Time, archive string, check func(tx *wtx) error) error {
	var names []string
	for _, k := range Kinds {
		names = append(names, tableName(k, hour))
	}
	return s.dropTables(ctx, "drop hour "+hour.Format("2006010215"), names, check, func(tx *wtx) error {
		_, err := tx.exec(`INSERT INTO retention_log (hour_start_ns, state, archive, updated_ns) VALUES (?, 'dropped', ?, ?)
			ON CONFLICT (hour_start_ns) DO UPDATE SET state = 'dropped', archive = excluded.archive, updated_ns = excluded.updated_ns`,
			hour.UnixNano(), archive, s.clock().UnixNano())
		return err
	})
}

// Fingerprint sums up the rows of one hour, partition by partition: the
// row count and sums (mod 2^31-1) of columns that tell rows apart. Two
// copies of the same rows have equal fingerprints; a copy missing rows,
// holding extra ones or holding another store's rows of the same hour
// does not.
type Fingerprint map[string][4]int64

func (f Fingerprint) String() string {
	var parts []string
	for _, k := range Kinds {
		for n, v := range f {
			if strings.HasPrefix(n, k+"_") {
				parts = append(parts, fmt.Sprintf("%s: %d rows", n, v[0]))
			}
		}
	}
	if len(parts) == 0 {
		return "no partitions of the hour"
	}
	return strings.Join(parts, ", ")
}

var fingerprintCols = map[string][3]string{
	KindCalls:   {"id", "start_ns", "duration_ns"},
	KindStats:   {"func_id", "interval_start_ns", "calls"},
	KindSamples: {"pid", "time_ns", "coalesce(rss_bytes, 0)"},
	KindGaps:    {"func_id", "start_ns", "end_ns"},
}

type rowQuerier interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// hourFingerprint reads the fingerprint of the hour from schema: a scan of
// every row of the hour, so never run under the write lock.
func hourFingerprint(ctx context.Context, q rowQuerier, schema string, hour time.Time) (Fingerprint, error) {
	fp := Fingerprint{}
	for _, k := range Kinds {
		n := tableName(k, hour)
		var exists int
		if err := q.QueryRowContext(ctx, `SELECT count(*) FROM `+schema+`.sqlite_master WHERE type = 'table' AND name = ?`, n).Scan(&exists); err != nil {
			return nil, err
		}
		if exists == 0 {
			continue
		}
		sel := "count(*)"
		for _, c := range fingerprintCols[k] {
			sel += ", coalesce(sum((" + c + ") % 2147483647), 0)"
		}
		var v [4]int64
		if err := q.QueryRowContext(ctx, `SELECT `+sel+` FROM `+schema+`.`+n).Scan(&v[0], &v[1], &v[2], &v[3]); err != nil {
			return nil, err
		}
		fp[n] = v
	}
	return fp, nil
}

// ArchiveFingerprint reads the fingerprint of the hour holding t from the
// store file at path, an archive that is complete and no longer written:
// it is opened read-only and immutable, so SQLite looks at no journal or
// WAL file beside it.
func ArchiveFingerprint(ctx context.Context, path string, t time.Time) (Fingerprint, error) {
	hour := t.UTC().Truncate(time.Hour)
	op := "read archive " + path
	p := url.Values{}
	p.Set("mode", "ro")
	p.Set("immutable", "1")
	db, err := sql.Open("sqlite", dsn(path, p))
	if err != nil {
		return nil, classify(op, err)
	}
	defer db.Close()
	fp, err := hourFingerprint(ctx, db, "main", hour)
	return fp, classify(op, err)
}

// dropTables removes partition tables, their side tables and catalog rows
// in one write transaction (after check, before also). The pages of the
// big ones are freed afterwards, in short steps, by EmptyTrash (retention
// runs it after its drops).
//
// The transaction is O(1) in the size of the tables: a big table (one
// without a named index: a calls partition and the side tables) is
// renamed to trash_N_NAME instead of dropped, since DROP TABLE visits
// every page of the table while the writer waits (a 1M-call hour and its
// side tables: 240-280 ms under load, docs/performance.md). The small
// partitions (stats, samples, gaps), whose named indexes would keep their
// names through a rename, are dropped in place. Once renamed, a table is
// invisible to every reader and writer: the catalog, partition_writes and
// derived rows go in the same transaction, and a late row of the hour
// creates a fresh partition under the old name.
func (s *Store) dropTables(ctx context.Context, op string, names []string, check, also func(tx *wtx) error) error {
	s.leaveRestartToWriter(ctx)
	if dropTxHook != nil {
		dropTxHook()
	}
	err := s.writeTx(op, false, func(tx *wtx) error {
		tx.ctx = ctx
		if check != nil {
			if err := check(tx); err != nil {
				return err
			}
		}
		var all []string
		for _, n := range names {
			// A partition's side tables (derived.go) go with it.
			sides, err := s.sideTables(ctx, n)
			if err != nil {
				return err
			}
			all = append(append(all, sides...), n)
			if _, err := tx.exec(`DELETE FROM derived WHERE name LIKE ? ESCAPE '\'`, sideLike(n)); err != nil {
				return err
			}
			if kind, hour, ok := ParsePartitionName(n); ok && kind == KindCalls {
				for _, t := range []string{"call_spans", "call_ranges"} {
					if _, err := tx.exec(`DELETE FROM `+t+` WHERE hour_ns = ?`, hour.UnixNano()); err != nil {
						return err
					}
				}
			}
		}
		stamp := time.Now().UnixNano()
		for _, n := range all {
			var exists, indexes int
			if err := s.wc.QueryRowContext(ctx, `SELECT count(*), (SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 AND sql IS NOT NULL)
				FROM sqlite_master WHERE type = 'table' AND name = ?1`, n).Scan(&exists, &indexes); err != nil {
				return err
			}
			if exists > 0 {
				// Free the cached statements first: a prepared statement
				// on the table would keep the schema busy.
				for q, st := range s.stmts {
					if strings.Contains(q, " "+n+" ") {
						st.Close()
						delete(s.stmts, q)
					}
				}
				if err := s.wc.Raw(func(any) error {
					for q, st := range s.dstmts {
						if strings.Contains(q, " "+n+" ") {
							st.Close()
							delete(s.dstmts, q)
						}
					}
					return nil
				}); err != nil {
					return err
				}
				if indexes > 0 {
					if _, err := tx.exec(`DROP TABLE ` + n); err != nil {
						return err
					}
				} else if err := tx.renameTable(n, trashPrefix+strconv.FormatInt(stamp, 10)+"_"+n); err != nil {
					return err
				}
			}
			for _, t := range []string{"partitions", "partition_writes"} {
				if _, err := tx.exec(`DELETE FROM `+t+` WHERE name = ?`, n); err != nil {
					return err
				}
			}
		}
		tx.onCommit = append(tx.onCommit, func() {
			for _, n := range names {
				delete(s.known, n)
			}
		})
		if also != nil {
			return also(tx)
		}
		return nil
	})
	return err
}

// renameTable renames a table with legacy_alter_table on: the store has
// no views or triggers whose text would need the new name, and without it
// SQLite re-parses and checks every entry of the schema on each rename.
func (tx *wtx) renameTable(from, to string) error {
	if _, err := tx.exec(`PRAGMA legacy_alter_table = ON`); err != nil {
		return err
	}
	_, err := tx.exec(`ALTER TABLE ` + from + ` RENAME TO ` + to)
	if _, perr := tx.exec(`PRAGMA legacy_alter_table = OFF`); err == nil {
		err = perr
	}
	return err
}

// trashPrefix names the tables dropTables renamed, whose pages EmptyTrash
// frees.
const trashPrefix = "trash_"

// EmptyTrash frees the pages of the tables a drop renamed (dropTables):
// each table is dropped whole, in its own write transaction, with a pause
// as long as that drop took before the next, so the writer gets the lock
// at least half the time. Retention stays DROP-based: deleting the rows in
// short steps instead bounded each step but sent every deleted row through
// the WAL, which grew to 12.7 GB freeing one 1M-call hour under a writer
// (docs/performance.md). A DROP writes only freelist pages; what the writer
// waits for is the drop of one table, the largest being the hour's calls
// partition. Like the builder's steps, each drop first waits, without the
// lock, for the checkpointer and the writer (yieldToCheckpoint,
// leaveRestartToWriter). It is safe to interrupt: the next call (retention runs it at
// the start and the end of each pass) drops what is left. It returns the
// number of tables dropped and the longest drop.
func (s *Store) EmptyTrash(ctx context.Context) (steps int, longest time.Duration, err error) {
	if err := s.writable(); err != nil {
		return 0, 0, err
	}
	var tables []string
	err = s.read(ctx, "list trash", func(r *rtx) error {
		rows, err := r.tx.QueryContext(r.ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ? ESCAPE '\' ORDER BY name`,
			strings.ReplaceAll(trashPrefix, "_", `\_`)+"%")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				return err
			}
			tables = append(tables, n)
		}
		return rows.Err()
	})
	if err != nil {
		return 0, 0, err
	}
	for i, t := range tables {
		if err := ctx.Err(); err != nil {
			return steps, longest, err
		}
		s.leaveRestartToWriter(ctx)
		start := time.Now()
		err := s.writeTx("drop "+t, false, func(tx *wtx) error {
			tx.ctx = ctx
			_, err := tx.exec(`DROP TABLE ` + t)
			return err
		})
		if err != nil {
			return steps, longest, err
		}
		took := time.Since(start)
		steps++
		longest = max(longest, took)
		if trashStepHook != nil {
			trashStepHook(took)
		}
		if i == len(tables)-1 {
			break
		}
		pause := time.NewTimer(took)
		select {
		case <-ctx.Done():
			pause.Stop()
			return steps, longest, ctx.Err()
		case <-pause.C:
		}
		s.yieldToCheckpoint(ctx)
	}
	return steps, longest, nil
}

// trashStepHook, when set (tests, benchmarks), gets the duration of each
// EmptyTrash drop.
var trashStepHook func(time.Duration)

// sideTables lists the side tables of partition table.
func (s *Store) sideTables(ctx context.Context, table string) ([]string, error) {
	return sideTablesOn(ctx, s.wc, table)
}

// sideTablesOn lists the side tables of partition table in the main
// schema of conn.
func sideTablesOn(ctx context.Context, conn *sql.Conn, table string) ([]string, error) {
	rows, err := conn.QueryContext(ctx, `SELECT name FROM main.sqlite_master WHERE type = 'table' AND name LIKE ? ESCAPE '\' ORDER BY name`,
		sideLike(table))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// sideLike is the LIKE pattern (escape \) of the names of table's side
// structures.
func sideLike(table string) string { return strings.ReplaceAll(table, "_", `\_`) + `\_\_%` }

// RetentionEntry is one row of retention_log.
type RetentionEntry struct {
	Hour    time.Time
	State   string // "archiving" (intent, not finished) or "dropped"
	Archive string // archive file, "" when not archived
	Updated time.Time
}

// LogRetention records the state of an hour's retention (an intent such as
// "archiving" before the archive is written).
func (s *Store) LogRetention(ctx context.Context, hour time.Time, state, archive string) error {
	return s.writeTx("log retention", false, func(tx *wtx) error {
		tx.ctx = ctx
		_, err := tx.exec(`INSERT INTO retention_log (hour_start_ns, state, archive, updated_ns) VALUES (?, ?, ?, ?)
			ON CONFLICT (hour_start_ns) DO UPDATE SET state = excluded.state, archive = excluded.archive, updated_ns = excluded.updated_ns`,
			hour.UTC().Truncate(time.Hour).UnixNano(), state, archive, s.clock().UnixNano())
		return err
	})
}

// RetentionLog returns retention_log, oldest hour first.
func (s *Store) RetentionLog(ctx context.Context) ([]RetentionEntry, error) {
	var out []RetentionEntry
	err := s.read(ctx, "read retention log", func(r *rtx) error {
		rows, err := r.tx.QueryContext(r.ctx, `SELECT hour_start_ns, state, archive, updated_ns FROM retention_log ORDER BY hour_start_ns`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var e RetentionEntry
			var h, u int64
			if err := rows.Scan(&h, &e.State, &e.Archive, &u); err != nil {
				return err
			}
			e.Hour, e.Updated = time.Unix(0, h).UTC(), time.Unix(0, u).UTC()
			out = append(out, e)
		}
		return rows.Err()
	})
	return out, err
}

// CopyHourTo copies the partitions of the UTC hour holding t, with the
// functions and sessions they reference, into dst, which must be an obs-agent
// store file created by Open and closed. It runs on its own connection: the
// source is read from a WAL snapshot and only dst is written, so the writer
// is never blocked. dst is switched out of WAL (journal_mode=MEMORY: a single
// self-contained file) and fsynced before CopyHourTo returns. Partitions
// already present in dst are left as they are.
func (s *Store) CopyHourTo(ctx context.Context, t time.Time, dst string) (err error) {
	hour := t.UTC().Truncate(time.Hour)
	op := "archive hour " + hour.Format("2006010215")
	p := url.Values{}
	p.Add("_pragma", "busy_timeout(5000)")
	db, err := sql.Open("sqlite", dsn(s.path, p))
	if err != nil {
		return classify(op, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		return classify(op, err)
	}
	defer conn.Close()
	absDst, err := filepath.Abs(dst)
	if err != nil {
		return classify(op, err)
	}
	if _, err := conn.ExecContext(ctx, `ATTACH DATABASE ? AS arc`, dsn(absDst, nil)); err != nil {
		return classify(op, err)
	}
	defer func() {
		if _, derr := conn.ExecContext(context.Background(), `DETACH DATABASE arc`); derr != nil && err == nil {
			err = classify(op, derr)
		}
	}()
	// MEMORY: an archive that fails half-way is thrown away whole, so it
	// needs no journal on disk, and no -journal name appears beside it
	// (in a shared directory another user could take that name first).
	// The file is left in rollback mode: a single self-contained file.
	var mode string
	if err := conn.QueryRowContext(ctx, `PRAGMA arc.journal_mode = MEMORY`).Scan(&mode); err != nil {
		return classify(op, err)
	}
	if v, err := readVersion(ctx, attachedVersion{conn}); err != nil || v != SchemaVersion {
		if err == nil {
			err = fmt.Errorf("archive %s has schema version %d, want %d", dst, v, SchemaVersion)
		}
		return classify(op, err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
		return classify(op, err)
	}
	defer func() {
		if err != nil {
			_, _ = conn.ExecContext(context.Background(), "ROLLBACK")
		}
	}()
	var present []string
	for _, k := range Kinds {
		n := tableName(k, hour)
		var inMain, inArc int
		if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM main.sqlite_master WHERE type='table' AND name = ?`, n).Scan(&inMain); err != nil {
			return classify(op, err)
		}
		if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM arc.sqlite_master WHERE type='table' AND name = ?`, n).Scan(&inArc); err != nil {
			return classify(op, err)
		}
		if inMain == 0 || inArc > 0 {
			continue
		}
		present = append(present, n)
		for _, q := range partitionDDL("arc", k, n) {
			if _, err := conn.ExecContext(ctx, q); err != nil {
				return classify(op, err)
			}
		}
		if _, err := conn.ExecContext(ctx, `INSERT INTO arc.`+n+` SELECT * FROM main.`+n); err != nil {
			return classify(op, err)
		}
		if _, err := conn.ExecContext(ctx, `INSERT OR REPLACE INTO arc.partitions SELECT * FROM main.partitions WHERE name = ?`, n); err != nil {
			return classify(op, err)
		}
		if err := copySides(ctx, conn, k, n, hour); err != nil {
			return classify(op, err)
		}
	}
	var fsrc []string
	for _, n := range present {
		if k, _, _ := ParsePartitionName(n); k != KindSamples {
			fsrc = append(fsrc, `SELECT func_id FROM main.`+n)
		}
	}
	if len(fsrc) > 0 {
		if _, err := conn.ExecContext(ctx, `INSERT OR IGNORE INTO arc.functions SELECT * FROM main.functions WHERE id IN (`+strings.Join(fsrc, " UNION ")+`)`); err != nil {
			return classify(op, err)
		}
	}
	// Sessions running during the hour (call ids carry their session).
	if _, err := conn.ExecContext(ctx, `INSERT OR IGNORE INTO arc.sessions SELECT * FROM main.sessions
		WHERE start_ns < ? AND (end_ns = 0 OR end_ns >= ?)`, hour.Add(time.Hour).UnixNano(), hour.UnixNano()); err != nil {
		return classify(op, err)
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return classify(op, err)
	}
	return classify(op, syncFile(absDst))
}

// copySides copies the read structures of partition n (derived.go) into the
// archive as they are in the source snapshot, with their derived rows: a
// reader of the archive (opened read-only, where nothing builds them) then
// finds the hour as fast to read as it was. They are not part of the hour's
// Fingerprint: they are derived from the partition's rows, and a structure
// still being built in the snapshot is copied with its cursor, which
// readers honour (they scan the rows from the cursor on themselves).
func copySides(ctx context.Context, conn *sql.Conn, kind, n string, hour time.Time) error {
	sides, err := sideTablesOn(ctx, conn, n)
	if err != nil {
		return err
	}
	for _, t := range sides {
		if _, err := conn.ExecContext(ctx, sideDDL("arc", n, strings.TrimPrefix(t, n+"__"))); err != nil {
			return fmt.Errorf("copy %s: %w", t, err)
		}
		if _, err := conn.ExecContext(ctx, `INSERT OR IGNORE INTO arc.`+t+` SELECT * FROM main.`+t); err != nil {
			return fmt.Errorf("copy %s: %w", t, err)
		}
	}
	if _, err := conn.ExecContext(ctx, `INSERT OR REPLACE INTO arc.derived SELECT * FROM main.derived WHERE name LIKE ? ESCAPE '\'`, sideLike(n)); err != nil {
		return fmt.Errorf("copy derived rows of %s: %w", n, err)
	}
	if kind == KindCalls {
		for _, t := range []string{"call_spans", "call_ranges"} {
			if _, err := conn.ExecContext(ctx, `INSERT OR REPLACE INTO arc.`+t+` SELECT * FROM main.`+t+` WHERE hour_ns = ?`, hour.UnixNano()); err != nil {
				return fmt.Errorf("copy %s of %s: %w", t, n, err)
			}
		}
	}
	return nil
}

// attachedVersion reads schema_version of the attached "arc" database.
type attachedVersion struct{ c *sql.Conn }

func (a attachedVersion) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return a.c.ExecContext(ctx, q, args...)
}

func (a attachedVersion) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	q = strings.ReplaceAll(q, "sqlite_master", "arc.sqlite_master")
	q = strings.ReplaceAll(q, "FROM schema_version", "FROM arc.schema_version")
	return a.c.QueryRowContext(ctx, q, args...)
}

// syncFile fsyncs a file.
func syncFile(path string) error {
	f, err := safefile.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Freelist returns the number of free pages and the total pages of the file.
func (s *Store) Freelist(ctx context.Context) (free, total int64, err error) {
	err = s.read(ctx, "freelist", func(r *rtx) error {
		if err := r.tx.QueryRowContext(r.ctx, `PRAGMA freelist_count`).Scan(&free); err != nil {
			return err
		}
		return r.tx.QueryRowContext(r.ctx, `PRAGMA page_count`).Scan(&total)
	})
	return free, total, err
}

// IncrementalVacuum returns up to pages free pages to the file system
// (PRAGMA incremental_vacuum; the store is created with
// auto_vacuum=INCREMENTAL). It holds the write lock while it runs, so call
// it in small steps when writes are quiet.
func (s *Store) IncrementalVacuum(ctx context.Context, pages int) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	// incremental_vacuum returns no rows but must be stepped to the end.
	rows, err := s.wc.QueryContext(ctx, fmt.Sprintf("PRAGMA incremental_vacuum(%d)", pages))
	if err != nil {
		return classify("incremental vacuum", err)
	}
	for rows.Next() {
	}
	rows.Close()
	return classify("incremental vacuum", rows.Err())
}

// Hours returns the distinct partition hours in the catalog, oldest first.
func (s *Store) Hours(ctx context.Context) ([]time.Time, error) {
	parts, err := s.catalog(ctx)
	if err != nil {
		return nil, err
	}
	var hours []time.Time
	for _, p := range parts {
		if len(hours) == 0 || !hours[len(hours)-1].Equal(p.Start) {
			hours = append(hours, p.Start)
		}
	}
	return hours, nil
}

// catalog lists the partitions without counting rows.
func (s *Store) catalog(ctx context.Context) ([]Partition, error) {
	var out []Partition
	err := s.read(ctx, "list partitions", func(r *rtx) error {
		rows, err := r.tx.QueryContext(r.ctx, `SELECT name, kind, start_ns, end_ns, created_ns FROM partitions ORDER BY start_ns, name`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var p Partition
			var st, en, cr int64
			if err := rows.Scan(&p.Name, &p.Kind, &st, &en, &cr); err != nil {
				return err
			}
			p.Start, p.End, p.Created = time.Unix(0, st).UTC(), time.Unix(0, en).UTC(), time.Unix(0, cr).UTC()
			out = append(out, p)
		}
		return rows.Err()
	})
	slices.SortStableFunc(out, func(a, b Partition) int { return a.Start.Compare(b.Start) })
	return out, err
}

// IntegrityCheck runs PRAGMA integrity_check and returns an error matching
// ErrCorrupt listing the problems, if any.
func (s *Store) IntegrityCheck(ctx context.Context) error {
	return s.read(ctx, "integrity check", func(r *rtx) error {
		rows, err := r.tx.QueryContext(r.ctx, "PRAGMA integrity_check")
		if err != nil {
			return err
		}
		defer rows.Close()
		var msgs []string
		for rows.Next() {
			var m string
			if err := rows.Scan(&m); err != nil {
				return err
			}
			if m != "ok" {
				msgs = append(msgs, m)
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(msgs) > 0 {
			return fmt.Errorf("%w: integrity_check: %s", ErrCorrupt, strings.Join(msgs, "; "))
		}
		return nil
	})
}

// dataVersion is PRAGMA data_version of one connection: it changes when
// another connection, in this process or another, commits.
func dataVersion(ctx context.Context, q rowQuerier) (int64, error) {
	var v int64
	err := q.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&v)
	return v, err
}
