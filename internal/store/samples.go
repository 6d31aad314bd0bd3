package store

import (
	"context"
	"slices"

	"github.com/obs-agent/obs-agent/internal/record"
)

// Samples returns the resource samples with Time in [f.Since, f.Until),
// oldest first. Only PID and Limit of the other filter fields apply.
func (s *Store) Samples(ctx context.Context, f Filter) ([]record.ResourceSample, error) {
	var out []record.ResourceSample
	err := s.read(ctx, "query samples", func(r *rtx) error {
		lo, hi := f.Bounds()
		parts, err := r.parts(KindSamples, lo, hi)
		if err != nil {
			return err
		}
		conds := "time_ns >= ? AND time_ns < ?"
		args := []any{lo, hi}
		if f.PID != 0 {
			conds += " AND pid = ?"
			args = append(args, int64(f.PID))
		}
		for _, p := range parts {
			q := `SELECT pid, time_ns, cpu_percent, rss_bytes, vms_bytes, threads, open_fds, read_bytes, write_bytes,
				vol_ctx_switches, inv_ctx_switches, goroutines FROM ` + p.name + ` WHERE ` + conds + ` ORDER BY time_ns`
			a := args
			if f.Limit > 0 {
				q += " LIMIT ?"
				a = append(slices.Clip(args), f.Limit-len(out))
			}
			rows, err := r.tx.QueryContext(r.ctx, q, a...)
			if err != nil {
				return err
			}
			err = func() error {
				defer rows.Close()
				v := make([]any, 12)
				vp := make([]any, len(v))
				for i := range v {
					vp[i] = &v[i]
				}
				for rows.Next() {
					// Scanned into plain values: database/sql's Null*
					// conversions cost a third of this loop.
					if err := rows.Scan(vp...); err != nil {
						return err
					}
					rs := record.ResourceSample{PID: uint32(asInt(v[0])), Time: asInt(v[1])}
					if f, ok := v[2].(float64); ok {
						rs.CPUPercent = &f
					} else if i, ok := v[2].(int64); ok {
						f := float64(i)
						rs.CPUPercent = &f
					}
					rs.RSSBytes, rs.VMSBytes = u64p(v[3]), u64p(v[4])
					rs.Threads, rs.OpenFDs, rs.Goroutines = i64p(v[5]), i64p(v[6]), i64p(v[11])
					rs.ReadBytes, rs.WriteBytes = u64p(v[7]), u64p(v[8])
					rs.VolCtxSwitches, rs.InvCtxSwitches = u64p(v[9]), u64p(v[10])
					out = append(out, rs)
				}
				return rows.Err()
			}()
			if err != nil {
				return err
			}
			if f.Limit > 0 && len(out) >= f.Limit {
				break
			}
		}
		return nil
	})
	return out, err
}

// asInt is an INTEGER column scanned into an any (0 for NULL).
func asInt(v any) int64 {
	i, _ := v.(int64)
	return i
}

// u64p is a nullable INTEGER column scanned into an any, as *uint64.
func u64p(v any) *uint64 {
	i, ok := v.(int64)
	if !ok {
		return nil
	}
	u := uint64(i)
	return &u
}

// i64p is a nullable INTEGER column scanned into an any, as *int64.
func i64p(v any) *int64 {
	i, ok := v.(int64)
	if !ok {
		return nil
	}
	return &i
}
