package store

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// Read structures ("derived" data). The writer's hot path pays for none of
// the secondary indexes SQLite would maintain per row (see partitionDDL), so
// reads get their speed from side structures that cost the writer almost
// nothing:
//
//   - call_ranges (one table): per (hour, session) the smallest and
//     largest call id, upserted once per batch: the small map that tells
//     which hour holds an id (a session's ids grow with time, so normally
//     one), so a lookup by id is one rowid search, not one per hour.
//   - call_spans (one table): per (hour, 10 s bucket of start, session) the
//     smallest and largest call id that started in it. Upserted once per
//     batch and bucket, not per row. It turns a time range into rowid
//     ranges (the calls tables are keyed by id), so a time range reads the
//     buckets it covers, not whole hours.
//   - calls_H__err (start_ns, id, status): the error lane, one row per
//     non-ok call, written with the batch. Errors are rare, so ok writes
//     don't pay for it.
//   - calls_H__parent (parent_id, id) and calls_H__func (func_id, start_ns,
//     id): built in the background, in chunks of chunkRows rows, each chunk
//     its own short write transaction, so the writer waits at most one
//     chunk. derived.next_id records the progress: an interrupted build
//     resumes where it stopped. The open hour is built up to its newest
//     call every buildEvery and finished once it has closed.
//   - stats_H__rollup: one row per (pid, function) for the hour, built the
//     same way in stats rowid order, so stats over many hours read a row
//     per function per hour instead of one per interval.
//   - stats_H__rollup10: the same per 10-minute bucket of interval start,
//     so a range that starts or ends inside an hour (the live hour, `stats
//     --since 6h`) reads the buckets it covers whole and raw intervals only
//     for the at most 10 minutes at each end.
//
// Readers use a structure when its derived row says it is complete ("live":
// created with the hour and kept by the writer since; "done": built), and
// the parent, function and rollup tables also while "building": they then
// hold every row below the builder's cursor (next_id), and the reader scans
// the rows from the cursor on itself. The writer keeps each side table for
// the rows below its bound (sideBounds): all rows once complete, the rows
// below the cursor while building (a call written late, after the builder
// passed its id), so what a reader trusts stays true.
//
// None of this changes an answer: TestDerivedMatchesScans compares every
// read with and without the structures.

// Derived states.
const (
	stateLive     = "live"
	stateBuilding = "building"
	stateDone     = "done"
)

// Side structures of a calls partition, in build order.
const (
	sideSpans  = "spans"
	sideErr    = "err"
	sideParent = "parent"
	sideFunc   = "func"
	sideRollup = "rollup" // of a stats partition
	// sideRollup10 rolls a stats partition up per 10 minutes, so a range
	// that starts or ends inside an hour reads at most 10 minutes of
	// intervals at each end instead of the hour's.
	sideRollup10 = "rollup10"
)

var callSides = []string{sideSpans, sideErr, sideParent, sideFunc}

// sideName is the derived name (and, except for spans, the table name) of a
// side structure of partition table.
func sideName(table, side string) string { return table + "__" + side }

// sideDDL creates the side table of table in schema db.
func sideDDL(db, table, side string) string {
	q := db + "." + sideName(table, side)
	switch side {
	case sideErr:
		return `CREATE TABLE IF NOT EXISTS ` + q + ` (start_ns INTEGER NOT NULL, id INTEGER NOT NULL, status INTEGER NOT NULL,
			PRIMARY KEY (start_ns, id)) WITHOUT ROWID`
	case sideParent:
		return `CREATE TABLE IF NOT EXISTS ` + q + ` (parent_id INTEGER NOT NULL, id INTEGER NOT NULL,
			PRIMARY KEY (parent_id, id)) WITHOUT ROWID`
	case sideFunc:
		return `CREATE TABLE IF NOT EXISTS ` + q + ` (func_id INTEGER NOT NULL, start_ns INTEGER NOT NULL, id INTEGER NOT NULL,
			PRIMARY KEY (func_id, start_ns, id)) WITHOUT ROWID`
	case sideRollup:
		return `CREATE TABLE IF NOT EXISTS ` + q + ` (` + statsColumnsDDL + `,
			PRIMARY KEY (pid, func_id)
		) WITHOUT ROWID`
	case sideRollup10:
		return `CREATE TABLE IF NOT EXISTS ` + q + ` (` + statsColumnsDDL + `,
			bucket_ns INTEGER NOT NULL,
			PRIMARY KEY (bucket_ns, pid, func_id)
		) WITHOUT ROWID`
	}
	panic("store: unknown side structure " + side)
}

