package testutil

import (
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/obs-agent/obs-agent/internal/safefile"
)

// Nobody is the unprivileged user (and group) the file-safety tests plant
// files as: a real other user, not root pretending.
const Nobody = 65534

// AsNobody runs a shell script as uid and gid 65534, for planting the
// links and files an unprivileged local user could plant. Root only.
func AsNobody(t testing.TB, script string) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: Nobody, Gid: Nobody}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as nobody: %s: %v\n%s", script, err, out)
	}
}

// SharedDirs are directories as a host has them, for file-safety tests.
type SharedDirs struct {
	Base   string // root's, 0755: reachable by nobody
	Sticky string // root's, 1777, like /tmp
	Open   string // root's, 0777 without the sticky bit
	Others string // nobody's own directory, 0755
	Victim string // a root-owned file a redirected write would damage
}

// VictimText is the content of SharedDirs.Victim.
const VictimText = "precious root data\n"

// NewSharedDirs creates the directories under a fresh directory that
// nobody can reach (t.TempDir is 0700). Root only.
func NewSharedDirs(t testing.TB) SharedDirs {
	t.Helper()
	base, err := os.MkdirTemp("", "obs-agent-files-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	d := SharedDirs{
		Base:   base,
		Sticky: filepath.Join(base, "sticky"),
		Open:   filepath.Join(base, "open"),
		Others: filepath.Join(base, "others"),
		Victim: filepath.Join(base, "victim"),
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(base, 0o755))
	for _, dir := range []string{d.Sticky, d.Open, d.Others} {
		must(os.Mkdir(dir, 0o755))
	}
	must(os.Chmod(d.Sticky, 0o777|os.ModeSticky))
	must(os.Chmod(d.Open, 0o777))
	must(os.Chown(d.Others, Nobody, Nobody))
	must(os.WriteFile(d.Victim, []byte(VictimText), 0o644))
	return d
}

// CheckVictim fails the test when the victim file was changed.
func (d SharedDirs) CheckVictim(t testing.TB) {
	t.Helper()
	b, err := os.ReadFile(d.Victim)
	if err != nil || string(b) != VictimText {
		t.Fatalf("victim %s was changed: %q, %v", d.Victim, b, err)
	}
	st, err := os.Lstat(d.Victim)
	if err != nil || st.Mode() != 0o644 {
		t.Fatalf("victim %s mode changed: %v, %v", d.Victim, st.Mode(), err)
	}
}

// Plant is a way another user prepares a name before obs-agent writes it.
type Plant struct {
	Name   string
	Script func(path, victim string) string // shell run as nobody
}

// Plants are the three the file-safety tests try at every write path: a
// link to a root file, a dangling link, and a file of nobody's.
var Plants = []Plant{
	{"symlink", func(p, v string) string { return "ln -s " + v + " " + p }},
	{"dangling symlink", func(p, v string) string { return "ln -s " + v + ".new " + p }},
	{"file of another user", func(p, v string) string { return "touch " + p }},
}

// RequireRootToPlant skips a file-safety test, with the reason, when not
// running as root: it plants files as another user and writes as root.
func RequireRootToPlant(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping a test that plants files as another user")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: plants files as another user (uid 65534) and writes as root (run the tests with sudo, as CI does)")
	}
}

// CheckRefused checks that a write to a planted name was refused as
// unsafe and that nothing was written through it: the victim is unchanged
// and a dangling link's target was not created.
func (d SharedDirs) CheckRefused(t testing.TB, err error) {
	t.Helper()
	if !errors.Is(err, safefile.ErrUnsafe) {
		t.Fatalf("err = %v, want safefile.ErrUnsafe", err)
	}
	t.Log(err)
	d.CheckVictim(t)
	if _, err := os.Lstat(d.Victim + ".new"); err == nil {
		t.Fatal("the dangling link's target was created")
	}
}

// OtherGroup is an existing group other than root's, for --group tests.
func OtherGroup(t testing.TB) int {
	t.Helper()
	for _, n := range []string{"nogroup", "nobody", "daemon"} {
		if g, err := user.LookupGroup(n); err == nil {
			if id, err := strconv.Atoi(g.Gid); err == nil {
				return id
			}
		}
	}
	t.Skip("no group nogroup, nobody or daemon on this host")
	return -1
}
