package safefile_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/obs-agent/obs-agent/internal/safefile"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

func mode(t *testing.T, path string) (os.FileMode, uint32) {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode(), st.Sys().(*syscall.Stat_t).Gid
}

// TestPlantedNames plants, as uid 65534, each of a link to a root file, a
// dangling link and a file of its own at the name root then writes, in a
// sticky world-writable directory like /tmp, and checks every way of
// writing refuses it without touching the victim.
func TestPlantedNames(t *testing.T) {
	testutil.RequireRootToPlant(t)
	writers := map[string]func(dir, name string) error{
		"Ensure": func(dir, name string) error {
			d, err := safefile.OpenDir(dir)
			if err != nil {
				return err
			}
			defer d.Close()
			f, _, err := d.Ensure(name, 0o600)
			if err == nil {
				f.Write([]byte("traced data"))
				f.Close()
			}
			return err
		},
		"Create": func(dir, name string) error {
			f, err := safefile.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err == nil {
				f.Close()
			}
			return err
		},
		"Open": func(dir, name string) error {
			f, err := safefile.OpenFile(filepath.Join(dir, name), os.O_WRONLY, 0)
			if err == nil {
				f.Write([]byte("traced data"))
				f.Close()
			}
			return err
		},
		"WriteFileAtomic": func(dir, name string) error {
			return safefile.WriteFileAtomic(filepath.Join(dir, name), []byte("4242\n"), 0o644)
		},
		"MkdirAll": func(dir, name string) error {
			d, err := safefile.MkdirAll(filepath.Join(dir, name, "sub"))
			if err == nil {
				d.Close()
			}
			return err
		},
	}
	for wname, write := range writers {
		for _, p := range testutil.Plants {
			t.Run(wname+"/"+p.Name, func(t *testing.T) {
				dirs := testutil.NewSharedDirs(t)
				path := filepath.Join(dirs.Sticky, "x")
				testutil.AsNobody(t, p.Script(path, dirs.Victim))
				err := write(dirs.Sticky, "x")
				dirs.CheckRefused(t, err)
				if st, err := os.Lstat(path); err != nil || st.Sys().(*syscall.Stat_t).Uid != testutil.Nobody {
					t.Fatalf("the planted name was replaced: %v", err)
				}
			})
		}
	}
}

// TestUnsafeDirectories: a directory another user can write without the
// sticky bit, or owns, is refused, however it is reached; so is a link on
// the way that another user owns.
func TestUnsafeDirectories(t *testing.T) {
	testutil.RequireRootToPlant(t)
	dirs := testutil.NewSharedDirs(t)
	testutil.AsNobody(t, "mkdir "+dirs.Sticky+"/nd && ln -s "+dirs.Base+" "+dirs.Sticky+"/nl")
	for _, c := range []struct{ name, path string }{
		{"world-writable, not sticky", filepath.Join(dirs.Open, "store")},
		{"world-writable itself", dirs.Open},
		{"another user's directory", filepath.Join(dirs.Others, "store")},
		{"another user's directory in /tmp", filepath.Join(dirs.Sticky, "nd", "store")},
		{"another user's link on the way", filepath.Join(dirs.Sticky, "nl", "store")},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, err := safefile.MkdirAll(c.path)
			if err == nil {
				d.Close()
				t.Fatalf("%s accepted", c.path)
			}
			if !errors.Is(err, safefile.ErrUnsafe) {
				t.Fatalf("err = %v, want ErrUnsafe", err)
			}
			t.Log(err)
			if _, err := os.Lstat(filepath.Join(dirs.Base, "store")); err == nil {
				t.Fatal("created through the link")
			}
		})
	}
}

