package store

import (
	"context"
	"fmt"
)

// migrationProcesses (schema 6 -> 7) adds the processes table: one row per
// process a session traced. A session of `attach --pid` or `run` has one;
// a session of `attach --exe` has one per process of the binary that ran
// while it lasted, so that `query processes` can say which pid ran when,
// and why it ended, across restarts of the traced program. Calls, stats
// and samples carry the host pid already; this table is what gives a pid
// its binary, build id and lifetime.
var migrationProcesses = []string{
	`CREATE TABLE processes (
		session INTEGER NOT NULL,
		pid INTEGER NOT NULL,
		ns_pid INTEGER NOT NULL DEFAULT 0,
		binary TEXT NOT NULL DEFAULT '',
		build_id TEXT NOT NULL DEFAULT '',
		start_ns INTEGER NOT NULL,
		end_ns INTEGER NOT NULL DEFAULT 0,
		exit_reason TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (session, pid, start_ns)
	) WITHOUT ROWID`,
	`CREATE INDEX processes_by_pid ON processes (pid, start_ns)`,
}

// Process is one traced process.
type Process struct {
	Session uint64
	PID     uint32 // in the agent's (the host's) pid namespace
	// NSPID is the pid inside the process's own pid namespace when that
	// differs from PID (a container), else 0.
	NSPID   uint32
	Binary  string
	BuildID string
	Start   int64 // Unix ns: the process's start, or when it was first seen
	End     int64 // Unix ns; 0 while it runs
	// ExitReason says how its tracing ended: "exited", "session ended"
	// (it still ran when the session stopped).
	ExitReason string
}

// BeginProcess stores a traced process. Storing the same (session, pid,
// start) again changes nothing.
func (s *Store) BeginProcess(p Process) error {
	return s.write("begin process", func(tx *wtx) error {
		_, err := tx.exec(`INSERT OR IGNORE INTO processes (session, pid, ns_pid, binary, build_id, start_ns, end_ns, exit_reason)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			int64(p.Session), int64(p.PID), int64(p.NSPID), p.Binary, p.BuildID, p.Start, p.End, p.ExitReason)
		return err
	})
}

// EndProcess records the end of a process stored by BeginProcess. A row
// that has an end already keeps it.
func (s *Store) EndProcess(p Process) error {
	return s.write("end process", func(tx *wtx) error {
		_, err := tx.exec(`UPDATE processes SET end_ns = ?, exit_reason = ? WHERE session = ? AND pid = ? AND start_ns = ? AND end_ns = 0`,
			p.End, p.ExitReason, int64(p.Session), int64(p.PID), p.Start)
		return err
	})
}

// EndProcesses closes every process of session still open, as the session
// ends (or as the next run closes a killed agent's session).
func (s *Store) EndProcesses(session uint64, end int64, reason string) error {
	return s.write("end processes", func(tx *wtx) error {
		_, err := tx.exec(`UPDATE processes SET end_ns = ?, exit_reason = ? WHERE session = ? AND end_ns = 0`,
			end, reason, int64(session))
		return err
	})
}

// Processes returns the traced processes, oldest first; pid 0 means all
// of them. A store older than schema 7 has none.
func (s *Store) Processes(ctx context.Context, pid uint32) ([]Process, error) {
	var out []Process
	err := s.read(ctx, "query processes", func(r *rtx) error {
		if ok, err := r.hasTable("processes"); !ok || err != nil {
			return err
		}
		q := `SELECT session, pid, ns_pid, binary, build_id, start_ns, end_ns, exit_reason FROM processes`
		var args []any
		if pid != 0 {
			q += ` WHERE pid = ?`
			args = append(args, int64(pid))
		}
		rows, err := r.tx.QueryContext(r.ctx, q+` ORDER BY start_ns, session, pid`, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var p Process
			var sess, ppid, nspid int64
			if err := rows.Scan(&sess, &ppid, &nspid, &p.Binary, &p.BuildID, &p.Start, &p.End, &p.ExitReason); err != nil {
				return fmt.Errorf("read process: %w", err)
			}
			p.Session, p.PID, p.NSPID = uint64(sess), uint32(ppid), uint32(nspid)
			out = append(out, p)
		}
		return rows.Err()
	})
	return out, err
}
