package retention

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/safefile"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// filled fills a store in dir with 3 hours of perHour calls and opens it
// (closed by the test's cleanup) with a manager archiving into arch, at
// 14:00, when a 7h window expires the three.
func filled(t *testing.T, dir, arch string, perHour int) (*store.Store, *Manager) {
	t.Helper()
	path := filepath.Join(dir, "obs.db")
	fill(t, path, 3, perHour)
	now := t0.Add(10 * time.Hour)
	s, err := store.Open(path, store.Options{Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, &Manager{Store: s, ArchiveDir: arch, Clock: func() time.Time { return now }}
}

// passInto runs one pass of a filled store that archives into arch.
func passInto(t *testing.T, dir, arch string, perHour int) (*store.Store, PassResult, error) {
	t.Helper()
	s, m := filled(t, dir, arch, perHour)
	res, err := m.Pass(context.Background(), 7*time.Hour)
	return s, res, err
}

func logFor(t *testing.T, s *store.Store, h time.Time) store.RetentionEntry {
	t.Helper()
	log, err := s.RetentionLog(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range log {
		if e.Hour.Equal(h) {
			return e
		}
	}
	t.Fatalf("no retention_log row for %v", h)
	return store.RetentionEntry{}
}

func fileText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestArchiveNameTakenByAnotherStore: two stores archive the same hours into
// one directory. The second never reuses or overwrites the first's files:
// its archives get the next free names, hold its own rows, are 0600, and
// retention_log points at them.
func TestArchiveNameTakenByAnotherStore(t *testing.T) {
	base := t.TempDir()
	arch := filepath.Join(base, "archive")
	if _, _, err := passInto(t, filepath.Join(base, "a"), arch, 50); err != nil {
		t.Fatal(err)
	}
	first := filepath.Join(arch, ArchiveName(t0))
	before := fileText(t, first)
	s, res, err := passInto(t, filepath.Join(base, "b"), arch, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(arch, "obs-2026112704-1.db")
	if len(res.Dropped) != 3 || len(res.Archives) != 3 || res.Archives[0] != want {
		t.Fatalf("dropped %v, archives %v; want %s first", res.Dropped, res.Archives, want)
	}
	if fileText(t, first) != before {
		t.Fatal("the other store's archive was changed")
	}
	checkArchive(t, first, t0, 50)
	checkArchive(t, want, t0, 100)
	if e := logFor(t, s, t0); e.State != "dropped" || e.Archive != want {
		t.Errorf("retention_log %+v, want dropped into %s", e, want)
	}
	if st, err := os.Stat(want); err != nil || st.Mode() != 0o600 {
		t.Errorf("archive mode %v, %v; want 0600", st.Mode(), err)
	}
}

// TestArchiveNamePlanted: in a sticky shared archive directory, uid 65534
// plants a link to a root file, a dangling link or a file of its own at the
// hour's archive name (or at its temporary name). The archive goes to a free
// name; nothing is written through the planted name.
func TestArchiveNamePlanted(t *testing.T) {
	testutil.RequireRootToPlant(t)
	for _, at := range []string{ArchiveName(t0), ArchiveName(t0) + ".tmp"} {
		for _, p := range testutil.Plants {
			t.Run(at+"/"+p.Name, func(t *testing.T) {
				dirs := testutil.NewSharedDirs(t)
				planted := filepath.Join(dirs.Sticky, at)
				testutil.AsNobody(t, p.Script(planted, dirs.Victim))
				s, res, err := passInto(t, t.TempDir(), dirs.Sticky, 100)
				if err != nil {
					t.Fatal(err)
				}
				want := filepath.Join(dirs.Sticky, "obs-2026112704-1.db")
				if len(res.Dropped) != 3 || res.Archives[0] != want {
					t.Fatalf("dropped %v, archives %v", res.Dropped, res.Archives)
				}
				checkArchive(t, want, t0, 100)
				if e := logFor(t, s, t0); e.Archive != want {
					t.Errorf("retention_log %+v, want %s", e, want)
				}
				dirs.CheckVictim(t)
				if _, err := os.Lstat(dirs.Victim + ".new"); err == nil {
					t.Fatal("the dangling link's target was created")
				}
				if st, err := os.Lstat(planted); err != nil || st.Size() > int64(len(dirs.Victim))+8 {
					t.Fatalf("the planted name was replaced or written: %v %v", st, err)
				}
			})
		}
	}
}

// TestArchiveDirPlanted: a link or another user's directory planted at the
// archive directory's name stops the pass before any hour is dropped.
func TestArchiveDirPlanted(t *testing.T) {
	testutil.RequireRootToPlant(t)
	plants := append([]testutil.Plant{{Name: "directory of another user", Script: func(p, _ string) string { return "mkdir -m 777 " + p }}}, testutil.Plants...)
	for _, p := range plants {
		t.Run(p.Name, func(t *testing.T) {
			dirs := testutil.NewSharedDirs(t)
			arch := filepath.Join(dirs.Sticky, "archive")
			testutil.AsNobody(t, p.Script(arch, dirs.Base))
			s, res, err := passInto(t, t.TempDir(), arch, 10)
			if !errors.Is(err, safefile.ErrUnsafe) {
				t.Fatalf("err = %v, want ErrUnsafe", err)
			}
			t.Log(err)
			if len(res.Dropped) != 0 || len(hoursOf(t, s)) != 5 {
				t.Fatalf("dropped %v; hours left %v", res.Dropped, hoursOf(t, s))
			}
			if m, _ := filepath.Glob(filepath.Join(dirs.Base, "obs-*")); len(m) != 0 {
				t.Fatalf("archives written through the link: %v", m)
			}
		})
	}
}

// TestLateRowsStopTheDrop: a row reaches the hour after its copy and before
// the drop. The drop must not happen against the short archive: the pass
// removes it, archives the hour again, and only then drops it.
func TestLateRowsStopTheDrop(t *testing.T) {
	dir := t.TempDir()
	arch := filepath.Join(dir, "archive")
	s, m := filled(t, dir, arch, 100)
	late := 0
	m.hook = func(step string) {
		if step == "archive-renamed" && late == 0 {
			late++
			c := record.Call{ID: 1 << 39, PID: 7, Function: "main.work", Start: t0.Add(time.Minute).UnixNano(), Status: record.StatusUnfinished}
			if err := s.WriteCalls([]record.Call{c}); err != nil {
				t.Error(err)
			}
		}
	}
	res, err := m.Pass(context.Background(), 7*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(arch, ArchiveName(t0))
	if len(res.Dropped) != 3 || res.Archives[0] != want {
		t.Fatalf("dropped %v, archives %v", res.Dropped, res.Archives)
	}
	a, err := store.Open(want, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	calls, err := a.Calls(context.Background(), store.Filter{})
	if err != nil || len(calls) != 101 {
		t.Fatalf("archive holds %d calls, %v; want 101 (with the late one)", len(calls), err)
	}
	if m, _ := filepath.Glob(filepath.Join(arch, "obs-2026112704*")); len(m) != 1 {
		t.Errorf("archives of the hour: %v; want the complete one only", m)
	}
}

// TestIntentNamesAForeignFile: a pass stopped after logging its intent, and
// the name it meant to use now holds another store's archive of the hour.
// The next pass must not drop the hour against that file, nor touch it.
func TestIntentNamesAForeignFile(t *testing.T) {
	base := t.TempDir()
	arch := filepath.Join(base, "archive")
	if _, _, err := passInto(t, filepath.Join(base, "a"), arch, 50); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(arch, ArchiveName(t0))
	before := fileText(t, foreign)
	s, m := filled(t, filepath.Join(base, "b"), arch, 100)
	ad, err := safefile.OpenDir(arch)
	if err != nil {
		t.Fatal(err)
	}
	resolved := filepath.Join(ad.Path(), ArchiveName(t0))
	ad.Close()
	if err := s.LogRetention(context.Background(), t0, "archiving", resolved); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Pass(context.Background(), 7*time.Hour); err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(ad.Path(), "obs-2026112704-1.db")
	if e := logFor(t, s, t0); e.State != "dropped" || e.Archive != want {
		t.Fatalf("retention_log %+v, want dropped into %s", e, want)
	}
	checkArchive(t, want, t0, 100)
	if fileText(t, foreign) != before {
		t.Fatal("the other store's archive was changed")
	}
}

// TestArchiveGroup: with a data group, archives are 0640 and the group's,
// and a new archive directory 0750.
func TestArchiveGroup(t *testing.T) {
	testutil.RequireRootToPlant(t)
	gid := testutil.OtherGroup(t)
	safefile.SetDataGroup(gid)
	defer safefile.SetDataGroup(-1)
	arch := filepath.Join(t.TempDir(), "archive")
	_, res, err := passInto(t, t.TempDir(), arch, 10)
	if err != nil || len(res.Archives) != 3 {
		t.Fatalf("archives %v, %v", res.Archives, err)
	}
	for _, p := range append(res.Archives, arch) {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o640)
		if st.IsDir() {
			want = 0o750
		}
		if g := int(st.Sys().(*syscall.Stat_t).Gid); st.Mode().Perm() != want || g != gid {
			t.Errorf("%s: mode %v group %d, want %v group %d", p, st.Mode(), g, want, gid)
		}
	}
}
