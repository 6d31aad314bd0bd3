package testutil

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// WaitExec returns once /proc/PID/exe is bin (same device and inode). A
// test that attaches right after exec.Cmd.Start can otherwise meet the
// child between fork and exec: on Debian's 6.12 kernel in CI, attach saw
// /proc/PID/exe still naming the test binary (and refused it as obs-agent
// itself) after Start had returned. It polls a condition, with a bound
// that only turns a hang into a failure.
func WaitExec(t testing.TB, pid int, bin string) {
	t.Helper()
	var want unix.Stat_t
	if err := unix.Stat(bin, &want); err != nil {
		t.Fatal(err)
	}
	exe := fmt.Sprintf("/proc/%d/exe", pid)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got unix.Stat_t
		err := unix.Stat(exe, &got)
		if err == nil && got.Dev == want.Dev && got.Ino == want.Ino {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d did not exec %s within 30 s (stat %s: %v)", pid, bin, exe, err)
		}
		time.Sleep(time.Millisecond)
	}
}
