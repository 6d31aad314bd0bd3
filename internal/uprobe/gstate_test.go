package uprobe

import (
	"bufio"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/symbols"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestGoroutineStatesCounted traces testdata/churn, whose 8 goroutines call
// main.outer forever, and checks that the tracer finds the state of each:
// with a slot table large enough for all of them, and with one of two
// slots, so that most states live in the hash map instead.
func TestGoroutineStatesCounted(t *testing.T) {
	testutil.RequireRoot(t)
	const loops = 8
	bin := testutil.BuildProgram(t, testutil.Build{Program: "churn"})
	b, err := symbols.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	f := b.Lookup("main.outer")
	if f == nil || !f.Probeable {
		t.Fatal("main.outer is not probeable in churn")
	}
	off := func(v uint64) uint64 {
		o, err := b.FileOffset(v)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	uf := Func{Entry: off(f.Entry), SampleRate: 1}
	for _, r := range f.Rets {
		uf.Rets = append(uf.Rets, off(r))
	}
	cmd := exec.Command(bin, fmt.Sprint(loops))
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("churn did not start: %q, %v", line, err)
	}
	for _, slots := range []uint32{1 << 12, 2} {
		t.Run(fmt.Sprintf("slots-%d", slots), func(t *testing.T) {
			tr, err := Attach(Config{Binary: bin, PID: cmd.Process.Pid, GoidOffset: b.Layout.Goid,
				Funcs: []Func{uf}, Sizes: Sizes{GoroutineSlots: slots}})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			// The looping goroutines call outer back to back: each has a
			// state within microseconds of the attach. (Goroutines that
			// outer spawns call nothing traced and have none.)
			deadline := time.Now().Add(30 * time.Second)
			n := 0
			for n < loops && time.Now().Before(deadline) {
				if n, err = tr.Goroutines(uint32(cmd.Process.Pid)); err != nil {
					t.Fatal(err)
				}
			}
			if n != loops {
				t.Fatalf("tracer holds state for %d goroutines, want %d", n, loops)
			}
			tr.Detach()
			open, err := tr.TakeOpen(uint32(cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			if len(open) > loops {
				t.Errorf("%d calls of outer open at the end, from %d goroutines", len(open), loops)
			}
			if n, _ := tr.Goroutines(uint32(cmd.Process.Pid)); n != 0 {
				t.Errorf("TakeOpen left the state of %d goroutines", n)
			}
		})
	}
}
