package store

import (
	"context"
	"errors"
	"slices"

	"github.com/obs-agent/obs-agent/internal/record"
)

// StatsSeries merges the aggregates matching f (f.PID, f.Func, f.Binary) whose
// interval starts in [f.Since, f.Until) into buckets of step ns from
// f.Since: out[i] holds the intervals starting in [since+i*step,
// since+(i+1)*step), and its IntervalStart and IntervalEnd span those
// intervals (the calls they counted may have started up to an interval
// after the bucket ends); zero when the bucket is empty. It reads every
// partition in one transaction, one grouped statement per hour, so a chart
// of one function costs a few hundred rows rather than a Stats call per
// bucket. Both bounds must be set; rollups are not used (a bucket is
// usually shorter than an hour).
func (s *Store) StatsSeries(ctx context.Context, f Filter, step int64) ([]record.FuncStats, error) {
	if f.Since.IsZero() || f.Until.IsZero() || step <= 0 {
		return nil, errors.New("store: stats series needs since, until and a positive step")
	}
	lo, hi := f.Bounds()
	n := (hi - lo + step - 1) / step
	out := make([]record.FuncStats, n)
	err := s.read(ctx, "query stats series", func(r *rtx) error {
		parts, err := r.parts(KindStats, lo, hi)
		if err != nil {
			return err
		}
		where, args, ok, err := r.statsWhere(&f, lo, hi)
		if err != nil || !ok {
			return err
		}
		for _, p := range parts {
			w, a := where, args
			if f.Binary != nil {
				// Each interval counts for the process that held its
				// pid then, as in Stats.
				bc, bargs := f.Binary.cond(p.name, "interval_start_ns", "interval_end_ns")
				w, a = where+" AND "+bc, append(slices.Clip(args), bargs...)
			}
			rows, err := r.tx.QueryContext(r.ctx, `SELECT (interval_start_ns - ?) / ?, min(interval_start_ns), max(interval_end_ns), sum(calls), sum(errors), sum(panics),
				sum(recorded), sum(sampled), sum(dropped), sum(total_ns), max(max_ns), obs_hist_sum(hist) FROM `+p.name+
				` WHERE `+w+` GROUP BY 1`, append([]any{lo, step}, a...)...)
			if err != nil {
				return err
			}
			for rows.Next() {
				var b, st0, st1, calls, errs, panics, rec, samp, drop, tot, mx int64
				var hist []byte
				if err := rows.Scan(&b, &st0, &st1, &calls, &errs, &panics, &rec, &samp, &drop, &tot, &mx, &hist); err != nil {
					rows.Close()
					return err
				}
				st := record.FuncStats{IntervalStart: st0, IntervalEnd: st1, Calls: uint64(calls), Errors: uint64(errs), Panics: uint64(panics), Recorded: uint64(rec),
					Sampled: uint64(samp), Dropped: uint64(drop), TotalNs: uint64(tot), MaxNs: uint64(mx)}
				if err := decodeHist(hist, &st.Hist); err != nil {
					rows.Close()
					return err
				}
				if b >= 0 && b < n {
					out[b].Add(&st)
				}
			}
			if err := rows.Close(); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}
