package agent

import (
	"time"
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