// sideFill is the INSERT ... SELECT statements that copy the calls rows
// with ids in [?1, ?2] of hour ?3 into the side structure.
func sideFill(table, side string) []string {
	switch side {
	case sideSpans:
		return []string{`INSERT INTO call_spans (hour_ns, bucket_ns, session, min_id, max_id)
			SELECT ?3, start_ns - start_ns % ` + strconv.FormatInt(spanWidth, 10) + `, id >> 40, min(id), max(id) FROM ` + table + `
			WHERE id >= ?1 AND id <= ?2 GROUP BY 2, 3 ORDER BY 2, 3
			ON CONFLICT (hour_ns, bucket_ns, session) DO UPDATE SET
				min_id = min(min_id, excluded.min_id), max_id = max(max_id, excluded.max_id)`,
			`INSERT INTO call_ranges (hour_ns, session, min_id, max_id)
			SELECT ?3, id >> 40, min(id), max(id) FROM ` + table + ` WHERE id >= ?1 AND id <= ?2 GROUP BY 2 ORDER BY 2
			ON CONFLICT (hour_ns, session) DO UPDATE SET
				min_id = min(min_id, excluded.min_id), max_id = max(max_id, excluded.max_id)`}
	case sideErr:
		return []string{`INSERT OR IGNORE INTO ` + sideName(table, side) + ` SELECT start_ns, id, status FROM ` + table +
			` WHERE id >= ?1 AND id <= ?2 AND status != 0`}
	case sideParent:
		return []string{`INSERT OR IGNORE INTO ` + sideName(table, side) + ` SELECT parent_id, id FROM ` + table +
			` WHERE id >= ?1 AND id <= ?2 AND parent_id IS NOT NULL`}
	case sideFunc:
		return []string{`INSERT OR IGNORE INTO ` + sideName(table, side) + ` SELECT func_id, start_ns, id FROM ` + table +
			` WHERE id >= ?1 AND id <= ?2`}
	}
	panic("store: no fill for side structure " + side)
}

// spanWidth is the width of a call_spans bucket, in ns. 10 s: a time range
// then reads at most 10 s of calls it doesn't need at each end, and the
// writer upserts a few rows per 5,000-call batch.
const spanWidth = int64(10 * time.Second)

// spanBucket is the bucket of a start time, as call_spans keys it
// (start_ns - start_ns % width, which for negative times rounds toward
// zero like SQLite's %).
func spanBucket(ns int64) int64 { return ns - ns%spanWidth }

// sideBounds reads, inside the write transaction, which side tables of
// partition table exist and up to where the writer must keep them: all
// ids (math.MaxInt64) once complete ("live" or "done"), and the ids below
// the builder's cursor while one is being built, since the builder copies
// the ids from there on itself. Reading it from the database each time,
// under the write lock, keeps it right when another process (`retention
// run`) has advanced a build.
func (tx *wtx) sideBounds(table string) (map[string]int64, error) {
	st, err := tx.stmt(`SELECT name, state, next_id FROM derived WHERE name >= ? AND name < ?`)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(tx.ctx, table+"__", table+"_`")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var name, state string
		var next int64
		if err := rows.Scan(&name, &state, &next); err != nil {
			return nil, err
		}
		b := int64(math.MaxInt64)
		if state == stateBuilding {
			b = next
		}
		out[strings.TrimPrefix(name, table+"__")] = b
	}
	return out, rows.Err()
}

