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

// BenchmarkDropStall measures how long a writer, writing a 5,000-call batch
// into the live hour every 200 ms (25k calls/s; a writer with no pause,
// or, on this loaded VM, one every 50 ms, never lets the checkpointer
// restart the WAL, which then grows by GBs a minute), is held up while retention copies a closed 1M-call hour out,
// drops it verified against the copy, and frees the dropped tables' pages.
// The hour's read structures are built first, with no writer running
// (build-ms, and build-step-max its longest step; BenchmarkLockHolds in
// internal/store measures the steps' CPU time).
//
// Metrics (ms; "max" is the worst batch latency overlapping a phase, which
// under load includes CPU taken by the phase's reads on the other core):
// batch-median and base-max with nothing else running; archive-max during
// the copy; drop-max during
// store.DropHourIf (the fingerprint summed on a read snapshot, then the
// O(1) generation check and the renames in the dropping transaction) and
// drop-ms its duration; trash-max during store.EmptyTrash and
// trash-step-max its longest step. The *-x metrics divide a phase's worst
// batch by base-max: 1.0 means the phase held the writer up no more than
// the worst batch with nothing running did.
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
		// Build the hour's read structures as the background builder
		// does once the hour has closed; the drop below drops them too.
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
				if len(samples) > 0 {
					mu.Lock()
					next := samples[len(samples)-1].start.Add(200 * time.Millisecond)
					mu.Unlock()
					time.Sleep(time.Until(next))
				}
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
		ctx := context.Background()
		b.StartTimer()
		base0 := time.Now()
		time.Sleep(2 * time.Second)
		baseMax, baseAll := worst(base0, time.Now())

		// Archive copy (separate connection).
		arch := filepath.Join(dir, "archive")
		m := &Manager{Store: s, ArchiveDir: arch, Clock: func() time.Time { return now }}
		ad, err := safefile.MkdirAll(arch)
		if err != nil {
			b.Fatal(err)
		}
		a0 := time.Now()
		name, _, err := m.archive(ctx, ad, t0)
		if err != nil {
			b.Fatal(err)
		}
		a1 := time.Now()
		time.Sleep(200 * time.Millisecond)
		archMax, _ := worst(a0, a1)
		fp, err := m.verify(ctx, ad, name, t0)
		if err != nil {
			b.Fatal(err)
		}
		ad.Close()

		// The drop as retention does it with an archive.
		d0 := time.Now()
		if err := s.DropHourIf(ctx, t0, filepath.Join(arch, name), fp); err != nil {
			b.Fatal(err)
		}
		d1 := time.Now()
		time.Sleep(200 * time.Millisecond)
		dropMax, _ := worst(d0, d1)

		// Then the dropped tables' pages are freed in steps.
		t0t := time.Now()
		_, trashStep, err := s.EmptyTrash(ctx)
		if err != nil {
			b.Fatal(err)
		}
		t1t := time.Now()
		time.Sleep(200 * time.Millisecond)
		trashMax, _ := worst(t0t, t1t)
		stop.Store(true)
		wg.Wait()
		b.StopTimer()
		s.Close()

		slices.Sort(baseAll)
		median := baseAll[len(baseAll)/2]
		ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
		x := func(d time.Duration) float64 { return float64(d) / float64(baseMax) }
		b.ReportMetric(ms(median), "batch-median-ms")
		b.ReportMetric(ms(baseMax), "base-max-ms")
		b.ReportMetric(ms(rep.Max), "build-step-max-ms")
		b.ReportMetric(ms(bld1.Sub(bld0)), "build-ms")
		b.ReportMetric(ms(archMax), "archive-max-ms")
		b.ReportMetric(ms(a1.Sub(a0)), "archive-ms")
		b.ReportMetric(ms(dropMax), "drop-max-ms")
		b.ReportMetric(x(dropMax), "drop-x")
		b.ReportMetric(ms(d1.Sub(d0)), "drop-ms")
		b.ReportMetric(ms(trashMax), "trash-max-ms")
		b.ReportMetric(x(trashMax), "trash-x")
		b.ReportMetric(ms(trashStep), "trash-step-max-ms")
		b.ReportMetric(ms(t1t.Sub(t0t)), "trash-ms")
		b.StartTimer()
	}
}
