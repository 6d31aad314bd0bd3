package store

import (
	"context"
	"path/filepath"
	"testing"
)

// TestProcesses: a process row is stored once per (session, pid, start),
// its end is written once, EndProcesses closes only the open rows of its
// session, and a reused pid shows as two processes.
func TestProcesses(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "obs.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := Process{Session: 1, PID: 100, NSPID: 1, Binary: "/bin/a", BuildID: "x", Start: 10}
	b := Process{Session: 1, PID: 101, Binary: "/bin/a", Start: 20}
	reused := Process{Session: 1, PID: 100, Binary: "/bin/a", Start: 30}
	other := Process{Session: 2, PID: 200, Binary: "/bin/b", Start: 40}
	for _, p := range []Process{a, a, b, reused, other} {
		if err := s.BeginProcess(p); err != nil {
			t.Fatal(err)
		}
	}
	a.End, a.ExitReason = 15, "exited"
	if err := s.EndProcess(a); err != nil {
		t.Fatal(err)
	}
	late := a
	late.End, late.ExitReason = 99, "late"
	if err := s.EndProcess(late); err != nil {
		t.Fatal(err)
	}
	if err := s.EndProcesses(1, 50, "running when the session ended"); err != nil {
		t.Fatal(err)
	}
	all, err := s.Processes(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []Process{a,
		{Session: 1, PID: 101, Binary: "/bin/a", Start: 20, End: 50, ExitReason: "running when the session ended"},
		{Session: 1, PID: 100, Binary: "/bin/a", Start: 30, End: 50, ExitReason: "running when the session ended"},
		other}
	if len(all) != len(want) {
		t.Fatalf("got %d rows %+v, want %d", len(all), all, len(want))
	}
	for i := range want {
		if all[i] != want[i] {
			t.Errorf("row %d: %+v, want %+v", i, all[i], want[i])
		}
	}
	byPID, err := s.Processes(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(byPID) != 2 || byPID[0].Start != 10 || byPID[1].Start != 30 {
		t.Errorf("pid 100: %+v, want its two processes", byPID)
	}
}