// maintainCalls adds a batch of calls, just inserted into table, to the
// hour's spans and to the side tables that exist, as far as the writer
// keeps them (sideBounds). Spans cost one upsert per (10 s bucket,
// session) of the batch, the error lane one row per non-ok call. The
// parent and function indexes get only the calls below the builder's
// cursor: in the open hour, calls that entered before the last build step
// and ended since; in a closed hour, late calls. New calls are above the
// cursor, and the next build step copies them.
func (tx *wtx) maintainCalls(table string, hour time.Time, calls []record.Call, fids []int64) error {
	type key struct{ bucket, session int64 }
	type span struct{ lo, hi int64 }
	spans := map[key]span{}
	var order []key
	ranges := map[int64]span{}
	var sessions []int64
	// Neighbours in a batch (sorted by id) nearly always share their
	// bucket and session: the maps are updated only when the key changes
	// (a map update per call was 2% of the writer's CPU).
	var run key
	var runSpan span
	inRun := false
	flush := func() {
		if !inRun {
			return
		}
		sp, ok := spans[run]
		if !ok {
			order = append(order, run)
			sp = runSpan
		}
		sp.lo, sp.hi = min(sp.lo, runSpan.lo), max(sp.hi, runSpan.hi)
		spans[run] = sp
		rg, ok := ranges[run.session]
		if !ok {
			sessions = append(sessions, run.session)
			rg = runSpan
		}
		rg.lo, rg.hi = min(rg.lo, runSpan.lo), max(rg.hi, runSpan.hi)
		ranges[run.session] = rg
	}
	for i := range calls {
		id := int64(calls[i].ID)
		k := key{spanBucket(calls[i].Start), id >> 40}
		if inRun && k == run {
			runSpan.lo, runSpan.hi = min(runSpan.lo, id), max(runSpan.hi, id)
			continue
		}
		flush()
		run, runSpan, inRun = k, span{id, id}, true
	}
	flush()
	rup, err := tx.stmt(`INSERT INTO call_ranges (hour_ns, session, min_id, max_id) VALUES (?, ?, ?, ?)
		ON CONFLICT (hour_ns, session) DO UPDATE SET
			min_id = min(min_id, excluded.min_id), max_id = max(max_id, excluded.max_id)`)
	if err != nil {
		return err
	}
	for _, sess := range sessions {
		rg := ranges[sess]
		if _, err := rup.ExecContext(tx.ctx, hour.UnixNano(), sess, rg.lo, rg.hi); err != nil {
			return fmt.Errorf("update call ranges: %w", err)
		}
	}
	up, err := tx.stmt(`INSERT INTO call_spans (hour_ns, bucket_ns, session, min_id, max_id) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (hour_ns, bucket_ns, session) DO UPDATE SET
			min_id = min(min_id, excluded.min_id), max_id = max(max_id, excluded.max_id)`)
	if err != nil {
		return err
	}
	for _, k := range order {
		sp := spans[k]
		if _, err := up.ExecContext(tx.ctx, hour.UnixNano(), k.bucket, k.session, sp.lo, sp.hi); err != nil {
			return fmt.Errorf("update call spans: %w", err)
		}
	}
	bounds, err := tx.sideBounds(table)
	if err != nil {
		return err
	}
	if b, ok := bounds[sideErr]; ok {
		// Bound through the driver like the calls themselves: with many
		// errors per batch, database/sql's argument conversion is
		// measurable (BenchmarkWriteCalls has 20% errors).
		// In key order, so the rows append to the b-tree's right edge.
		var errs []*record.Call
		for i := range calls {
			if calls[i].Status != record.StatusOK && int64(calls[i].ID) < b {
				errs = append(errs, &calls[i])
			}
		}
		slices.SortFunc(errs, func(a, b *record.Call) int { return cmp.Or(cmp.Compare(a.Start, b.Start), cmp.Compare(a.ID, b.ID)) })
		if err := tx.insertErrLane(`INSERT OR IGNORE INTO `+sideName(table, sideErr), errs); err != nil {
			return err
		}
	}
	if b, ok := bounds[sideParent]; ok {
		var args []any
		for i := range calls {
			if calls[i].ParentID != 0 && int64(calls[i].ID) < b {
				args = append(args, int64(calls[i].ParentID), int64(calls[i].ID))
			}
		}
		if err := tx.insertRows(`INSERT OR IGNORE INTO `+sideName(table, sideParent), 2, args); err != nil {
			return err
		}
	}
	if b, ok := bounds[sideFunc]; ok {
		var args []any
		for i := range calls {
			if int64(calls[i].ID) < b {
				args = append(args, fids[i], calls[i].Start, int64(calls[i].ID))
			}
		}
		if err := tx.insertRows(`INSERT OR IGNORE INTO `+sideName(table, sideFunc), 3, args); err != nil {
			return err
		}
	}
	return nil
}

