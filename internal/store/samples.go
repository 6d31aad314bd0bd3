package store

import (
	"context"
	"database/sql"
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
				for rows.Next() {
					var rs record.ResourceSample
					var pid int64
					var cpu sql.NullFloat64
					var rss, vms, thr, fds, rd, wr, vol, inv, gor sql.NullInt64
					if err := rows.Scan(&pid, &rs.Time, &cpu, &rss, &vms, &thr, &fds, &rd, &wr, &vol, &inv, &gor); err != nil {
						return err
					}
					rs.PID = uint32(pid)
					if cpu.Valid {
						rs.CPUPercent = &cpu.Float64
					}
					rs.RSSBytes, rs.VMSBytes = u64p(rss), u64p(vms)
					rs.Threads, rs.OpenFDs, rs.Goroutines = i64p(thr), i64p(fds), i64p(gor)
					rs.ReadBytes, rs.WriteBytes = u64p(rd), u64p(wr)
					rs.VolCtxSwitches, rs.InvCtxSwitches = u64p(vol), u64p(inv)
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

func u64p(v sql.NullInt64) *uint64 {
	if !v.Valid {
		return nil
	}
	u := uint64(v.Int64)
	return &u
}

func i64p(v sql.NullInt64) *int64 {
	if !v.Valid {
		return nil
	}
	i := v.Int64
	return &i
}
