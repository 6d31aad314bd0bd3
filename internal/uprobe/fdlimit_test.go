package uprobe

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestSingleProbesRaiseFDLimit: single uprobes hold two descriptors each;
// with an open-file limit far below that, Attach raises it instead of
// failing half way with EMFILE (as 5,000 sites did on Linux 6.1 with the
// hard limit at 4096).
func TestSingleProbesRaiseFDLimit(t *testing.T) {
	bin, all, cmd := manyFuncs(t)
	fs := all[:60] // 120 sites: about 500 descriptors with the headroom
	var orig unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &orig) })
	low := unix.Rlimit{Cur: 128, Max: orig.Max}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	tr, err := Attach(Config{Binary: bin, PID: cmd.Process.Pid, GoidOffset: 152, Funcs: fs, Single: true})
	if err != nil {
		t.Fatalf("attach 120 single uprobes with the open-file limit at 128: %v", err)
	}
	defer tr.Close()
	if tr.Sites() != 120 || tr.Multi() {
		t.Fatalf("sites %d multi %v, want 120 single", tr.Sites(), tr.Multi())
	}
	var now unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &now); err != nil {
		t.Fatal(err)
	}
	if now.Cur < 120*fdsPerSingleProbe {
		t.Fatalf("open-file limit %d after attaching 120 single uprobes", now.Cur)
	}
}
