package store

import (
	"math/rand/v2"
	"os"
	"path/filepath"
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
// WAL starts over, cut back to the limit: it stays far below the store's
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
	// About 40 MiB of store: 40 times the limit.
	for n := 0; n < 60; n++ {
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
