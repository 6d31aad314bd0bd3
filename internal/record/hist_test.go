package record

import "testing"

// TestHistBucket: bucket b holds 2^(b-1) <= ns < 2^b, bucket 0 holds 0,
// and the last bucket holds everything above, as the BPF side counts.
func TestHistBucket(t *testing.T) {
	want := func(ns uint64) int {
		b := 0
		for ns > 0 {
			ns >>= 1
			b++
		}
		return min(b, HistBuckets-1)
	}
	for _, ns := range []uint64{0, 1, 2, 3, 4, 1023, 1024, 1 << 40, 1<<62 - 1, 1 << 62, 1<<63 - 1, 1 << 63, ^uint64(0)} {
		if got := HistBucket(ns); got != want(ns) {
			t.Errorf("HistBucket(%d) = %d, want %d", ns, got, want(ns))
		}
	}
	for ns := uint64(0); ns < 1<<16; ns++ {
		if HistBucket(ns) != want(ns) {
			t.Fatalf("HistBucket(%d) = %d, want %d", ns, HistBucket(ns), want(ns))
		}
	}
}
