package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
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

// TestStatsByBinary: Filter.Binary sums the aggregates of the processes
// that ran a program across its restarts (a path or a build id), each
// interval counted for the process that had its pid while the interval
// ran: one that began before the process was first seen counts, a later
// process of another program on the same pid does not, nor pid 0 (not
// attributed). Hour rollups, which merge a pid's intervals, are built
// first and must not be what is read. Gaps and calls follow the same rule.
func TestStatsByBinary(t *testing.T) {
	s, _ := openTest(t, fixedClock(t0.Add(3*time.Hour)))
	ctx := context.Background()
	at := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	for _, p := range []Process{
		{Session: 1, PID: 100, Binary: "/srv/api", BuildID: "B1", Start: at(0), End: at(10 * time.Minute)},
		{Session: 1, PID: 101, Binary: "/srv/api", BuildID: "B1", Start: at(10 * time.Minute), End: at(70 * time.Minute)},
		// attach --pid: the program read through /proc, the same build.
		{Session: 2, PID: 300, Binary: "/proc/300/exe", BuildID: "B1", Start: at(20 * time.Minute), End: at(30 * time.Minute)},
		// Another program, on pid 100 again.
		{Session: 3, PID: 100, Binary: "/usr/bin/other", BuildID: "O", Start: at(40 * time.Minute), End: at(50 * time.Minute)},
	} {
		if err := s.BeginProcess(p); err != nil {
			t.Fatal(err)
		}
	}
	iv := func(pid uint32, from, to time.Duration, calls uint64) record.FuncStats {
		return record.FuncStats{PID: pid, Function: "main.f", IntervalStart: at(from), IntervalEnd: at(to), Calls: calls, Recorded: calls}
	}
	if err := s.WriteStats([]record.FuncStats{
		iv(100, time.Minute, 2*time.Minute, 3),
		iv(101, 9*time.Minute+59*time.Second, 11*time.Minute, 5), // began before pid 101 was
		iv(300, 21*time.Minute, 22*time.Minute, 11),
		iv(100, 41*time.Minute, 42*time.Minute, 7),  // the other program
		iv(0, 43*time.Minute, 44*time.Minute, 17),   // not attributed
		iv(101, 65*time.Minute, 66*time.Minute, 13), // the next hour
	}); err != nil {
		t.Fatal(err)
	}
	var calls []record.Call
	for i, c := range []struct {
		pid uint32
		at  time.Duration
	}{{100, 5 * time.Minute}, {101, 12 * time.Minute}, {300, 25 * time.Minute}, {100, 45 * time.Minute}, {101, 65 * time.Minute}} {
		calls = append(calls, record.Call{ID: uint64(i + 1), PID: c.pid, Function: "main.f", Start: at(c.at), Duration: 10})
	}
	if err := s.WriteCalls(calls); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteGaps([]record.Gap{
		{PID: 101, Function: "main.f", Start: at(15 * time.Minute), End: at(16 * time.Minute), Reason: "breaker"},
		{PID: 100, Function: "main.f", Start: at(45 * time.Minute), End: at(46 * time.Minute), Reason: "breaker"},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BuildDerived(ctx); err != nil {
		t.Fatal(err)
	}
	sum := func(m *BinaryMatch) uint64 {
		t.Helper()
		rows, err := s.Stats(ctx, Filter{Binary: m})
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, r := range rows {
			n += r.Calls
		}
		return n
	}
	gaps := func(m *BinaryMatch) []uint32 {
		t.Helper()
		gs, err := s.Gaps(ctx, Filter{Binary: m})
		if err != nil {
			t.Fatal(err)
		}
		var pids []uint32
		for _, g := range gs {
			pids = append(pids, g.PID)
		}
		return pids
	}
	api := &BinaryMatch{Paths: []string{"/srv/api"}, BuildIDs: []string{"B1"}}
	for _, c := range []struct {
		name string
		m    *BinaryMatch
		want uint64
		gaps string
	}{
		{"everything", nil, 56, "[101 100]"},
		{"api by path and build", api, 3 + 5 + 11 + 13, "[101]"},
		{"api by path only", &BinaryMatch{Paths: []string{"/srv/api"}}, 3 + 5 + 13, "[101]"},
		{"api by build only", &BinaryMatch{BuildIDs: []string{"B1"}}, 3 + 5 + 11 + 13, "[101]"},
		{"the other program", &BinaryMatch{Paths: []string{"/usr/bin/other"}}, 7, "[100]"},
		{"nothing", &BinaryMatch{}, 0, "[]"},
	} {
		if got := sum(c.m); got != c.want {
			t.Errorf("%s: %d calls, want %d", c.name, got, c.want)
		}
		// The chart's series: two-hour range, 10-minute buckets.
		per, err := s.StatsSeries(ctx, Filter{Binary: c.m, Since: time.Unix(0, at(0)), Until: time.Unix(0, at(2*time.Hour))}, int64(10*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, b := range per {
			n += b.Calls
		}
		if n != c.want {
			t.Errorf("%s: the series holds %d calls, want %d", c.name, n, c.want)
		}
		if got := fmt.Sprint(gaps(c.m)); got != c.gaps {
			t.Errorf("%s: gaps of pids %s, want %s", c.name, got, c.gaps)
		}
	}
	// Calls: the process that had the pid when the call started.
	for _, c := range []struct {
		m    *BinaryMatch
		want string
	}{{nil, "[100 101 300 100 101]"}, {api, "[100 101 300 101]"}, {&BinaryMatch{Paths: []string{"/usr/bin/other"}}, "[100]"}} {
		got, err := s.Calls(ctx, Filter{Binary: c.m})
		if err != nil {
			t.Fatal(err)
		}
		var pids []uint32
		for _, g := range got {
			pids = append(pids, g.PID)
		}
		if fmt.Sprint(pids) != c.want {
			t.Errorf("calls of %+v: pids %v, want %s", c.m, pids, c.want)
		}
	}
	// A range inside the hour reads the 10-minute rollup without Binary;
	// with it, the intervals.
	rows, err := s.Stats(ctx, Filter{Binary: api, Since: t0.Add(5 * time.Minute), Until: t0.Add(45 * time.Minute)})
	if err != nil || len(rows) != 1 || rows[0].Calls != 5+11 {
		t.Errorf("api in [10:05, 10:45): %+v, %v; want 16 calls", rows, err)
	}
}