// insertRows runs prefix VALUES (...),(...) over args, cols per row, in
// statements of at most callsPerStmt rows.
func (tx *wtx) insertRows(prefix string, cols int, args []any) error {
	row := "(" + strings.Repeat("?,", cols-1) + "?)"
	for len(args) > 0 {
		n := rowsPerStmt(len(args) / cols)
		q := prefix + " VALUES " + strings.Repeat(row+",", n-1) + row
		st, err := tx.stmt(q)
		if err != nil {
			return err
		}
		if _, err := st.ExecContext(tx.ctx, args[:n*cols]...); err != nil {
			return err
		}
		args = args[n*cols:]
	}
	return nil
}

// createLiveSides creates the error lane of a new calls partition and marks
// it and the hour's spans live: the writer keeps both from the first row.
func (tx *wtx) createLiveSides(table string, hour time.Time) error {
	if _, err := tx.exec(sideDDL("main", table, sideErr)); err != nil {
		return err
	}
	for _, side := range []string{sideSpans, sideErr} {
		if _, err := tx.exec(`INSERT OR IGNORE INTO derived (name, hour_ns, state) VALUES (?, ?, ?)`,
			sideName(table, side), hour.UnixNano(), stateLive); err != nil {
			return err
		}
	}
	return nil
}

// chunkRows is how many calls rows one build step reads. Each step is one
// write transaction, so it bounds how long the writer can wait for the
// builder; see docs/performance.md for the measured step times.
var chunkRows = 2000

// buildGrace is how long after an hour ends its partitions count as closed.
// Rows may still arrive later (calls that started in the hour and ended
// after it, stats intervals straddling the hour); they are added to the
// side tables as they come.
const buildGrace = 2 * time.Minute

// BuildReport says what one BuildDerived pass did.
type BuildReport struct {
	Steps int           // write transactions
	Done  []string      // side structures finished
	Max   time.Duration // longest step (the longest the writer waited)
}

