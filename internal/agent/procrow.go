package agent

import (
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// beginProcessRow stores the process row of a session that traces one
// process (attach --pid, run); a file target's follower stores its own.
func (s *session) beginProcessRow() {
	if s.follow != nil || s.pid <= 0 {
		return
	}
	s.procRow = s.newProcessRow()
	if err := s.st.BeginProcess(s.procRow); err != nil {
		s.log.Warn("store process", "pid", s.pid, "err", err)
	}
}

// endProcessRows stores the end of the session's processes: the one
// process's, with the session's exit reason, or, for a file target, of any
// the follower left open.
func (s *session) endProcessRows() {
	now := time.Now().UnixNano()
	if s.follow == nil && s.pid > 0 {
		s.procRow.End, s.procRow.ExitReason = now, s.result.ExitReason
		if err := s.st.EndProcess(s.procRow); err != nil {
			s.log.Warn("store process end", "pid", s.pid, "err", err)
		}
		return
	}
	if err := s.st.EndProcesses(s.sess.ID, now, "running when the session ended"); err != nil {
		s.log.Warn("store process ends", "err", err)
	}
}

// functionTotals is snapshot with one row per function, in function id
// order, as /metrics reads it: a file target's snapshot has a row per
// (process, function), merged here.
func (s *session) functionTotals() ([]record.FuncStats, error) {
	rows, err := s.snapshot()
	if err != nil || s.follow == nil {
		return rows, err
	}
	names := s.fnames()
	ids := make(map[string]int, len(names))
	out := make([]record.FuncStats, len(names))
	for i, n := range names {
		ids[n] = i
		out[i].Function = n
	}
	for _, r := range rows {
		i, ok := ids[r.Function]
		if !ok {
			continue
		}
		out[i].Add(&r)
	}
	return out, nil
}
