package store

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// TestWALBoundedUnderFlood: a writer that commits batch after batch, flat
// out, never leaves PASSIVE checkpoints the moment in which SQLite starts
// the WAL over, so without a bound the WAL grows for as long as the writes
// go on (measured: three times the size of the store itself). Past
// walLimit the writer checkpoints between two of its transactions and the
// WAL starts over, reusing its file: it stays far below the store's
// size, however long the flood.
func TestWALBoundedUnderFlood(t *testing.T) {
	oldEvery, oldLimit := checkpointEvery, walLimit
	checkpointEvery, walLimit = 20*time.Millisecond, 1<<20
	var over atomic.Int64 // checkpoints that found the WAL past the limit
	checkpointHook = func(walBytes int64) {
		if walBytes > walLimit {
			over.Add(1)
		}
	}
	defer func() { checkpointEvery, walLimit, checkpointHook = oldEvery, oldLimit, nil }()

	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	path := filepath.Join(t.TempDir(), "obs.db")
	s, err := Open(path, Options{Clock: func() time.Time { return base }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pool := genCalls(rand.New(rand.NewPCG(1, 2)), 1, base, 20_000)
	var maxWAL int64
	next := uint64(1)
	// About 28 MiB of store: 28 times the limit.
	for n := 0; n < 120; n++ {
		chunk := make([]record.Call, 5000)
		for i := range chunk {
			c := pool[(n*5000+i)%len(pool)]
			c.ID, c.ParentID = next+uint64(i), 0
			chunk[i] = c
		}
		if err := s.WriteCalls(chunk); err != nil {
			t.Fatal(err)
		}
		next += uint64(len(chunk))
		if fi, err := os.Stat(path + "-wal"); err == nil {
			maxWAL = max(maxWAL, fi.Size())
		}
	}
	db, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("store %d KiB, largest WAL %d KiB, %d checkpoints found the WAL past the limit", db.Size()>>10, maxWAL>>10, over.Load())
	if over.Load() == 0 {
		t.Fatalf("no checkpoint ran past the limit in a flood that wrote %d KiB with a %d KiB limit", db.Size()>>10, walLimit>>10)
	}
	if maxWAL > db.Size()/2 {
		t.Errorf("the WAL reached %d KiB for a store of %d KiB: it is not bounded", maxWAL>>10, db.Size()>>10)
	}
}

// BenchmarkWALFlood measures what bounding the WAL costs a writer that
// writes flat out: 400 batches of 5,000 calls (BenchmarkWriteCalls's
// records) into one store, with the default walLimit and checkpointer,
// once with the writer running the checkpoint itself past the limit
// (benchWriterCheckpoint, the code before awaitCheckpoint: "old") and
// once with it waiting for the checkpointer at most ckptWait ("new"),
// alternately, OBS_BENCH_ROUNDS rounds each (default 2). It reports each
// way's longest and 99th-percentile batch, its median batch, the longest
// time a batch waited for a checkpoint (the writer's own checkpoint, or
// its wait for the checkpointer's) and how many batches did, and the
// largest WAL file seen after a batch. On this shared 2-core VM a batch's
// wall time also includes waiting for a core, which the checkpointer,
// running beside the writer, competes for.
func BenchmarkWALFlood(b *testing.B) {
	rounds := benchRounds(2)
	const batches, batch = 400, 5000
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	pool := genCalls(rand.New(rand.NewPCG(1, 2)), 1, base, 200_000)
	span := pool[len(pool)-1].Start - pool[0].Start + 1
	var lat [2][]time.Duration
	var maxWAL [2]int64
	var waits [2][]time.Duration
	var way int
	ckptWaitHook = func(d time.Duration) { waits[way] = append(waits[way], d) }
	defer func() { benchWriterCheckpoint, ckptWaitHook = false, nil }()
	for i := 0; i < b.N; i++ {
		for r := range 2 * rounds {
			way = r%2 ^ (r/2)%2 // old, new, new, old, ...
			benchWriterCheckpoint = way == 0
			path := filepath.Join(b.TempDir(), "bench.db")
			s, err := Open(path, Options{Clock: func() time.Time { return base }, NoBackgroundBuild: true})
			if err != nil {
				b.Fatal(err)
			}
			chunk := make([]record.Call, batch)
			next := uint64(1)
			for n := 0; n < batches; n++ {
				for j := range chunk {
					k := n*batch + j
					c := pool[k%len(pool)]
					c.ID, c.ParentID = next+uint64(j), 0
					c.Start += int64(k/len(pool)) * span
					chunk[j] = c
				}
				t0 := time.Now()
				if err := s.WriteCalls(chunk); err != nil {
					b.Fatal(err)
				}
				lat[way] = append(lat[way], time.Since(t0))
				next += batch
				if fi, err := os.Stat(path + "-wal"); err == nil {
					maxWAL[way] = max(maxWAL[way], fi.Size())
				}
			}
			s.Close()
		}
	}
	for way, name := range []string{"old", "new"} {
		ds := slices.Clone(lat[way])
		slices.Sort(ds)
		ms := func(p float64) float64 { return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))]) / 1e6 }
		b.ReportMetric(ms(1), name+"-batch-max-ms")
		b.ReportMetric(ms(0.99), name+"-batch-p99-ms")
		b.ReportMetric(ms(0.5), name+"-batch-median-ms")
		b.ReportMetric(float64(maxWAL[way])/(1<<20), name+"-wal-max-MiB")
		b.ReportMetric(float64(slices.Max(append(waits[way], 0)))/1e6, name+"-ckpt-wait-max-ms")
		b.ReportMetric(float64(len(waits[way])), name+"-ckpt-waits")
	}
}
