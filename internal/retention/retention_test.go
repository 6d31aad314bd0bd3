package retention

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/query"
	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/result"
	"github.com/obs-agent/obs-agent/internal/store"
)

var t0 = time.Date(2026, 11, 27, 4, 0, 0, 0, time.UTC)

// fill writes perHour calls, one stats row, one sample and one gap into each
// of the hours t0 .. t0+hours-1, in a session, and returns the store path.
func fill(t testing.TB, path string, hours, perHour int) {
	t.Helper()
	now := t0.Add(time.Duration(hours) * time.Hour)
	s, err := store.Open(path, store.Options{Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sid, err := s.BeginSession(record.Session{PID: 7, Binary: "/bin/app", Start: t0.UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterFunctions([]record.Function{{Name: "main.work", Package: "main", Module: "example.com/app"}}); err != nil {
		t.Fatal(err)
	}
	id := sid << 40
	for h := 0; h < hours; h++ {
		start := t0.Add(time.Duration(h) * time.Hour)
		calls := make([]record.Call, perHour)
		for i := range calls {
			id++
			calls[i] = record.Call{ID: id, PID: 7, GoID: 1, Function: fmt.Sprintf("main.f%d", i%5), Start: start.UnixNano() + int64(i)*1000, Duration: 500}
			if i > 0 {
				calls[i].ParentID = id - 1
			}
			if i%4 == 0 {
				calls[i].Status, calls[i].Error = record.StatusError, "boom"
			}
		}
		calls[0].Function = "main.work"
		if err := s.WriteCalls(calls); err != nil {
			t.Fatal(err)
		}
		var hist [record.HistBuckets]uint64
		hist[9] = uint64(perHour)
		if err := s.WriteStats([]record.FuncStats{{PID: 7, Function: "main.work", IntervalStart: start.UnixNano(), IntervalEnd: start.Add(time.Minute).UnixNano(), Calls: uint64(perHour), Recorded: uint64(perHour), TotalNs: uint64(perHour) * 500, MaxNs: 500, Hist: hist}}); err != nil {
			t.Fatal(err)
		}
		if err := s.WriteSamples([]record.ResourceSample{{PID: 7, Time: start.UnixNano()}}); err != nil {
			t.Fatal(err)
		}
		if err := s.WriteGaps([]record.Gap{{PID: 7, Function: "main.f1", Start: start.UnixNano(), End: start.Add(time.Second).UnixNano(), Reason: "test"}}); err != nil {
			t.Fatal(err)
		}
	}
}

func hoursOf(t testing.TB, s *store.Store) []string {
	t.Helper()
	hs, err := s.Hours(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, h := range hs {
		out = append(out, h.Format("15"))
	}
	return out
}

func TestPassDropsExactlyExpiredHours(t *testing.T) {
	path := filepath.Join(t.TempDir(), "obs.db")
	fill(t, path, 6, 10)                        // hours 04..09, plus 10 and 11 pre-created
	now := t0.Add(8*time.Hour + 30*time.Minute) // 12:30
	s, err := store.Open(path, store.Options{Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := &Manager{Store: s, Window: 6 * time.Hour, Clock: func() time.Time { return now }}
	res, err := m.Pass(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	// cutoff 06:30: hours 04 and 05 ended at or before it; 06 ends 07:00.
	if len(res.Dropped) != 2 || !res.Dropped[0].Equal(t0) || !res.Dropped[1].Equal(t0.Add(time.Hour)) {
		t.Errorf("dropped %v", res.Dropped)
	}
	if got := fmt.Sprint(hoursOf(t, s)); got != "[06 07 08 09 10 11]" {
		t.Errorf("hours left %s", got)
	}
	calls, _ := s.Calls(context.Background(), store.Filter{})
	if len(calls) != 40 || time.Unix(0, calls[0].Start).UTC().Hour() != 6 {
		t.Errorf("%d calls left", len(calls))
	}
	// Exactly at the boundary: older-than 2h30m drops hours ending <= 10:00.
	res, err = m.Pass(context.Background(), 2*time.Hour+30*time.Minute)
	if err != nil || len(res.Dropped) != 4 {
		t.Errorf("second pass dropped %v, %v", res.Dropped, err)
	}
	log, _ := s.RetentionLog(context.Background())
	if len(log) != 6 || log[0].State != "dropped" {
		t.Errorf("retention log %+v", log)
	}
	if err := s.IntegrityCheck(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestArchiveRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "obs.db")
	fill(t, path, 3, 100)
	now := t0.Add(10 * time.Hour)
	s, err := store.Open(path, store.Options{Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	arch := filepath.Join(dir, "archive")
	m := &Manager{Store: s, ArchiveDir: arch, Clock: func() time.Time { return now }}
	res, err := m.Pass(context.Background(), 7*time.Hour) // cutoff 07:00: 04, 05, 06
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Archives) != 3 {
		t.Fatalf("archives %v", res.Archives)
	}
	want := filepath.Join(arch, "obs-2026112704.db")
	if res.Archives[0] != want {
		t.Errorf("archive name %s, want %s", res.Archives[0], want)
	}
	checkArchive(t, want, t0, 100)
	if left, _ := filepath.Glob(filepath.Join(arch, "*")); len(left) != 3 {
		t.Errorf("archive dir holds %v", left)
	}
}

// checkArchive opens an archive as a read-only store, as `query --db` does.
func checkArchive(t *testing.T, path string, hour time.Time, calls int) {
	t.Helper()
	a, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	if err := a.IntegrityCheck(ctx); err != nil {
		t.Error(err)
	}
	got, err := a.Calls(ctx, store.Filter{})
	if err != nil || len(got) != calls {
		t.Fatalf("archive calls = %d, %v; want %d", len(got), err, calls)
	}
	if got[0].Function != "main.work" || got[1].Function != "main.f1" || got[1].ParentID != got[0].ID {
		t.Errorf("archive rows %+v %+v", got[0], got[1])
	}
	if !hourOf(got[0].Start).Equal(hour) {
		t.Errorf("archive hour %v, want %v", hourOf(got[0].Start), hour)
	}
	stats, _, err := query.New(a).Stats(ctx, store.Filter{}, result.ByModule)
	if err != nil || len(stats) != 2 || stats[0].Key != "example.com/app" || stats[0].Calls != uint64(calls) {
		t.Errorf("archive stats %+v, %v", stats, err)
	}
	if ss, _ := a.Sessions(ctx); len(ss) != 1 || ss[0].PID != 7 {
		t.Errorf("archive sessions %+v", ss)
	}
	if gs, _ := a.Gaps(ctx, store.Filter{}); len(gs) != 1 {
		t.Errorf("archive gaps %+v", gs)
	}
	parts, err := a.Partitions(ctx)
	if err != nil || len(parts) != 4 {
		t.Errorf("archive partitions %+v, %v", parts, err)
	}
}

func hourOf(ns int64) time.Time { return time.Unix(0, ns).UTC().Truncate(time.Hour) }

// TestCrashRecovery kills a pass with SIGKILL after each of its steps (in a
// child process), then checks that the store is consistent and that the
// next pass finishes the job.
func TestCrashRecovery(t *testing.T) {
	for _, step := range []string{"intent", "tmp-created", "archive-written", "archive-renamed", "dropped"} {
		t.Run(step, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "obs.db")
			arch := filepath.Join(dir, "archive")
			fill(t, path, 3, 2000)
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
			cmd.Env = append(os.Environ(), "OBS_CRASH_DB="+path, "OBS_CRASH_ARCHIVE="+arch, "OBS_CRASH_AT="+step)
			out, err := cmd.CombinedOutput()
			ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("helper did not die by SIGKILL at %s: %v\n%s", step, err, out)
			}
			now := t0.Add(10 * time.Hour)
			s, err := store.Open(path, store.Options{Clock: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			if err := s.IntegrityCheck(ctx); err != nil {
				t.Fatal(err)
			}
			// Consistent catalog: every listed partition can be read.
			if _, err := s.Partitions(ctx); err != nil {
				t.Fatal(err)
			}
			m := &Manager{Store: s, ArchiveDir: arch, Clock: func() time.Time { return now }}
			if _, err := m.Pass(ctx, 7*time.Hour); err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(hoursOf(t, s)); got != "[07 08]" {
				t.Errorf("hours after recovery %s", got)
			}
			for h := 0; h < 3; h++ {
				checkArchive(t, filepath.Join(arch, ArchiveName(t0.Add(time.Duration(h)*time.Hour))), t0.Add(time.Duration(h)*time.Hour), 2000)
			}
			if tmps, _ := filepath.Glob(filepath.Join(arch, "*.tmp*")); len(tmps) != 0 {
				t.Errorf("leftover %v", tmps)
			}
			// The dropped hours' tables renamed to trash (a kill after
			// a drop leaves them) were emptied by the pass.
			if n, _, err := s.EmptyTrash(ctx); err != nil || n != 0 {
				t.Errorf("trash left after the recovery pass: %d steps, %v", n, err)
			}
			if err := s.IntegrityCheck(ctx); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestCrashHelper is the child of TestCrashRecovery: it runs a pass and
// SIGKILLs itself when the pass reaches OBS_CRASH_AT for the second hour.
func TestCrashHelper(t *testing.T) {
	path := os.Getenv("OBS_CRASH_DB")
	if path == "" {
		t.Skip("helper process for TestCrashRecovery")
	}
	now := t0.Add(10 * time.Hour)
	s, err := store.Open(path, store.Options{Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	at := os.Getenv("OBS_CRASH_AT")
	seen := 0
	m := &Manager{Store: s, ArchiveDir: os.Getenv("OBS_CRASH_ARCHIVE"), Clock: func() time.Time { return now },
		hook: func(step string) {
			if step == at {
				if seen++; seen == 2 {
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
					select {}
				}
			}
		}}
	m.Pass(context.Background(), 7*time.Hour)
	t.Fatal("pass finished without reaching", at)
}

func TestVacuumWhenQuiet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "obs.db")
	fill(t, path, 3, 20000)
	now := t0.Add(10 * time.Hour)
	s, err := store.Open(path, store.Options{Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	m := &Manager{Store: s, Clock: func() time.Time { return now }, QuietFor: time.Millisecond, VacuumMinPages: 1, VacuumStep: 100}
	_, total0, _ := s.Freelist(ctx)
	res, err := m.Pass(ctx, 7*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	free, total, _ := s.Freelist(ctx)
	if res.Vacuumed == 0 || total >= total0 || free > total/4 {
		t.Errorf("vacuumed %d pages; pages %d -> %d, free %d", res.Vacuumed, total0, total, free)
	}
	if err := s.IntegrityCheck(ctx); err != nil {
		t.Error(err)
	}
	// Writes not quiet: no vacuum.
	fill2 := []record.Call{{ID: 1, Function: "main.x", Start: now.UnixNano()}}
	if err := s.WriteCalls(fill2); err != nil {
		t.Fatal(err)
	}
	m.QuietFor = time.Hour
	if res, _ := m.Pass(ctx, 0); res.Vacuumed != 0 {
		t.Errorf("vacuumed %d pages while writes were not quiet", res.Vacuumed)
	}
}
