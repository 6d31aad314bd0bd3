package agent

import (
	"strings"
	"testing"
)

// TestPlanBudget: for every limit from the minimum up, the need fits the
// limit, the rings are powers of two that grow with it, and the queues
// and maps grow with it too; a limit below the minimum, or an ok lane that
// can't fit, is refused with a message that says what to change.
func TestPlanBudget(t *testing.T) {
	// The Go base is an input, not this test process's own memory (which
	// depends on the tests that ran before it: 19.7 MiB in one CI run left
	// 64 MiB with OTLP short). Agents' bases measured 15 to 26 MiB.
	const base = 16 << 20
	var prev *Budget
	for _, mib := range []int64{64, 96, 128, 160, 256, 1024, 4096} {
		b, err := planBudget(mib<<20, base, 50, 0, false)
		if err != nil {
			t.Fatalf("%d MiB: %v", mib, err)
		}
		if b.Need() > b.Limit {
			t.Errorf("%d MiB: need %d over the limit", mib, b.Need())
		}
		for _, r := range []uint32{b.Sizes.RingOK, b.Sizes.RingErr} {
			if r&(r-1) != 0 || r < 1<<16 {
				t.Errorf("%d MiB: ring of %d bytes", mib, r)
			}
		}
		if b.Kernel.Rings < int64(b.Sizes.RingOK)+int64(b.Sizes.RingErr) {
			t.Errorf("%d MiB: ring memory %d below the ring sizes", mib, b.Kernel.Rings)
		}
		if prev != nil && (b.Sizes.Goroutines <= prev.Sizes.Goroutines || b.OKLane <= prev.OKLane || b.ErrLane <= prev.ErrLane || b.SQLite <= prev.SQLite || b.Sizes.RingOK < prev.Sizes.RingOK) {
			t.Errorf("%d MiB does not grow every part over the smaller limit: %+v after %+v", mib, b, prev)
		}
		t.Logf("%s", b)
		prev = b
	}
	if b, _ := planBudget(DefaultMemoryLimit, base, 50, 0, false); b.Sizes.RingOK != 16<<20 || b.Sizes.RingErr != 8<<20 || b.Sizes.Goroutines < 20000 {
		t.Errorf("default budget: rings %d + %d, %d goroutines; want 16 + 8 MiB and room for TestBurst20000", b.Sizes.RingOK, b.Sizes.RingErr, b.Sizes.Goroutines)
	}
	if _, err := planBudget(32<<20, base, 50, 0, false); err == nil || !strings.Contains(err.Error(), "below the minimum") {
		t.Errorf("32 MiB: %v", err)
	}
	if _, err := planBudget(128<<20, base, 50, 100<<20, false); err == nil || !strings.Contains(err.Error(), "--queue-memory") {
		t.Errorf("a 100 MiB ok lane in 128 MiB: %v", err)
	}
	if b, err := planBudget(256<<20, base, 50, 8<<20, false); err != nil || b.OKLane != 8<<20 {
		t.Errorf("--queue-memory 8 in 256 MiB: %v, ok lane %d", err, b.OKLane)
	}
	// A base too large for the limit is refused with the limit that fits.
	if _, err := planBudget(64<<20, 26<<20, 50, 0, true); err == nil || !strings.Contains(err.Error(), "raise it to at least") {
		t.Errorf("64 MiB with OTLP and a 26 MiB base: %v", err)
	}
	// With the OTLP sink: its lanes and resolver fit the same limit, the
	// rings keep their default sizes, and the store keeps most of the
	// queues' share.
	for _, mib := range []int64{64, 160, 1024} {
		b, err := planBudget(mib<<20, base, 50, 0, true)
		plain, _ := planBudget(mib<<20, base, 50, 0, false)
		if err != nil || b.Need() > b.Limit || b.OTLPOKLane <= 0 || b.OTLPErrLane <= 0 || b.Resolver != resolverAllowance ||
			b.OKLane <= b.OTLPOKLane || b.ErrLane <= b.OTLPErrLane || b.OKLane+b.OTLPOKLane > plain.OKLane {
			t.Errorf("%d MiB with OTLP: %v, %+v", mib, err, b)
		}
		if mib == 160 && (b.Sizes.RingOK != 16<<20 || b.Sizes.RingErr != 8<<20) {
			t.Errorf("default budget with OTLP: rings %d + %d, want 16 + 8 MiB", b.Sizes.RingOK, b.Sizes.RingErr)
		}
		t.Logf("with OTLP: %s", b)
	}
}
