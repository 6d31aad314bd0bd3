package store

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

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