// TestTrustedLinkAndModes: a root-owned link in a root-only directory is
// followed (as /var/run -> /run is) and Path is the resolved path; new
// directories are 0700 and files exactly the mode asked, whatever the
// umask; a hard-linked file is refused.
func TestTrustedLinkAndModes(t *testing.T) {
	testutil.RequireRootToPlant(t)
	dirs := testutil.NewSharedDirs(t)
	real := filepath.Join(dirs.Base, "real")
	if err := os.Symlink("real", filepath.Join(dirs.Base, "link")); err != nil {
		t.Fatal(err)
	}
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	d, err := safefile.MkdirAll(filepath.Join(dirs.Base, "link", "a", "..", "b"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if want := filepath.Join(real, "b"); d.Path() != want {
		t.Errorf("Path %s, want %s", d.Path(), want)
	}
	// The path is cleaned lexically first, as filepath.Abs does: a/.. is gone.
	if _, err := os.Lstat(filepath.Join(real, "a")); err == nil {
		t.Error("a/.. created a")
	}
	for _, p := range []string{real, filepath.Join(real, "b")} {
		if m, _ := mode(t, p); m.Perm() != 0o700 || !m.IsDir() {
			t.Errorf("%s: mode %v, want drwx------", p, m)
		}
	}
	f, _, err := d.Ensure("data", 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if m, _ := mode(t, filepath.Join(real, "b", "data")); m != 0o600 {
		t.Errorf("mode %v, want 0600", m)
	}
	// An older, more open file is tightened.
	if err := os.Chmod(filepath.Join(real, "b", "data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if f, _, err = d.Ensure("data", 0o600); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if m, _ := mode(t, filepath.Join(real, "b", "data")); m != 0o600 {
		t.Errorf("mode after Ensure %v, want 0600", m)
	}
	if err := os.Link(filepath.Join(real, "b", "data"), filepath.Join(real, "b", "data2")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Ensure("data", 0o600); !errors.Is(err, safefile.ErrUnsafe) {
		t.Errorf("hard-linked file: err = %v, want ErrUnsafe", err)
	}
	// In /tmp, a directory of root's is fine, and is not shared.
	s, err := safefile.MkdirAll(filepath.Join(dirs.Sticky, "mine"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Shared() {
		t.Error("root's 0700 directory reported shared")
	}
	st, err := safefile.OpenDir(dirs.Sticky)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if !st.Shared() {
		t.Error("the sticky world-writable directory is not reported shared")
	}
}

// TestDataGroup: with a data group, data files are 0640 and the group's,
// new directories 0750 and the group's.
func TestDataGroup(t *testing.T) {
	testutil.RequireRootToPlant(t)
	gid := testutil.OtherGroup(t)
	safefile.SetDataGroup(gid)
	defer safefile.SetDataGroup(-1)
	if safefile.DataMode() != 0o640 || safefile.DirMode() != 0o750 {
		t.Fatalf("modes %v %v", safefile.DataMode(), safefile.DirMode())
	}
	base := t.TempDir()
	d, err := safefile.MkdirAll(filepath.Join(base, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	f, err := d.Create("store", unix.O_RDWR, safefile.DataMode())
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if m, g := mode(t, filepath.Join(base, "s", "store")); m != 0o640 || int(g) != gid {
		t.Errorf("file mode %v group %d, want 0640 group %d", m, g, gid)
	}
	if m, g := mode(t, filepath.Join(base, "s")); m.Perm() != 0o750 || int(g) != gid {
		t.Errorf("dir mode %v group %d, want 0750 group %d", m, g, gid)
	}
	if _, err := safefile.LookupGroup("no-such-group-obs"); err == nil {
		t.Error("an unknown group was accepted")
	}
}

// TestRenameNoReplace never replaces an existing name, a link included.
func TestRenameNoReplace(t *testing.T) {
	testutil.RequireRootToPlant(t)
	dirs := testutil.NewSharedDirs(t)
	testutil.AsNobody(t, "ln -s "+dirs.Victim+" "+dirs.Sticky+"/a.db")
	d, err := safefile.OpenDir(dirs.Sticky)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	f, err := d.Create("a.db.tmp", unix.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("archive"))
	f.Close()
	if err := d.RenameNoReplace("a.db.tmp", "a.db"); !errors.Is(err, os.ErrExist) {
		t.Fatalf("err = %v, want ErrExist", err)
	}
	dirs.CheckVictim(t)
}
