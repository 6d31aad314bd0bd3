package store

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
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestOpenRefusesPlantedFiles plants, as uid 65534 in a sticky
// world-writable directory (like /tmp), a link to a root file, a dangling
// link or a file of its own at the store's name and at each of its SQLite
// sidecars. Open must refuse, write nothing through it, and name the file.
func TestOpenRefusesPlantedFiles(t *testing.T) {
	testutil.RequireRootToPlant(t)
	for _, sfx := range append([]string{""}, Sidecars...) {
		for _, p := range testutil.Plants {
			t.Run("obs.db"+sfx+"/"+p.Name, func(t *testing.T) {
				dirs := testutil.NewSharedDirs(t)
				db := filepath.Join(dirs.Sticky, "obs.db")
				testutil.AsNobody(t, p.Script(db+sfx, dirs.Victim))
				s, err := Open(db, Options{})
				if err == nil {
					s.Close()
					t.Fatal("opened")
				}
				dirs.CheckRefused(t, err)
			})
		}
	}
}

// TestStoreFileModes: the store and its -wal and -shm are 0600 while it is
// written, whatever the umask, and an older 0644 store is tightened on
// open; with a data group they are 0640 and the group's. In a sticky
// shared directory the sidecars are taken before SQLite creates them.
func TestStoreFileModes(t *testing.T) {
	testutil.RequireRootToPlant(t)
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	check := func(t *testing.T, db string, want os.FileMode, gid int) {
		t.Helper()
		s, err := Open(db, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.WriteCalls([]record.Call{{ID: 1, Function: "main.f", Start: 1}}); err != nil {
			t.Fatal(err)
		}
		for _, sfx := range []string{"", "-wal", "-shm"} {
			st, err := os.Stat(db + sfx)
			if err != nil {
				t.Fatal(err)
			}
			g := st.Sys().(*syscall.Stat_t).Gid
			if st.Mode() != want || (gid >= 0 && int(g) != gid) {
				t.Errorf("%s: mode %v group %d, want %v group %d", db+sfx, st.Mode(), g, want, gid)
			}
		}
	}
	t.Run("private", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "new")
		check(t, filepath.Join(dir, "obs.db"), 0o600, -1)
		if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("directory %v, %v; want 0700", st.Mode(), err)
		}
	})
	t.Run("older 0644 store", func(t *testing.T) {
		db := filepath.Join(t.TempDir(), "obs.db")
		s, err := Open(db, Options{})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if err := os.Chmod(db, 0o644); err != nil {
			t.Fatal(err)
		}
		check(t, db, 0o600, -1)
	})
	t.Run("in /tmp", func(t *testing.T) {
		dirs := testutil.NewSharedDirs(t)
		db := filepath.Join(dirs.Sticky, "obs.db")
		check(t, db, 0o600, -1)
		// Closed: SQLite removed -wal and -shm. The -journal name stays
		// root's, so nobody can plant a hot journal there.
		st, err := os.Lstat(db + "-journal")
		if err != nil || st.Sys().(*syscall.Stat_t).Uid != 0 || st.Size() != 0 {
			t.Errorf("-journal in a shared directory: %v, %v", st, err)
		}
	})
	t.Run("group", func(t *testing.T) {
		gid := testutil.OtherGroup(t)
		safefile.SetDataGroup(gid)
		defer safefile.SetDataGroup(-1)
		dir := filepath.Join(t.TempDir(), "new")
		check(t, filepath.Join(dir, "obs.db"), 0o640, gid)
		if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o750 {
			t.Errorf("directory %v, %v; want 0750", st.Mode(), err)
		}
	})
}

// TestDropHourIfLateWrite writes a row into the hour between DropHourIf's
// snapshot and its dropping transaction, from this Store and from another
// connection (as another process would): the hour must not be dropped. A
// write to another hour in between does not stop the drop.
func TestDropHourIfLateWrite(t *testing.T) {
	for _, c := range []struct {
		name     string
		sameHour bool
		other    bool // another Store on the same file
		wantDrop bool
	}{
		{"this store, same hour", true, false, false},
		{"other connection, same hour", true, true, false},
		{"this store, another hour", false, false, true},
		{"other connection, another hour", false, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			now := t0.Add(5 * time.Hour)
			s, path := openTest(t, fixedClock(now))
			calls := []record.Call{{ID: 1, Function: "main.f", Start: t0.UnixNano()}, {ID: 2, Function: "main.f", Start: t0.UnixNano() + 5}}
			if err := s.WriteCalls(calls); err != nil {
				t.Fatal(err)
			}
			arch, fp := archiveHour(t, s, t0)
			var err error
			w := s
			if c.other {
				if w, err = Open(path, Options{Clock: fixedClock(now)}); err != nil {
					t.Fatal(err)
				}
				defer w.Close()
			}
			late := record.Call{ID: 3, Function: "main.f", Start: t0.UnixNano() + 10}
			if !c.sameHour {
				late.Start = now.UnixNano()
			}
			testHookAfterSnapshot = func() {
				if err := w.WriteCalls([]record.Call{late}); err != nil {
					t.Error(err)
				}
			}
			defer func() { testHookAfterSnapshot = nil }()
			err = s.DropHourIf(ctx, t0, arch, fp)
			hours, _ := s.Hours(ctx)
			dropped := len(hours) == 0 || !hours[0].Equal(t0)
			if c.wantDrop != (err == nil) || dropped != c.wantDrop {
				t.Fatalf("err = %v, hour dropped %v; want dropped %v", err, dropped, c.wantDrop)
			}
			if !c.wantDrop && !errors.Is(err, ErrArchiveMismatch) {
				t.Fatalf("err = %v, want ErrArchiveMismatch", err)
			}
		})
	}
}

// archiveHour copies the hour into a new archive store and returns its path
// and the fingerprint read from it.
func archiveHour(t *testing.T, s *Store, hour time.Time) (string, Fingerprint) {
	t.Helper()
	ctx := context.Background()
	arch := filepath.Join(t.TempDir(), "a.db")
	a, err := Open(arch, Options{Exclusive: true, NoBackgroundBuild: true})
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if err := s.CopyHourTo(ctx, hour, arch); err != nil {
		t.Fatal(err)
	}
	fp, err := ArchiveFingerprint(ctx, arch, hour)
	if err != nil {
		t.Fatal(err)
	}
	return arch, fp
}
