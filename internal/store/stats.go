package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"

	"modernc.org/sqlite"

	"github.com/obs-agent/obs-agent/internal/record"
)

// FuncStats is the merged aggregate of one function over a time range.
type FuncStats struct {
	Function record.Function
	record.FuncStats
}

// sumStats merges the rows of a stats table matching where (conditions on
// its columns, "" for all) per (pid, function), in SQL: SQLite sums the
// counters and obs_hist_sum the histograms, so Go reads one row per
// process and function instead of one per interval. A rollup table, which
// has one row per process and function already, is read as it is. It
// returns the merged rows and their function ids.
func sumStats(ctx context.Context, db querier, table, where string, args []any) ([]record.FuncStats, []int64, error) {
	rows, fids, _, err := sumStatsBy(ctx, db, table, where, args, false)
	return rows, fids, err
}

// sumStatsBy is sumStats, per 10-minute bucket of interval start as well
// when bucketed (it then also returns each row's bucket).
func sumStatsBy(ctx context.Context, db querier, table, where string, args []any, bucketed bool) ([]record.FuncStats, []int64, []int64, error) {
	bucket := "0"
	if bucketed {
		bucket = "interval_start_ns - interval_start_ns % " + strconv.FormatInt(rollupWidth, 10)
	}
	q := `SELECT pid, func_id, min(interval_start_ns), max(interval_end_ns), sum(calls), sum(errors), sum(panics),
		sum(recorded), sum(sampled), sum(dropped), sum(total_ns), max(max_ns), obs_hist_sum(hist), ` + bucket + ` FROM ` + table
	rollup := strings.HasSuffix(table, "__"+sideRollup)
	if rollup {
		q = `SELECT pid, func_id, ` + statsCols + `, 0 FROM ` + table
	}
	if where != "" {
		q += ` WHERE ` + where
	}
	if !rollup {
		q += ` GROUP BY pid, func_id`
		if bucketed {
			q += `, 14`
		}
	}
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, nil, nil, err
	}
	defer rows.Close()
	var out []record.FuncStats
	var fids, buckets []int64
	for rows.Next() {
		var pid, fid, calls, errs, panics, rec, samp, drop, tot, mx, b int64
		var st record.FuncStats
		var hist []byte
		if err := rows.Scan(&pid, &fid, &st.IntervalStart, &st.IntervalEnd, &calls, &errs, &panics, &rec, &samp, &drop, &tot, &mx, &hist, &b); err != nil {
			return nil, nil, nil, err
		}
		st.PID = uint32(pid)
		st.Calls, st.Errors, st.Panics, st.Recorded = uint64(calls), uint64(errs), uint64(panics), uint64(rec)
		st.Sampled, st.Dropped, st.TotalNs, st.MaxNs = uint64(samp), uint64(drop), uint64(tot), uint64(mx)
		if err := decodeHist(hist, &st.Hist); err != nil {
			return nil, nil, nil, err
		}
		out = append(out, st)
		fids = append(fids, fid)
		if bucketed {
			buckets = append(buckets, b)
		}
	}
	return out, fids, buckets, rows.Err()
}

// hourStats sums one stats partition's rows matching where per (pid,
// function). When the range covers every row of the hour (it starts at or
// before the hour, and the hour ends, or its rows so far end, by its end)
// and the hour has a rollup, it reads the rollup, plus the rows appended
// since the rollup's cursor while the hour is still being rolled up.
func (r *rtx) hourStats(p partRef, lo, hi int64, where string, args []any) ([]record.FuncStats, []int64, error) {
	ok, cursor, err := r.covered(p.name, sideRollup)
	if err != nil || !ok || lo > p.start {
		if err != nil {
			return nil, nil, err
		}
		return r.partHourStats(p, lo, hi, where, args)
	}
	roll := sideName(p.name, sideRollup)
	if p.end > hi {
		var maxEnd sql.NullInt64
		if err := r.tx.QueryRowContext(r.ctx, `SELECT max(interval_end_ns) FROM `+roll).Scan(&maxEnd); err != nil {
			return nil, nil, err
		}
		if maxEnd.Int64 > hi {
			return r.partHourStats(p, lo, hi, where, args)
		}
	}
	rows, fids, err := sumStats(r.ctx, r.tx, roll, where, args)
	if err != nil || cursor == math.MaxInt64 {
		return rows, fids, err
	}
	// NOT INDEXED: the rows after the cursor are a rowid range; the
	// (pid, func_id, ...) index would have SQLite walk the whole hour.
	tail, tfids, err := sumStats(r.ctx, r.tx, p.name+" NOT INDEXED", where+" AND rowid >= ?", append(slices.Clip(args), cursor))
	return append(rows, tail...), append(fids, tfids...), err
}

