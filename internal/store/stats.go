package store

import (
	"context"
	"slices"
	"strings"

	"github.com/obs-agent/obs-agent/internal/record"
)

// FuncStats is the merged aggregate of one function over a time range.
type FuncStats struct {
	Function record.Function
	record.FuncStats
}

// sumStats merges the rows of a stats (or rollup) table matching where
// (conditions on its columns, "" for all) per (pid, function). It returns
// the merged rows and their function ids, in first-seen order.
func (r *rtx) sumStats(table, where string, args []any) ([]record.FuncStats, []int64, error) {
	q := `SELECT pid, func_id, ` + statsCols + ` FROM ` + table
	if where != "" {
		q += ` WHERE ` + where
	}
	rows, err := r.tx.QueryContext(r.ctx, q, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	type key struct{ pid, fid int64 }
	idx := map[key]int{}
	var out []record.FuncStats
	var fids []int64
	for rows.Next() {
		var pid, fid, calls, errs, panics, rec, samp, drop, tot, mx int64
		var st record.FuncStats
		var hist []byte
		if err := rows.Scan(&pid, &fid, &st.IntervalStart, &st.IntervalEnd, &calls, &errs, &panics, &rec, &samp, &drop, &tot, &mx, &hist); err != nil {
			return nil, nil, err
		}
		st.PID = uint32(pid)
		st.Calls, st.Errors, st.Panics, st.Recorded = uint64(calls), uint64(errs), uint64(panics), uint64(rec)
		st.Sampled, st.Dropped, st.TotalNs, st.MaxNs = uint64(samp), uint64(drop), uint64(tot), uint64(mx)
		if err := decodeHist(hist, &st.Hist); err != nil {
			return nil, nil, err
		}
		k := key{pid, fid}
		i, ok := idx[k]
		if !ok {
			idx[k] = len(out)
			out = append(out, st)
			fids = append(fids, fid)
			continue
		}
		out[i].Add(&st)
	}
	return out, fids, rows.Err()
}

// Stats merges, per function, the aggregates (the stats partitions, not
// the calls) whose interval starts in [f.Since, f.Until) and that match
// f.PID and f.Func. Hours the range covers whole are read from their
// rollup when it is built (one row per process and function instead of one
// per interval). Functions come in the order of their first row;
// f.Status, f.MinDuration and f.Limit don't apply.
func (s *Store) Stats(ctx context.Context, f Filter) ([]FuncStats, error) {
	lo, hi := f.Bounds()
	var out []FuncStats
	err := s.read(ctx, "query stats", func(r *rtx) error {
		parts, err := r.parts(KindStats, lo, hi)
		if err != nil {
			return err
		}
		conds := []string{"interval_start_ns >= ?", "interval_start_ns < ?"}
		args := []any{lo, hi}
		if f.PID != 0 {
			conds = append(conds, "pid = ?")
			args = append(args, int64(f.PID))
		}
		fc, ok, err := r.funcCond("func_id", f.Func)
		if err != nil || !ok {
			return err
		}
		if fc != "" {
			conds = append(conds, fc)
		}
		where := strings.Join(conds, " AND ")
		idx := map[int64]int{}
		for _, p := range parts {
			table := p.name
			if lo <= p.start && p.end <= hi {
				if ok, err := r.complete(p.name, sideRollup); err != nil {
					return err
				} else if ok {
					table = sideName(p.name, sideRollup)
				}
			}
			rows, fids, err := r.sumStats(table, where, args)
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
