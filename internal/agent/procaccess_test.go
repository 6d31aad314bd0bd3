package agent

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestProcessExeExplains checks that each process that has no program to
// trace says why, instead of a raw "stat /proc/N/exe" error.
func TestProcessExeExplains(t *testing.T) {
	// A kernel thread: the first pid whose stat flags carry PF_KTHREAD.
	kthread := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			if st, err := readProcStat(pid); err == nil && st.flags&pfKthread != 0 {
				kthread = pid
				break
			}
		}
	}
	if kthread == 0 {
		t.Log("no kernel thread is visible in /proc (a pid namespace?): that case is not covered")
	} else if _, err := ProcessExe(kthread); err == nil || !strings.Contains(err.Error(), "is a kernel thread: it runs no program") {
		t.Errorf("kernel thread %d: %v", kthread, err)
	}

	// A zombie: a child that has exited and that we have not reaped yet.
	z := exec.Command("true")
	if err := z.Start(); err != nil {
		t.Fatal(err)
	}
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, z.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	_, err := ProcessExe(z.Process.Pid)
	want := "has exited: it is a zombie waiting for its parent (pid " + strconv.Itoa(os.Getpid()) + ")"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("zombie: %v, want %q", err, want)
	}
	z.Wait()

	// Reaped: no process at all.
	if _, err := ProcessExe(z.Process.Pid); !errors.Is(err, ErrNoProcess) {
		t.Errorf("reaped pid: %v, want ErrNoProcess", err)
	}

	// Our own process: readable.
	if exe, err := ProcessExe(os.Getpid()); err != nil || exe != "/proc/"+strconv.Itoa(os.Getpid())+"/exe" {
		t.Errorf("self: %q, %v", exe, err)
	}
}
