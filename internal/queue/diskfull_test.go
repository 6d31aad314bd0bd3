package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// notifyWriter passes writes to the store and reports each result.
type notifyWriter struct {
	*store.Store
	calls chan error
}

// Classify reads the store's errors as the agent's store sink does.
func (w notifyWriter) Classify(err error) Failure {
	what, kind := store.Trouble(err)
	f := Failure{Refused: store.Refused(err), What: what, Kind: "other"}
	if kind != nil {
		f.Kind = kind.Error()
	}
	return f
}

func (w notifyWriter) WriteCalls(c []record.Call) error {
	err := w.Store.WriteCalls(c)
	select {
	case w.calls <- err:
	default:
	}
	return err
}

// TestDiskFullRealStore fills the store's file system. With the journal
// on another file system, error records are kept in the journal; with it
// on the same full one, they are kept in memory. Either way the failure is
// said once, and once space is freed every error record reaches the store
// and the journal is deleted.
func TestDiskFullRealStore(t *testing.T) {
	for _, sameFS := range []bool{false, true} {
		name := "journal-elsewhere"
		if sameFS {
			name = "journal-on-the-full-disk"
		}
		t.Run(name, func(t *testing.T) {
			// 8 MiB: once the filler is removed, the store's file, its
			// WAL (checkpointed by another connection, which may lag on a
			// loaded machine) and its read structures must fit, or the
			// disk is really full again.
			mnt := testutil.Tmpfs(t, 8<<20)
			db := filepath.Join(mnt, "obs.db")
			st, err := store.Open(db, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			spill := filepath.Join(t.TempDir(), "obs.db.spill")
			if sameFS {
				spill = db + ".spill"
			}
			filler := filepath.Join(mnt, "filler")
			testutil.Fill(t, filler)

			log, lb := newLogger()
			q := New(fastOpts(Options{SpillDir: spill, BatchSize: 500, Logger: log, Name: "store " + db}))
			w := notifyWriter{st, make(chan error, 1)}
			var p pushed
			const total, errEvery = 3000, 10
			for i := range total {
				st := record.StatusOK
				if i%errEvery == 0 {
					st = record.StatusError
				}
				c := call(fmt.Sprintf("main.d%d", i%4), st)
				c.Error += strings.Repeat(" detail", 20*int(st))
				p.push(q, c)
			}
			done := startDrain(q, w)
			wantErrs := uint64(total / errEvery)
			// Wait for the disk-full failure and, with a journal that
			// works, for every error record to be in it.
			for {
				err := <-w.calls
				if err == nil {
					continue
				}
				if !errors.Is(err, store.ErrDiskFull) {
					t.Fatalf("store error %v, want ErrDiskFull", err)
				}
				if sameFS {
					if strings.Contains(lb.String(), "cannot write the spill journal") || strings.Contains(lb.String(), "spill journal can't be used") {
						break
					}
					continue
				}
				var n uint64
				_, jn := q.SpillCounts()
				for _, v := range jn {
					n += v
				}
				if n == wantErrs {
					break
				}
			}
			msg := fmt.Sprintf(`msg="store %s is on a full disk: error records are`, db)
			if n := lb.count(msg); n != 1 {
				t.Fatalf("want one %q line, got %d:\n%s", msg, n, lb)
			}
			if !sameFS {
				segs, _ := filepath.Glob(filepath.Join(spill, "*.jnl"))
				if len(segs) == 0 {
					t.Fatalf("no journal segment in %s", spill)
				}
			}
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			q.Close()
			if err := <-done; err != nil {
				t.Fatalf("Drain: %v", err)
			}
			if !strings.Contains(lb.String(), "writes resumed") {
				t.Errorf("no resumed message:\n%s", lb)
			}
			checkInvariant(t, q, &p)
			got, err := st.Errors(context.Background(), store.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			if uint64(len(got)) != wantErrs {
				t.Errorf("store has %d error records, want %d", len(got), wantErrs)
			}
			if _, err := os.Stat(spill); !os.IsNotExist(err) {
				t.Errorf("journal %s still there: %v", spill, err)
			}
			t.Logf("log:\n%s", lb)
		})
	}
}

// TestRealStoreDuplicateIsConstraint pins what writeSingly relies on: the
// real store's duplicate id reads as a refusal, not as an outage.
func TestRealStoreDuplicateIsConstraint(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "obs.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := []record.Call{call("main.once", record.StatusError)}
	if err := st.WriteCalls(c); err != nil {
		t.Fatal(err)
	}
	err = st.WriteCalls(c)
	if f := (notifyWriter{}).Classify(err); !f.Refused || f.Kind != "other" {
		t.Fatalf("duplicate write: %v reads as %+v, want refused", err, f)
	}
}
