package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestWriteReadyPlanted plants, as uid 65534 in a sticky world-writable
// directory, a link to a root file, a dangling link or a file of its own
// at the --ready-file path: root must refuse it and write nothing through
// it. In a directory of root's, the file is written whole, 0644.
func TestWriteReadyPlanted(t *testing.T) {
	testutil.RequireRootToPlant(t)
	for _, p := range testutil.Plants {
		t.Run(p.Name, func(t *testing.T) {
			dirs := testutil.NewSharedDirs(t)
			ready := filepath.Join(dirs.Sticky, "ready")
			testutil.AsNobody(t, p.Script(ready, dirs.Victim))
			err := writeReady(ready, 4242)
			dirs.CheckRefused(t, err)
			if left, _ := filepath.Glob(filepath.Join(dirs.Sticky, ".ready.tmp-*")); len(left) != 0 {
				t.Fatalf("temporary files left: %v", left)
			}
		})
	}
	t.Run("root's directory", func(t *testing.T) {
		ready := filepath.Join(t.TempDir(), "ready")
		if err := os.WriteFile(ready, []byte("old\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := writeReady(ready, 4242); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(ready)
		if b, _ := os.ReadFile(ready); err != nil || string(b) != "4242\n" || st.Mode() != 0o644 {
			t.Fatalf("ready file %q, %v, %v", b, st.Mode(), err)
		}
	})
}

// TestRefuseSelf: attach to the agent's own pid, and run of its own
// executable (also through a link), are refused before anything is opened.
func TestRefuseSelf(t *testing.T) {
	db := filepath.Join(t.TempDir(), "obs.db")
	opts := Options{Include: []string{"main.*"}, DB: db}
	if _, err := Attach(context.Background(), os.Getpid(), opts); !errors.Is(err, ErrSelf) {
		t.Errorf("attach to own pid: err = %v, want ErrSelf", err)
	}
	link := filepath.Join(t.TempDir(), "other-name")
	if err := os.Symlink(os.Args[0], link); err != nil {
		t.Fatal(err)
	}
	for _, exe := range []string{os.Args[0], link} {
		_, err := Run(context.Background(), []string{exe, "-test.run=^$"}, nil, nil, nil, opts)
		if !errors.Is(err, ErrSelf) {
			t.Errorf("run %s: err = %v, want ErrSelf", exe, err)
		}
	}
	if _, err := os.Stat(db); err == nil {
		t.Error("a store was created for a refused target")
	}
}

// TestTargetLock: a second lock on one process fails naming the holder's
// pid; once released, the lock can be taken again.
func TestTargetLock(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the per-target locks live in /run/obs-agent")
	}
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	pid := sleeper.Process.Pid
	l, err := lockTarget(pid)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockTarget(pid)
	if !errors.Is(err, ErrTargetBusy) || !strings.Contains(err.Error(), fmt.Sprintf("obs-agent pid %d", os.Getpid())) {
		t.Fatalf("second lock: err = %v, want ErrTargetBusy naming pid %d", err, os.Getpid())
	}
	t.Log(err)
	if st, err := os.Stat(lockDir()); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("lock directory %v, %v; want 0700", st.Mode(), err)
	}
	l.release()
	l2, err := lockTarget(pid)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	l2.release()
}
