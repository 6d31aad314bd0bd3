package result

import (
	"testing"

	"github.com/obs-agent/obs-agent/internal/record"
)

func TestPercentile(t *testing.T) {
	var h [record.HistBuckets]uint64
	if Percentile(&h, 0, 0.5) != 0 {
		t.Error("empty histogram")
	}
	h[0] = 1 // d == 0
	h[1] = 1 // d == 1
	h[4] = 2 // 8..15
	h[11] = 6
	cases := []struct {
		q    float64
		max  uint64
		want uint64
	}{
		{0.10, 0, 0},    // rank 1 -> bucket 0
		{0.20, 0, 1},    // rank 2 -> bucket 1 (exact)
		{0.30, 0, 15},   // rank 3 -> bucket 4 -> 2^4-1
		{0.40, 0, 15},   // rank 4
		{0.50, 0, 2047}, // rank 5 -> bucket 11
		{0.99, 0, 2047},
		{0.99, 1500, 1500}, // capped at the exact max
		{1.00, 0, 2047},
	}
	for _, c := range cases {
		if got := Percentile(&h, c.max, c.q); got != c.want {
			t.Errorf("Percentile(q=%v, max=%d) = %d, want %d", c.q, c.max, got, c.want)
		}
	}
	var top [record.HistBuckets]uint64
	top[63] = 1
	if got := Percentile(&top, 0, 0.5); got != 1<<63-1 {
		t.Errorf("bucket 63 = %d", got)
	}
}

func TestParseGrouping(t *testing.T) {
	g, err := ParseGrouping("package", ByFunction, ByPackage, ByModule)
	if err != nil || g != ByPackage {
		t.Errorf("ParseGrouping(package) = %q, %v", g, err)
	}
	if _, err := ParseGrouping("function", ByModule, ByPackage); err == nil || err.Error() != `--by "function": want module or package` {
		t.Errorf("ParseGrouping(function) among module, package: %v", err)
	}
	if _, err := ParseGrouping("pkg", ByFunction, ByPackage, ByModule); err == nil || err.Error() != `--by "pkg": want function, package or module` {
		t.Errorf("ParseGrouping(pkg): %v", err)
	}
	f := record.Function{Name: "a/b.F", Package: "a/b", Module: "a"}
	if ByFunction.Key(f) != "a/b.F" || ByPackage.Key(f) != "a/b" || ByModule.Key(f) != "a" {
		t.Error("Key")
	}
}

func TestStatsRowFinish(t *testing.T) {
	var r StatsRow
	a := record.FuncStats{Calls: 3, Errors: 1, TotalNs: 30, MaxNs: 20, IntervalStart: 10, IntervalEnd: 20}
	a.Hist[4] = 3
	b := record.FuncStats{Calls: 1, Panics: 1, Sampled: 2, Dropped: 1, TotalNs: 10, MaxNs: 5, IntervalStart: 5, IntervalEnd: 15}
	b.Hist[3] = 1
	r.Add(&a)
	r.Add(&b)
	r.Finish()
	if r.Calls != 4 || r.Errors != 1 || r.Panics != 1 || r.Lost() != 3 || r.TotalNs != 40 || r.MaxNs != 20 || r.MeanNs != 10 ||
		r.IntervalStart != 5 || r.IntervalEnd != 20 || r.Hist[4] != 3 || r.Hist[3] != 1 {
		t.Errorf("merged %+v", r)
	}
	if r.P50 != 15 || r.P99 != 15 {
		t.Errorf("p50 %d p99 %d, want 15 15", r.P50, r.P99)
	}
}