// BuildDerived builds the side structures the hours lack: for every hour
// that has begun, the parent and function indexes of its calls (and, in a
// store upgraded from schema 2, the spans and error lane); for closed hours
// also the rollup of the stats. An hour still open is built up to its
// newest call and stays "building": the next pass continues from there, and
// meanwhile the writer adds calls below the cursor itself (a call is
// written when it ends, so ids arrive out of order), while readers scan the
// few calls above it. Once the hour has closed, the pass that reaches its
// end marks the structure done.
//
// It works in short steps, each its own write transaction taken through
// the writer's lock, so a concurrent WriteCalls waits at most one step. It
// is safe to interrupt: the next pass resumes each build where it stopped.
// The store's background builder runs it every buildEvery; tests and
// benchmarks call it directly.
func (s *Store) BuildDerived(ctx context.Context) (BuildReport, error) {
	var rep BuildReport
	if err := s.writable(); err != nil {
		return rep, err
	}
	now := s.clock()
	cutoff := now.Add(-buildGrace).UnixNano()
	var parts []partRef
	var states map[string]string
	err := s.read(ctx, "list hours to build", func(r *rtx) error {
		var err error
		if parts, err = r.partsBegun(now.UnixNano()); err != nil {
			return err
		}
		states, err = r.derivedStates()
		return err
	})
	if err != nil {
		return rep, err
	}
	for _, p := range parts {
		kind, hour, _ := ParsePartitionName(p.name)
		closed := p.end <= cutoff
		switch kind {
		case KindCalls:
			for _, side := range callSides {
				n := sideName(p.name, side)
				if st := states[n]; st == stateLive || st == stateDone {
					continue
				}
				if err := s.buildSide(ctx, p.name, side, hour, closed, &rep); err != nil {
					return rep, err
				}
			}
		case KindStats:
			for _, side := range []string{sideRollup, sideRollup10} {
				n := sideName(p.name, side)
				if st := states[n]; st == stateLive || st == stateDone {
					continue
				}
				if err := s.buildRollup(ctx, p.name, side, hour, closed, &rep); err != nil {
					return rep, err
				}
			}
		}
	}
	return rep, nil
}

// buildSide fills one side structure of a calls partition chunk by chunk,
// up to the partition's newest call; closed says whether the hour is
// closed, so that reaching the end finishes the structure.
func (s *Store) buildSide(ctx context.Context, table, side string, hour time.Time, closed bool, rep *BuildReport) error {
	ddl := ""
	if side != sideSpans {
		ddl = sideDDL("main", table, side)
	}
	return s.buildSteps(ctx, table, side, "id", ddl, hour, closed, rep, func(tx *wtx, next, last int64) error {
		for _, q := range sideFill(table, side) {
			if _, err := tx.exec(q, next, last, hour.UnixNano()); err != nil {
				return err
			}
		}
		return nil
	})
}

// buildRollup sums a stats partition per (pid, function), and for
// sideRollup10 per 10-minute bucket of interval start, into its rollup
// table, chunk by chunk in rowid order (stats rows are only appended, so
// rowids grow), each chunk merged into the rollup rows. An open hour is
// summed up to its newest row and stays "building" with the next rowid as
// cursor (readers add the rows from the cursor on); the first pass that
// reaches the end of a closed hour marks it done, and from then on the
// writer adds late rows itself.
func (s *Store) buildRollup(ctx context.Context, table, side string, hour time.Time, closed bool, rep *BuildReport) error {
	return s.buildSteps(ctx, table, side, "rowid", sideDDL("main", table, side), hour, closed, rep, func(tx *wtx, next, last int64) error {
		rows, fids, buckets, err := sumStatsBy(ctx, s.wc, table, "rowid >= ? AND rowid <= ?", []any{next, last}, side == sideRollup10)
		if err != nil {
			return err
		}
		return tx.addRollup(sideName(table, side), rows, fids, buckets)
	})
}

// rollupWidth is the bucket of a sideRollup10 row: 10 minutes of interval
// starts.
const rollupWidth = int64(10 * time.Minute)

// minID is below every call id and rowid (both are positive).
const minID = int64(-1) << 62

