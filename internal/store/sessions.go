package store

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// migrationSessionRetention (schema 7 -> 8) keeps the retention window
// (--retention, in ns) and archive directory (--archive) each session's
// agent runs with, so that a reader (the UI's Store page, `retention
// status`) can say what window the store is kept to, not only which hours
// it holds. Rows from before keep 0 and an empty string: unknown.
var migrationSessionRetention = []string{
	`ALTER TABLE sessions ADD COLUMN retention_ns INTEGER NOT NULL DEFAULT 0`,
	`ALTER TABLE sessions ADD COLUMN archive_dir TEXT NOT NULL DEFAULT ''`,
}

// lostJSON encodes the per-function errors lost as a JSON object, "" when
// none were lost.
func lostJSON(m map[string]uint64) string {
	if len(m) == 0 {
		return ""
	}
	b, err := json.Marshal(m) // a map of strings to numbers always encodes
	if err != nil {
		panic(err)
	}
	return string(b)
}

func parseLost(s string) (map[string]uint64, error) {
	if s == "" {
		return nil, nil
	}
	var m map[string]uint64
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, err
	}
	return m, nil
}

// OpenSessions returns the sessions that have no end yet: running, or
// left behind by an agent that died without closing its row.
func (s *Store) OpenSessions(ctx context.Context) ([]record.Session, error) {
	all, err := s.Sessions(ctx)
	if err != nil {
		return nil, err
	}
	var open []record.Session
	for _, ss := range all {
		if ss.End == 0 {
			open = append(open, ss)
		}
	}
	return open, nil
}

// CloseSession ends an open session on behalf of an agent that is gone:
// End is the last time anything of the session was stored (a call's end,
// an aggregate interval, a resource sample or a gap), or its start when
// nothing was. Only a row that is still open is changed, so a late
// EndSession of a live owner is never overwritten, and vice versa it
// overwrites this. It returns the end it set, or 0 when the row was no
// longer open.
func (s *Store) CloseSession(id uint64, reason string) (int64, error) {
	var end int64
	err := s.write("close session", func(tx *wtx) error {
		var pid, start, endNow int64
		row := s.wc.QueryRowContext(tx.ctx, `SELECT pid, start_ns, end_ns FROM sessions WHERE id = ?`, int64(id))
		if err := row.Scan(&pid, &start, &endNow); err != nil {
			return fmt.Errorf("session %d: %w", id, err)
		}
		if endNow != 0 {
			return nil
		}
		last, err := tx.lastActivity(id, pid, start)
		if err != nil {
			return err
		}
		end = max(last, start)
		_, err = tx.exec(`UPDATE sessions SET end_ns = ?, exit_reason = ? WHERE id = ? AND end_ns = 0`, end, reason, int64(id))
		return err
	})
	return end, err
}

