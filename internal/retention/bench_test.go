package retention

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/safefile"
	"github.com/obs-agent/obs-agent/internal/store"
)

// BenchmarkDropStall measures how long a writer, writing 5,000-call batches
// back to back, is held up while retention drops a 1M-call hour (and, with
// an archive directory, while it first copies the hour out).
//
// Metrics: base-max-ms is the worst batch latency with no retention
// running, drop-max-ms the worst latency of a batch overlapping the drop,
// stall-ms their difference over the median batch, drop-ms how long the
// verified drop took (store.DropHourIf: the fingerprint of the hour on a
// read snapshot, then the DROP transaction); archive-max-ms is the worst
// batch overlapping the archive copy. build-step-max-ms is the longest step
// (write transaction) of the build of the hour's read structures
// (store.BuildDerived), and build-ms the whole build, pauses included.
func BenchmarkDropStall(b *testing.B) {
	const perHour = 1_000_000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := b.TempDir()
		path := filepath.Join(dir, "obs.db")
		now := t0.Add(10 * time.Hour)
		s, err := store.Open(path, store.Options{Clock: func() time.Time { return now }, NoBackgroundBuild: true})
		if err != nil {
			b.Fatal(err)
		}
		mk := func(id uint64, start int64, n int) []record.Call {
			cs := make([]record.Call, n)
			for j := range cs {
				cs[j] = record.Call{ID: id + uint64(j), ParentID: id + uint64(j) - 1, PID: 1, GoID: 1,
					Function: "main.f", Start: start + int64(j)*3000, Duration: 100}
				if j%5 == 0 {
					cs[j].Status, cs[j].Error = record.StatusError, "open /var/data/file-000001.json: denied"
				}
			}
			return cs
		}
		for j := 0; j < perHour; j += 10000 {
			if err := s.WriteCalls(mk(uint64(1+j), t0.UnixNano()+int64(j)*3000, 10000)); err != nil {
				b.Fatal(err)
			}
		}
		// Build the hour's read structures as the agent's background
		// builder does once the hour has closed. Each step is one write
		// transaction: the longest step is the longest a writer can wait
		// for the builder. The hour's drop below then drops them too.
		bld0 := time.Now()
		rep, err := s.BuildDerived(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		bld1 := time.Now()
		time.Sleep(time.Second) // let the checkpointer catch up

		type sample struct {
			start, end time.Time
		}
		var (
			mu      sync.Mutex
			samples []sample
			stop    atomic.Bool
			wg      sync.WaitGroup
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := uint64(10 * perHour)
			for !stop.Load() {
				batch := mk(id, now.UnixNano()+int64(id), 5000)
				st := time.Now()
				if err := s.WriteCalls(batch); err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				samples = append(samples, sample{st, time.Now()})
				mu.Unlock()
				id += 5000
			}
		}()
		worst := func(from, to time.Time) (time.Duration, []time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			var w time.Duration
			var all []time.Duration
			for _, sm := range samples {
				if sm.end.After(from) && sm.start.Before(to) {
					d := sm.end.Sub(sm.start)
					w = max(w, d)
					all = append(all, d)
				}
			}
			return w, all
		}
		b.StartTimer()
		base0 := time.Now()
		time.Sleep(2 * time.Second)
		baseMax, baseAll := worst(base0, time.Now())

		// Archive copy (separate connection), then the drop (which now
		// drops the side tables too).
		arch := filepath.Join(dir, "archive")
		m := &Manager{Store: s, ArchiveDir: arch, Clock: func() time.Time { return now }}
		ad, err := safefile.MkdirAll(arch)
		if err != nil {
			b.Fatal(err)
		}
		a0 := time.Now()
		name, _, err := m.archive(context.Background(), ad, t0)
		if err != nil {
			b.Fatal(err)
		}
		a1 := time.Now()
		time.Sleep(200 * time.Millisecond)
		archMax, _ := worst(a0, a1)
		fp, err := m.verify(context.Background(), ad, name, t0)
		if err != nil {
			b.Fatal(err)
		}
		ad.Close()

		// The drop as retention does it with an archive: verified against
		// the archive's fingerprint inside the dropping transaction.
		d0 := time.Now()
		if err := s.DropHourIf(context.Background(), t0, filepath.Join(arch, name), fp); err != nil {
			b.Fatal(err)
		}
		d1 := time.Now()
		time.Sleep(200 * time.Millisecond)
		dropMax, _ := worst(d0, d1)
		stop.Store(true)
		wg.Wait()
		b.StopTimer()
		s.Close()

		slices.Sort(baseAll)
		median := baseAll[len(baseAll)/2]
		ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
		b.ReportMetric(ms(baseMax), "base-max-ms")
		b.ReportMetric(ms(median), "batch-median-ms")
		b.ReportMetric(ms(dropMax), "drop-max-ms")
		b.ReportMetric(ms(max(0, dropMax-median)), "stall-ms")
		b.ReportMetric(ms(d1.Sub(d0)), "drop-ms")
		b.ReportMetric(ms(archMax), "archive-max-ms")
		b.ReportMetric(ms(rep.Max), "build-step-max-ms")
		b.ReportMetric(ms(bld1.Sub(bld0)), "build-ms")
		b.ReportMetric(ms(a1.Sub(a0)), "archive-ms")
		b.StartTimer()
	}
}