// buildSteps runs the build of side structure side of partition table:
// steps of chunkRows rows in key order (key: "id" or "rowid"), each its own
// write transaction that creates the side table (ddl, if any) and its
// derived row on the first step, copies rows [next, last] with fill, and
// moves the cursor past them. Reaching the end marks the structure done
// when the hour is closed, and leaves it building otherwise.
//
// In an open hour a pass stops at the rows that existed when it began
// (target): a writer appending as fast as the builder copies would
// otherwise keep it going forever. A closed hour gets only late rows, so
// its pass runs to the end, which it must reach before marking it done.
// Between steps the builder pauses as long as the step took, so it holds
// the write lock at most half the time and the checkpointer finds moments
// to catch up with the WAL.
func (s *Store) buildSteps(ctx context.Context, table, side, key, ddl string, hour time.Time, closed bool, rep *BuildReport,
	fill func(tx *wtx, next, last int64) error) error {
	name := sideName(table, side)
	target := int64(math.MaxInt64)
	for first := true; ; first = false {
		if err := ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		var finished bool
		err := s.writeTx("build "+name, false, func(tx *wtx) error {
			tx.ctx = ctx
			var exists int
			if err := s.wc.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, table).Scan(&exists); err != nil {
				return err
			}
			if exists == 0 { // dropped by retention meanwhile
				finished = true
				_, err := tx.exec(`DELETE FROM derived WHERE name = ?`, name)
				return err
			}
			var next int64
			var state string
			err := s.wc.QueryRowContext(ctx, `SELECT state, next_id FROM derived WHERE name = ?`, name).Scan(&state, &next)
			if err == sql.ErrNoRows {
				next, state = minID, stateBuilding
				if ddl != "" {
					if _, err := tx.exec(ddl); err != nil {
						return err
					}
				}
				if _, err := tx.exec(`INSERT INTO derived (name, hour_ns, state, next_id) VALUES (?, ?, ?, ?)`,
					name, hour.UnixNano(), stateBuilding, next); err != nil {
					return err
				}
			} else if err != nil {
				return err
			}
			if state != stateBuilding {
				finished = true
				return nil
			}
			if first && !closed {
				var m sql.NullInt64
				if err := s.wc.QueryRowContext(ctx, `SELECT max(`+key+`) FROM `+table).Scan(&m); err != nil {
					return err
				}
				target = m.Int64
			}
			var last sql.NullInt64
			if err := s.wc.QueryRowContext(ctx, `SELECT max(`+key+`) FROM (SELECT `+key+` FROM `+table+` WHERE `+key+` >= ? AND `+key+` <= ? ORDER BY `+key+` LIMIT ?)`,
				next, target, chunkRows).Scan(&last); err != nil {
				return err
			}
			if !last.Valid {
				finished = true
				if !closed {
					// Caught up with an open hour: the writer keeps
					// the rows below next, the next pass the rest.
					return nil
				}
				_, err := tx.exec(`UPDATE derived SET state = ? WHERE name = ?`, stateDone, name)
				return err
			}
			if err := fill(tx, next, last.Int64); err != nil {
				return err
			}
			_, err = tx.exec(`UPDATE derived SET next_id = ? WHERE name = ?`, last.Int64+1, name)
			return err
		})
		if err != nil {
			return err
		}
		rep.Steps++
		rep.Max = max(rep.Max, time.Since(start))
		if buildStepHook != nil {
			buildStepHook()
		}
		if finished {
			if closed {
				rep.Done = append(rep.Done, name)
			}
			return nil
		}
		pause := time.NewTimer(time.Since(start))
		select {
		case <-ctx.Done():
			pause.Stop()
			return ctx.Err()
		case <-pause.C:
		}
	}
}

// statsCols are the columns of a stats (or rollup) row after pid, func_id.
const statsCols = `interval_start_ns, interval_end_ns, calls, errors, panics, recorded, sampled, dropped, total_ns, max_ns, hist`