// lastActivity is the latest time stored for session id: calls are found
// by id (a session's ids are id<<40 | seq), aggregates, samples and gaps
// by the traced pid, from the session's start until a later session on
// the same pid began.
func (tx *wtx) lastActivity(id uint64, pid, start int64) (int64, error) {
	ctx := tx.ctx
	c := tx.s.wc
	until := int64(math.MaxInt64)
	var next *int64
	if err := c.QueryRowContext(ctx, `SELECT min(start_ns) FROM sessions WHERE pid = ? AND id > ?`, pid, int64(id)).Scan(&next); err != nil {
		return 0, err
	}
	if next != nil {
		until = *next
	}
	rows, err := c.QueryContext(ctx, `SELECT name, kind FROM partitions WHERE end_ns > ? AND start_ns <= ?`, start, until)
	if err != nil {
		return 0, err
	}
	type part struct{ name, kind string }
	var parts []part
	for rows.Next() {
		var p part
		if err := rows.Scan(&p.name, &p.kind); err != nil {
			rows.Close()
			return 0, err
		}
		parts = append(parts, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	var last int64
	for _, p := range parts {
		var q string
		var args []any
		switch p.kind {
		case KindCalls:
			// Calls are the session's by id; the rowid range is a b-tree seek.
			q = `SELECT max(start_ns + duration_ns) FROM ` + p.name + ` WHERE id >= ? AND id < ?`
			args = []any{int64(id << 40), int64((id + 1) << 40)}
		case KindStats:
			q = `SELECT max(interval_end_ns) FROM ` + p.name + ` WHERE pid = ? AND interval_end_ns >= ? AND interval_end_ns <= ?`
			args = []any{pid, start, until}
		case KindSamples:
			q = `SELECT max(time_ns) FROM ` + p.name + ` WHERE pid = ? AND time_ns >= ? AND time_ns <= ?`
			args = []any{pid, start, until}
		case KindGaps:
			q = `SELECT max(max(start_ns, end_ns)) FROM ` + p.name + ` WHERE pid = ? AND start_ns >= ? AND start_ns <= ?`
			args = []any{pid, start, until}
		default:
			continue
		}
		var v *int64
		if err := c.QueryRowContext(ctx, q, args...).Scan(&v); err != nil {
			return 0, fmt.Errorf("last activity in %s: %w", p.name, err)
		}
		if v != nil {
			last = max(last, *v)
		}
	}
	return last, nil
}

// ApplySessionEnd stores a session end that its agent could not write
// (the store was failing when it ended, so it was kept in a file beside
// the spill journal). Like CloseSession it only changes a row that is
// still open; it reports whether it did.
func (s *Store) ApplySessionEnd(sess record.Session) (bool, error) {
	var done bool
	err := s.write("apply session end", func(tx *wtx) error {
		res, err := tx.exec(`UPDATE sessions SET end_ns = ?, calls_recorded = ?, calls_lost = ?, exit_reason = ?,
			errors_lost = ?, errors_lost_by_function = ? WHERE id = ? AND end_ns = 0`,
			sess.End, int64(sess.CallsRecorded), int64(sess.CallsLost), sess.ExitReason,
			int64(sess.ErrorsLostTotal()), lostJSON(sess.ErrorsLost), int64(sess.ID))
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		done = n > 0
		return nil
	})
	return done, err
}

// Sessions returns every session, oldest first.
func (s *Store) Sessions(ctx context.Context) ([]record.Session, error) {
	var out []record.Session
	err := s.read(ctx, "query sessions", func(r *rtx) error {
		// A reader opens an older store as it is (no migration): a
		// schema-2 sessions table has no owner columns yet.
		var owner int
		if err := r.tx.QueryRowContext(r.ctx, `SELECT count(*) FROM pragma_table_info('sessions') WHERE name = 'agent_pid'`).Scan(&owner); err != nil {
			return err
		}
		cols := `agent_pid, agent_start, boot_id, errors_lost_by_function`
		if owner == 0 {
			cols = `0, 0, '', ''`
		}
		// Nor does one older than schema 8 know the retention settings.
		var kept int
		if err := r.tx.QueryRowContext(r.ctx, `SELECT count(*) FROM pragma_table_info('sessions') WHERE name = 'retention_ns'`).Scan(&kept); err != nil {
			return err
		}
		if kept == 0 {
			cols += `, 0, ''`
		} else {
			cols += `, retention_ns, archive_dir`
		}
		rows, err := r.tx.QueryContext(r.ctx, `SELECT id, pid, binary, go_version, patterns, start_ns, end_ns, calls_recorded, calls_lost, exit_reason,
			`+cols+` FROM sessions ORDER BY id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var ss record.Session
			var id, pid, rec, lost, apid, astart, retention int64
			var errsLost string
			if err := rows.Scan(&id, &pid, &ss.Binary, &ss.GoVersion, &ss.Patterns, &ss.Start, &ss.End, &rec, &lost, &ss.ExitReason,
				&apid, &astart, &ss.BootID, &errsLost, &retention, &ss.ArchiveDir); err != nil {
				return err
			}
			ss.ID, ss.PID, ss.CallsRecorded, ss.CallsLost = uint64(id), uint32(pid), uint64(rec), uint64(lost)
			ss.AgentPID, ss.AgentStart, ss.Retention = uint32(apid), uint64(astart), time.Duration(retention)
			if ss.ErrorsLost, err = parseLost(errsLost); err != nil {
				return fmt.Errorf("session %d: errors_lost_by_function: %w", id, err)
			}
			out = append(out, ss)
		}
		return rows.Err()
	})
	return out, err
}
