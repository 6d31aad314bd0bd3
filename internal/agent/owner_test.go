package agent

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
)

// TestOwnerAlive: a row's owner is alive only when a process with its pid
// and start time runs in this boot.
func TestOwnerAlive(t *testing.T) {
	self, err := selfIdentity()
	if err != nil {
		t.Fatal(err)
	}
	row := record.Session{AgentPID: self.pid, AgentStart: self.start, BootID: self.boot}
	if !ownerAlive(row, self) {
		t.Error("this process is not alive")
	}
	for name, r := range map[string]record.Session{
		"pid reused":        {AgentPID: self.pid, AgentStart: self.start + 1, BootID: self.boot},
		"before a reboot":   {AgentPID: self.pid, AgentStart: self.start, BootID: "other"},
		"written before v3": {},
		"no such pid":       {AgentPID: 1 << 30, AgentStart: 1, BootID: self.boot},
	} {
		if ownerAlive(r, self) {
			t.Errorf("%s: owner counted as alive", name)
		}
	}
}

// TestPendingEndApplied: a session end kept in the spill directory is
// stored by the next run into the row, once, and the file is removed; a
// row without a kept end is closed as killed.
func TestPendingEndApplied(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "obs.db")
	st, err := store.Open(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, _ := st.BeginSession(record.Session{PID: 1, Start: 10})
	b, _ := st.BeginSession(record.Session{PID: 2, Start: 20})
	s := &session{opts: Options{DB: db}, log: slog.New(slog.DiscardHandler), st: st}
	end := record.Session{ID: a, End: 99, ExitReason: "target exited with code 0", CallsLost: 3, ErrorsLost: map[string]uint64{"main.f": 3}}
	if err := savePendingEnd(s.spillDir(), end); err != nil {
		t.Fatal(err)
	}
	self, err := selfIdentity()
	if err != nil {
		t.Fatal(err)
	}
	s.closeLeftSessions(self)
	ss, err := st.Sessions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ss[0].End != 99 || ss[0].ExitReason != end.ExitReason || ss[0].ErrorsLost["main.f"] != 3 {
		t.Errorf("row with a kept end: %+v", ss[0])
	}
	if ss[1].ID != b || ss[1].ExitReason != killedReason || ss[1].End != 20 {
		t.Errorf("row without: %+v; want closed as killed at its start (nothing stored)", ss[1])
	}
	if _, err := os.Stat(pendingEndPath(s.spillDir(), a)); !os.IsNotExist(err) {
		t.Errorf("kept end file still there: %v", err)
	}
}