// putRollup writes one rollup row; bucket is its 10-minute bucket in a
// sideRollup10 table, nil in an hourly one.
func (tx *wtx) putRollup(table string, fid int64, r *record.FuncStats, bucket *int64) error {
	cols, marks := "", ""
	args := []any{int64(r.PID), fid, r.IntervalStart, r.IntervalEnd, int64(r.Calls), int64(r.Errors),
		int64(r.Panics), int64(r.Recorded), int64(r.Sampled), int64(r.Dropped), int64(r.TotalNs), int64(r.MaxNs), encodeHist(&r.Hist)}
	if bucket != nil {
		cols, marks = ", bucket_ns", ",?"
		args = append(args, *bucket)
	}
	st, err := tx.stmt(`INSERT OR REPLACE INTO ` + table + ` (pid, func_id, ` + statsCols + cols + `) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?` + marks + `)`)
	if err != nil {
		return err
	}
	_, err = st.ExecContext(tx.ctx, args...)
	return err
}

// maintainRollup adds late stats rows of a closed, rolled-up hour to its
// rollup. While a rollup is being built, new rows are above its cursor
// (rowids only grow) and the builder takes them.
func (tx *wtx) maintainRollup(table string, rows []record.FuncStats, fids []int64) error {
	bounds, err := tx.sideBounds(table)
	if err != nil {
		return err
	}
	if bounds[sideRollup] == math.MaxInt64 {
		if err := tx.addRollup(sideName(table, sideRollup), rows, fids, nil); err != nil {
			return err
		}
	}
	if bounds[sideRollup10] == math.MaxInt64 {
		buckets := make([]int64, len(rows))
		for i := range rows {
			buckets[i] = rows[i].IntervalStart - rows[i].IntervalStart%rollupWidth
		}
		return tx.addRollup(sideName(table, sideRollup10), rows, fids, buckets)
	}
	return nil
}

// addRollup merges per-(pid, function) sums into rollup table name, or
// per (10-minute bucket, pid, function) when buckets is not nil.
func (tx *wtx) addRollup(name string, rows []record.FuncStats, fids, buckets []int64) error {
	for i := range rows {
		cur := rows[i]
		var pid, fid int64
		var hist []byte
		var old record.FuncStats
		var calls, errs, panics, rec, samp, drop, tot, mx int64
		q, args := `SELECT pid, func_id, `+statsCols+` FROM `+name+` WHERE pid = ? AND func_id = ?`, []any{int64(cur.PID), fids[i]}
		var bucket *int64
		if buckets != nil {
			q, args, bucket = q+` AND bucket_ns = ?`, append(args, buckets[i]), &buckets[i]
		}
		err := tx.s.wc.QueryRowContext(tx.ctx, q, args...).Scan(&pid, &fid, &old.IntervalStart, &old.IntervalEnd, &calls, &errs, &panics, &rec, &samp, &drop, &tot, &mx, &hist)
		switch {
		case err == sql.ErrNoRows:
		case err != nil:
			return err
		default:
			old.Calls, old.Errors, old.Panics, old.Recorded = uint64(calls), uint64(errs), uint64(panics), uint64(rec)
			old.Sampled, old.Dropped, old.TotalNs, old.MaxNs = uint64(samp), uint64(drop), uint64(tot), uint64(mx)
			if err := decodeHist(hist, &old.Hist); err != nil {
				return err
			}
			cur.Add(&old)
		}
		if err := tx.putRollup(name, fids[i], &cur, bucket); err != nil {
			return err
		}
	}
	return nil
}

// buildStepHook, when set (by tests), runs after each build step.
var buildStepHook func()

// buildEvery is how often the background builder looks for closed hours.
const buildEvery = 30 * time.Second

// startBuilder runs BuildDerived at Open and then every buildEvery, until
// Close. Errors (a locked or full disk) are retried on the next tick.
func (s *Store) startBuilder() {
	if s.opts.NoBackgroundBuild {
		return
	}
	// The goroutines get the channels, not the fields: Close clears the
	// fields while they run.
	stop, done := make(chan struct{}), make(chan struct{})
	s.buildStop, s.buildDone = stop, done
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-stop
		cancel()
	}()
	go func() {
		defer close(done)
		t := time.NewTicker(buildEvery)
		defer t.Stop()
		for {
			_, _ = s.BuildDerived(ctx)
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
}
