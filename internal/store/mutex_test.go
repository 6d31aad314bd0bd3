package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/sqliteconf"
)

// TestConcurrentStoreRace uses one store from every side at once, with
// SQLite's connection mutexes as no-ops (internal/sqliteconf): the writer
// writes batches, checkpoints run every few milliseconds (and the writer
// waits for them past a small WAL limit), the builder builds the read
// structures, and three readers query the pooled read connections. Run
// under -race it checks that no connection is used by two goroutines at
// once on the Go side; every reader checks what it reads against what was
// committed, and the file must pass integrity_check with every row there.
func TestConcurrentStoreRace(t *testing.T) {
	if err := sqliteconf.Err(); err != nil {
		t.Fatalf("connection mutexes not configured: %v", err)
	}
	oldEvery, oldLimit := checkpointEvery, walLimit
	checkpointEvery, walLimit = 5*time.Millisecond, 256<<10
	defer func() { checkpointEvery, walLimit = oldEvery, oldLimit }()

	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	s, err := Open(filepath.Join(t.TempDir(), "obs.db"), Options{Clock: func() time.Time { return base.Add(30 * time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const batches, batch = 8, 2000
	pool := genCalls(rand.New(rand.NewPCG(7, 8)), 1, base, batches*batch)
	byID := make(map[uint64]record.Call, len(pool))
	for _, c := range pool {
		byID[c.ID] = c
	}

	ctx := context.Background()
	var committed atomic.Uint64 // largest id of a committed batch
	done := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	wg.Add(1)
	go func() { // the writer
		defer wg.Done()
		defer close(done)
		for off := 0; off < len(pool); off += batch {
			if err := s.WriteCalls(pool[off : off+batch]); err != nil {
				fail(fmt.Errorf("write: %w", err))
				return
			}
			committed.Store(pool[off+batch-1].ID)
		}
	}()
	wg.Add(1)
	go func() { // the builder, besides the store's own
		defer wg.Done()
		for {
			if _, err := s.BuildDerived(ctx); err != nil {
				fail(fmt.Errorf("build: %w", err))
				return
			}
			select {
			case <-done:
				return
			default:
			}
		}
	}()
	for r := range 3 {
		wg.Add(1)
		go func() { // a reader
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 9))
			for {
				select {
				case <-done:
					return
				default:
				}
				hi := committed.Load()
				if hi == 0 {
					continue
				}
				id := 1 + rng.Uint64N(hi)
				c, err := s.Call(ctx, id)
				if err != nil {
					fail(fmt.Errorf("reader %d: call %d of %d committed: %w", r, id, hi, err))
					return
				}
				if want := byID[id]; c.Function != want.Function || c.Start != want.Start || c.Status != want.Status || c.Error != want.Error {
					fail(fmt.Errorf("reader %d: call %d is %+v, want %+v", r, id, c, want))
					return
				}
				errs, err := s.Errors(ctx, Filter{Limit: 50})
				if err != nil {
					fail(fmt.Errorf("reader %d: errors: %w", r, err))
					return
				}
				for _, e := range errs {
					if e.Status == record.StatusOK || byID[e.ID].Error != e.Error {
						fail(fmt.Errorf("reader %d: error lane gave %+v", r, e))
						return
					}
				}
				if _, err := s.Partitions(ctx); err != nil {
					fail(fmt.Errorf("reader %d: partitions: %w", r, err))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	var all []error
	for err := range errc {
		all = append(all, err)
	}
	if err := errors.Join(all...); err != nil {
		t.Fatal(err)
	}
	if err := s.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}
	parts, err := s.Partitions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rows int64
	for _, p := range parts {
		if p.Kind == KindCalls {
			rows += p.Rows
		}
	}
	if rows != int64(len(pool)) {
		t.Fatalf("calls partitions hold %d rows, wrote %d", rows, len(pool))
	}
	got, err := s.CallsByID(ctx, []uint64{1, uint64(len(pool) / 2), uint64(len(pool))})
	if err != nil || len(got) != 3 {
		t.Fatalf("first, middle and last call: %d found, %v", len(got), err)
	}
}
