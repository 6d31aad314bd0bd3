package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/obs-agent/obs-agent/internal/testutil"
)

// landlockEnv makes the test binary, run again, enter a Landlock domain and
// exec its arguments (see TestMain).
const landlockEnv = "OBS_AGENT_TEST_LANDLOCK_EXEC"

// exitNoLandlock is the exit code when the kernel has no Landlock.
const exitNoLandlock = 77

// landlockExec puts this thread in a new Landlock domain and execs argv, so
// that argv runs as root, with every capability, yet sandboxed: Landlock
// denies a sandboxed process ptrace access to any process outside its
// domain, as SELinux, AppArmor or a BPF LSM policy may.
func landlockExec(argv []string) {
	runtime.LockOSThread() // the domain applies to this thread, which execs
	// One handled right is needed for a valid ruleset; making character
	// devices is one obs-agent never uses.
	attr := unix.LandlockRulesetAttr{Handled_access_fs: unix.LANDLOCK_ACCESS_FS_MAKE_CHAR}
	fd, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), 8, 0)
	if errno != 0 {
		fmt.Fprintln(os.Stderr, "landlock:", errno)
		os.Exit(exitNoLandlock)
	}
	if _, _, errno := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, fd, 0, 0); errno != 0 {
		fmt.Fprintln(os.Stderr, "landlock restrict:", errno)
		os.Exit(exitNoLandlock)
	}
	err := syscall.Exec(argv[0], argv, os.Environ())
	fmt.Fprintln(os.Stderr, "exec:", err)
	os.Exit(2)
}

// TestDeniedProcess checks that when the kernel refuses access to a
// process, attach says why instead of "run as root": once for a root agent
// that a security policy confines (Landlock here), once for an agent that
// has CAP_BPF and CAP_PERFMON but not CAP_SYS_PTRACE, as another user.
func TestDeniedProcess(t *testing.T) {
	testutil.RequireRoot(t)
	bin := agentBinary(t)
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	pid := itoa(sleeper.Process.Pid)
	dir, err := os.MkdirTemp("", "obs-agent-denied-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	db := filepath.Join(dir, "obs.db")
	args := []string{"attach", "--pid", pid, "-f", "main.*", "--db", db}

	t.Run("confined root", func(t *testing.T) {
		cmd := exec.Command(os.Args[0], append([]string{bin}, args...)...)
		cmd.Env = append(os.Environ(), landlockEnv+"=1")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == exitNoLandlock {
			t.Skipf("the kernel has no Landlock: %s", out)
		}
		want := "pid " + pid + " (sleep): the kernel denied access to its executable and memory: obs-agent runs with CAP_SYS_PTRACE, so a security policy protects this process"
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), want) || strings.Contains(string(out), "run as root") {
			t.Errorf("%v:\n%s\nwant %q", err, out, want)
		}
	})
	t.Run("another user without CAP_SYS_PTRACE", func(t *testing.T) {
		cmd := exec.Command(bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential:  &syscall.Credential{Uid: 65534, Gid: 65534},
			AmbientCaps: []uintptr{unix.CAP_BPF, unix.CAP_PERFMON},
		}
		out, err := cmd.CombinedOutput()
		want := "it runs as user root (uid 0) and obs-agent as"
		want2 := "(uid 65534) without CAP_SYS_PTRACE: run obs-agent as root (sudo), or grant it CAP_SYS_PTRACE"
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), want) || !strings.Contains(string(out), want2) {
			t.Errorf("%v:\n%s\nwant %q ... %q", err, out, want, want2)
		}
	})
	if _, err := os.Stat(db); err == nil {
		t.Error("a store was created for a process that could not be traced")
	}
}
