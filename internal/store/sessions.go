package store

import (
	"context"

	"github.com/obs-agent/obs-agent/internal/record"
)

// Sessions returns every session, oldest first.
func (s *Store) Sessions(ctx context.Context) ([]record.Session, error) {
	var out []record.Session
	err := s.read(ctx, "query sessions", func(r *rtx) error {
		rows, err := r.tx.QueryContext(r.ctx, `SELECT id, pid, binary, go_version, patterns, start_ns, end_ns, calls_recorded, calls_lost, exit_reason FROM sessions ORDER BY id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var ss record.Session
			var id, pid, rec, lost int64
			if err := rows.Scan(&id, &pid, &ss.Binary, &ss.GoVersion, &ss.Patterns, &ss.Start, &ss.End, &rec, &lost, &ss.ExitReason); err != nil {
				return err
			}
			ss.ID, ss.PID, ss.CallsRecorded, ss.CallsLost = uint64(id), uint32(pid), uint64(rec), uint64(lost)
			out = append(out, ss)
		}
		return rows.Err()
	})
	return out, err
}
