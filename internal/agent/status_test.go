package agent

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/obs-agent/obs-agent/internal/testutil"
)

func TestStatusFigures(t *testing.T) {
	f := statusFigures{callsPerSec: 12345.6, recorded: 1234567, lost: 0, storeBytes: 35 << 20, overhead: estimateOverhead(12345.6)}
	want := "obs-agent: 12,346 calls/s, recorded 1,234,567, lost 0, store 35.0 MiB, overhead ≈12.3% of a CPU"
	if got := f.String(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	for b, want := range map[int64]string{0: "0 KiB", 1: "1 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := size(b); got != want {
			t.Errorf("size(%d) = %q, want %q", b, got, want)
		}
	}
	for n, want := range map[uint64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestOverheadWarning(t *testing.T) {
	// 5,000 calls/s cost 5% of a CPU at DefaultCallCost (10 µs): the
	// threshold itself does not warn, anything above does, and never
	// when the circuit breaker bounds the cost.
	for _, c := range []struct {
		callsPerSec, maxOverhead float64
		want                     bool
	}{
		{4000, 0, false}, {5000, 0, false}, {6000, 0, true}, {100000, 0, true}, {100000, 0.05, false},
	} {
		if got := overheadWarning(estimateOverhead(c.callsPerSec), c.maxOverhead); got != c.want {
			t.Errorf("%v calls/s, --max-overhead %v: warn %v, want %v", c.callsPerSec, c.maxOverhead, got, c.want)
		}
	}
}

// TestStatusLineWrite: a log line clears the status line, is written, and
// the status line is drawn again under it; clearing erases it.
func TestStatusLineWrite(t *testing.T) {
	var buf bytes.Buffer
	l := NewStatusLine(&buf)
	l.Write([]byte("before\n"))
	l.set("S1")
	l.Write([]byte("log\n"))
	l.set("")
	l.set("")
	want := "before\n" + clearSeq + "S1" + clearSeq + "log\nS1" + clearSeq
	if buf.String() != want {
		t.Errorf("got %q, want %q", buf.String(), want)
	}
}

func TestIsTerminal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for name, wr := range map[string]io.Writer{"buffer": &bytes.Buffer{}, "file": f, "pipe": w} {
		if IsTerminal(wr) {
			t.Errorf("%s taken for a terminal", name)
		}
	}
	master, slave := testutil.OpenPTY(t)
	defer master.Close()
	defer slave.Close()
	if !IsTerminal(slave) {
		t.Error("a pty is not taken for a terminal")
	}
}
