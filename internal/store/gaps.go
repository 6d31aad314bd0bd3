package store

import (
	"context"
	"math"
	"slices"
	"strings"

	"github.com/obs-agent/obs-agent/internal/record"
)

type gapRow struct {
	record.Gap
	funcID int64
}

// gaps returns the gaps overlapping [lo, hi). A gap lives in the partition
// of its start, which may be older than lo, so every partition starting
// before hi is read (gap tables are tiny).
func (r *rtx) gaps(f *Filter, lo, hi int64) ([]gapRow, error) {
	parts, err := r.parts(KindGaps, math.MinInt64, hi)
	if err != nil {
		return nil, err
	}
	conds := []string{"start_ns < ?", "(end_ns = 0 OR end_ns > ?)"}
	args := []any{hi, lo}
	if f.PID != 0 {
		conds = append(conds, "pid = ?")
		args = append(args, int64(f.PID))
	}
	fc, ok, err := r.funcCond("func_id", f.Func)
	if err != nil || !ok {
		return nil, err
	}
	if fc != "" {
		conds = append(conds, fc)
	}
	var out []gapRow
	for _, p := range parts {
		where, wargs := strings.Join(conds, " AND "), args
		if f.Binary != nil {
			// A gap is the process's that ran when it began.
			bc, bargs := f.Binary.cond(p.name, "start_ns", "start_ns")
			where, wargs = where+" AND "+bc, append(slices.Clip(args), bargs...)
		}
		rows, err := r.tx.QueryContext(r.ctx, `SELECT pid, func_id, start_ns, end_ns, reason FROM `+p.name+
			` WHERE `+where+` ORDER BY start_ns`, wargs...)
		if err != nil {
			return nil, err
		}
		err = func() error {
			defer rows.Close()
			for rows.Next() {
				var g gapRow
				var pid int64
				if err := rows.Scan(&pid, &g.funcID, &g.Start, &g.End, &g.Reason); err != nil {
					return err
				}
				g.PID = uint32(pid)
				fi, err := r.fn(g.funcID)
				if err != nil {
					return err
				}
				g.Function = fi.name
				out = append(out, g)
			}
			return rows.Err()
		}()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Gaps returns the probe gaps overlapping [f.Since, f.Until), oldest first.
// End is 0 for a gap still open.
func (s *Store) Gaps(ctx context.Context, f Filter) ([]record.Gap, error) {
	var out []record.Gap
	err := s.read(ctx, "query gaps", func(r *rtx) error {
		lo, hi := f.Bounds()
		gs, err := r.gaps(&f, lo, hi)
		for _, g := range gs {
			if f.Limit > 0 && len(out) >= f.Limit {
				break
			}
			out = append(out, g.Gap)
		}
		return err
	})
	return out, err
}
