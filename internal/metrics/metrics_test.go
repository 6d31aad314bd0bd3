package metrics

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/obs-agent/obs-agent/internal/record"
)

// TestPromBuckets: each exposed bound is 2^i-1 ns and counts, cumulatively,
// exactly the durations the log2 buckets up to i hold, whatever their
// spread (below the first bound, between bounds, beyond the last).
func TestPromBuckets(t *testing.T) {
	var h Log2Hist
	durs := []time.Duration{0, 1, 1023, 1024, 1025, 5 * time.Microsecond, time.Millisecond, time.Second, 30 * time.Minute}
	for _, d := range durs {
		h.Observe(d)
	}
	b, sum := h.Read()
	var wantSum uint64
	for _, d := range durs {
		wantSum += uint64(d)
	}
	if sum != wantSum {
		t.Errorf("sum %d ns, want %d", sum, wantSum)
	}
	got, count := promBuckets(&b)
	if count != uint64(len(durs)) {
		t.Errorf("count %d, want %d", count, len(durs))
	}
	if len(got) != lastBucket-firstBucket+1 {
		t.Errorf("%d buckets, want %d", len(got), lastBucket-firstBucket+1)
	}
	for i := firstBucket; i <= lastBucket; i++ {
		le := upperNs(i)
		var want uint64
		for _, d := range durs {
			if uint64(d) <= le {
				want++
			}
		}
		if n, ok := got[float64(le)/1e9]; !ok || n != want {
			t.Errorf("le=%d ns: %d (present %v), want %d", le, n, ok, want)
		}
	}
	if got[float64(upperNs(10))/1e9] != 3 { // 0, 1 and 1023 ns
		t.Errorf("le=1023ns holds %d, want 3", got[float64(upperNs(10))/1e9])
	}
	if record.HistBucket(1023) != 10 || record.HistBucket(1024) != 11 {
		t.Error("log2 bucket layout changed")
	}
}

// TestMetricsDocumented: docs/metrics.md has a table row for every metric
// the collector describes, and documents no metric that does not exist.
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(obs_agent_[a-z_]+)`").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	ch := make(chan *prometheus.Desc, 64)
	(&collector{}).Describe(ch)
	close(ch)
	described := map[string]bool{}
	for d := range ch {
		name := regexp.MustCompile(`fqName: "([^"]+)"`).FindStringSubmatch(d.String())[1]
		described[name] = true
		if !documented[name] {
			t.Errorf("%s is not in the table of docs/metrics.md", name)
		}
		if strings.Contains(d.String(), `"pid"`) || strings.Contains(d.String(), `"goid"`) {
			t.Errorf("%s has a pid or goid label", name)
		}
	}
	for name := range documented {
		if !described[name] {
			t.Errorf("docs/metrics.md documents %s, which does not exist", name)
		}
	}
}