// partHourStats sums the rows of a stats partition for a range that covers
// only part of the hour: the 10-minute buckets inside [lo, hi) from its
// 10-minute rollup when it has one, and from the partition itself only the
// rows outside those buckets (at most 10 minutes at each end) and those the
// rollup does not hold yet (from its builder's cursor on).
func (r *rtx) partHourStats(p partRef, lo, hi int64, where string, args []any) ([]record.FuncStats, []int64, error) {
	ok, cursor, err := r.covered(p.name, sideRollup10)
	from := lo + (rollupWidth-lo%rollupWidth)%rollupWidth // first bucket inside the range
	to := hi - hi%rollupWidth                             // end of the last one
	if err != nil || !ok || from >= to {
		if err != nil {
			return nil, nil, err
		}
		return sumStats(r.ctx, r.tx, p.name, where, args)
	}
	// The rollup's rows carry the first and last interval of their
	// bucket, inside it, so the range's conditions hold for them too.
	rows, fids, err := sumStats(r.ctx, r.tx, sideName(p.name, sideRollup10), where+" AND bucket_ns >= ? AND bucket_ns < ?", append(slices.Clip(args), from, to))
	if err != nil {
		return nil, nil, err
	}
	// The intervals at each end, through the partition's start index
	// when it has one (partitions from before it was added scan), and
	// those in the buckets that the rollup does not hold yet.
	var indexed int
	if err := r.tx.QueryRowContext(r.ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?`, p.name+"__start").Scan(&indexed); err != nil {
		return nil, nil, err
	}
	src := p.name
	if indexed > 0 {
		src += " INDEXED BY " + p.name + "__start"
	}
	parts := []struct {
		table, cond string
		arg         int64
	}{{src, "interval_start_ns < ?", from}, {src, "interval_start_ns >= ?", to}}
	if cursor != math.MaxInt64 {
		parts = append(parts, struct {
			table, cond string
			arg         int64
		}{p.name + " NOT INDEXED", "interval_start_ns >= " + strconv.FormatInt(from, 10) + " AND interval_start_ns < " + strconv.FormatInt(to, 10) + " AND rowid >= ?", cursor})
	}
	for _, pt := range parts {
		tail, tfids, err := sumStats(r.ctx, r.tx, pt.table, where+" AND "+pt.cond, append(slices.Clip(args), pt.arg))
		if err != nil {
			return nil, nil, err
		}
		rows, fids = append(rows, tail...), append(fids, tfids...)
	}
	return rows, fids, nil
}

// statsWhere is the condition on a stats partition's rows for f over
// [lo, hi) on interval starts, with its arguments; ok is false when f.Func
// matches no function (no row can match).
func (r *rtx) statsWhere(f *Filter, lo, hi int64) (where string, args []any, ok bool, err error) {
	conds := []string{"interval_start_ns >= ?", "interval_start_ns < ?"}
	args = []any{lo, hi}
	if f.PID != 0 {
		conds = append(conds, "pid = ?")
		args = append(args, int64(f.PID))
	}
	fc, ok, err := r.funcCond("func_id", f.Func)
	if err != nil || !ok {
		return "", nil, ok, err
	}
	if fc != "" {
		conds = append(conds, fc)
	}
	return strings.Join(conds, " AND "), args, true, nil
}

// querier is a connection or transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// histSum is the obs_hist_sum(hist) aggregate: the bucket-wise sum of
// encoded histograms (encodeHist), encoded.
type histSum struct {
	h   [record.HistBuckets]uint64
	err error
}

func (a *histSum) Step(_ *sqlite.FunctionContext, args []driver.Value) error {
	b, _ := args[0].([]byte) // NULL: an empty histogram
	if err := decodeHist(b, &a.h); err != nil {
		a.err = err
	}
	return nil
}

func (a *histSum) WindowInverse(*sqlite.FunctionContext, []driver.Value) error {
	return errors.New("obs_hist_sum: not a window function")
}

func (a *histSum) WindowValue(*sqlite.FunctionContext) (driver.Value, error) {
	if a.err != nil {
		return nil, a.err
	}
	return encodeHist(&a.h), nil
}

func (a *histSum) Final(*sqlite.FunctionContext) {}

func init() {
	if err := sqlite.RegisterFunction("obs_hist_sum", &sqlite.FunctionImpl{
		NArgs:         1,
		Deterministic: true,
		VolatileArgs:  true, // Step decodes and drops the blob
		MakeAggregate: func(sqlite.FunctionContext) (sqlite.AggregateFunction, error) { return &histSum{}, nil },
	}); err != nil {
		panic("store: register obs_hist_sum: " + err.Error())
	}
}

// Stats merges, per function, the aggregates (the stats partitions, not
// the calls) whose interval starts in [f.Since, f.Until) and that match
// f.PID, f.Func and f.Binary. Hours the range covers whole are read from
// their rollup when it is built (one row per process and function instead
// of one per interval), except with f.Binary. Functions come in the order
// of their first row; f.Status, f.MinDuration and f.Limit don't apply.
func (s *Store) Stats(ctx context.Context, f Filter) ([]FuncStats, error) {
	lo, hi := f.Bounds()
	var out []FuncStats
	err := s.read(ctx, "query stats", func(r *rtx) error {
		parts, err := r.parts(KindStats, lo, hi)
		if err != nil {
			return err
		}
		where, args, ok, err := r.statsWhere(&f, lo, hi)
		if err != nil || !ok {
			return err
		}
		idx := map[int64]int{}
		for _, p := range parts {
			var rows []record.FuncStats
			var fids []int64
			if f.Binary != nil {
				// The intervals themselves, not the rollups: a rollup
				// row merges a pid's intervals over its bucket, which
				// could join two processes that had the same pid.
				bc, bargs := f.Binary.cond(p.name, "interval_start_ns", "interval_end_ns")
				rows, fids, err = sumStats(r.ctx, r.tx, p.name, where+" AND "+bc, append(slices.Clip(args), bargs...))
			} else {
				rows, fids, err = r.hourStats(p, lo, hi, where, args)
			}
			if err != nil {
				return err
			}
			for i := range rows {
				j, ok := idx[fids[i]]
				if !ok {
					fi, err := r.fn(fids[i])
					if err != nil {
						return err
					}
					j = len(out)
					idx[fids[i]] = j
					out = append(out, FuncStats{Function: record.Function{Name: fi.name, Package: fi.pkg, Module: fi.module}, FuncStats: rows[i]})
					out[j].PID = 0
					continue
				}
				out[j].Add(&rows[i])
			}
		}
		slices.SortStableFunc(out, func(a, b FuncStats) int { return strings.Compare(a.Function.Name, b.Function.Name) })
		return nil
	})
	return out, err
}
