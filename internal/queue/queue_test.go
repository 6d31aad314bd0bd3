package queue

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// fakeWriter is a Writer whose failures are switched by the test. Every
// call is reported on calls (when set) after it is decided, so tests wait
// on events, not on time.
type fakeWriter struct {
	mu      sync.Mutex
	fail    error // returned while non-nil; nothing is written
	written []record.Call
	ids     map[uint64]bool
	nfail   int
	calls   chan error                // optional: each call's result, sent without blocking
	hook    func(batch []record.Call) // optional: runs first, outside mu
}

func (w *fakeWriter) WriteCalls(batch []record.Call) error {
	if w.hook != nil {
		w.hook(batch)
	}
	w.mu.Lock()
	err := w.fail
	if err == nil {
		if w.ids == nil {
			w.ids = map[uint64]bool{}
		}
		for i := range batch {
			if w.ids[batch[i].ID] {
				err = fmt.Errorf("write calls: UNIQUE constraint failed: calls.id (%d): %w", batch[i].ID, errDuplicate)
			}
		}
	}
	if err == nil {
		for i := range batch {
			w.ids[batch[i].ID] = true
		}
		w.written = append(w.written, batch...)
	} else {
		w.nfail++
	}
	w.mu.Unlock()
	if w.calls != nil {
		select {
		case w.calls <- err:
		default:
		}
	}
	return err
}

// errDuplicate is the fake destination's refusal of a record it holds.
var errDuplicate = errors.New("duplicate id")

// downErr is a kind of outage of the fake destination.
type downErr struct{ kind, what string }

func (e *downErr) Error() string { return e.kind }

// The outage kinds the tests switch on (a store's, for the messages).
var (
	errLocked   = &downErr{"locked", "is locked by another writer"}
	errReadOnly = &downErr{"read-only", "is read-only"}
	errDiskFull = &downErr{"disk-full", "is on a full disk"}
	errCorrupt  = &downErr{"corrupt", "is corrupt"}
)

// Classify reads the fake's errors as a sink's Writer does its own.
func (w *fakeWriter) Classify(err error) Failure { return classifyFake(err) }

func classifyFake(err error) Failure {
	var d *downErr
	switch {
	case errors.Is(err, errDuplicate):
		return Failure{Refused: true, Kind: "refused"}
	case errors.As(err, &d):
		return Failure{Kind: d.kind, What: d.what}
	}
	return Failure{Kind: "other"}
}

func (w *fakeWriter) setFail(err error) {
	w.mu.Lock()
	w.fail = err
	w.mu.Unlock()
}

func (w *fakeWriter) snapshot() []record.Call {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]record.Call(nil), w.written...)
}

// storeErr wraps an outage kind the way a writer's errors do.
func storeErr(kind error) error {
	return fmt.Errorf("store: write calls: %w: %w", kind, errors.New("driver says no"))
}

// logBuf is a slog handler target that tests can read concurrently.
type logBuf struct{ testutil.SyncBuffer }

func (l *logBuf) count(s string) int { return strings.Count(l.String(), s) }

func newLogger() (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

var nextID atomic.Uint64

func call(fn string, st record.Status) record.Call {
	c := record.Call{ID: nextID.Add(1), PID: 42, GoID: 7, Function: fn, Start: time.Now().UnixNano(), Duration: 1000, Status: st}
	if st != record.StatusOK {
		c.ErrorType = "*errors.errorString"
		c.Error = "boom: " + fn
	}
	return c
}

// fastOpts keeps retries quick.
func fastOpts(o Options) Options {
	o.RetryMin = time.Millisecond
	o.RetryMax = 5 * time.Millisecond
	if o.FlushEvery == 0 {
		o.FlushEvery = 5 * time.Millisecond
	}
	if o.Name == "" {
		o.Name = "store"
	}
	return o
}

func startDrain(q *Queue, w Writer) chan error {
	done := make(chan error, 1)
	go func() { done <- q.Drain(w) }()
	return done
}

// pushed counts what a test pushed, per function.
type pushed struct {
	mu  sync.Mutex
	all map[string]uint64
	err map[string]uint64
}

func (p *pushed) push(q *Queue, c record.Call) {
	p.mu.Lock()
	if p.all == nil {
		p.all, p.err = map[string]uint64{}, map[string]uint64{}
	}
	p.all[c.Function]++
	if c.IsError() {
		p.err[c.Function]++
	}
	p.mu.Unlock()
	q.Push(c)
}

// pushAll is push for a reader's batch, handed over with PushAll.
func (p *pushed) pushAll(q *Queue, cs []record.Call) {
	p.mu.Lock()
	if p.all == nil {
		p.all, p.err = map[string]uint64{}, map[string]uint64{}
	}
	for i := range cs {
		p.all[cs[i].Function]++
		if cs[i].IsError() {
			p.err[cs[i].Function]++
		}
	}
	p.mu.Unlock()
	q.PushAll(cs)
}

// checkInvariant asserts, for every function, pushed == recorded + dropped
// + still in the journal.
func checkInvariant(t *testing.T, q *Queue, p *pushed) {
	t.Helper()
	rec, drop := q.Counts()
	_, jn := q.SpillCounts()
	for fn, n := range p.all {
		if got := rec[fn] + drop[fn] + jn[fn]; got != n {
			t.Errorf("%s: pushed %d != recorded %d + dropped %d + journaled %d", fn, n, rec[fn], drop[fn], jn[fn])
		}
	}
}

func errsByFunc(calls []record.Call) map[string]uint64 {
	m := map[string]uint64{}
	for i := range calls {
		if calls[i].IsError() {
			m[calls[i].Function]++
		}
	}
	return m
}

func TestOverload(t *testing.T) {
	const (
		producers = 8
		perProd   = 20000
		funcs     = 10
	)
	dir := t.TempDir()
	log, _ := newLogger()
	q := New(fastOpts(Options{
		OKBytes:   64 << 10, // ~500 records
		ErrBytes:  4 << 10,  // ~25 error records, then spill
		SpillDir:  filepath.Join(dir, "obs.db.spill"),
		BatchSize: 200,
		Logger:    log,
	}))
	// A slow store: each batch costs 500 µs, so the writer manages at
	// most ~400k records/s against millions pushed per second. The sleep
	// simulates cost; nothing waits on it.
	w := &fakeWriter{hook: func([]record.Call) { time.Sleep(500 * time.Microsecond) }}
	done := startDrain(q, w)
	var p pushed
	var wg sync.WaitGroup
	for g := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Half the producers push a record at a time, half in
			// batches of 1 to 50 records (PushAll, as a ring reader).
			var batch []record.Call
			for i := range perProd {
				fn := fmt.Sprintf("main.f%d", (g+i)%funcs)
				st := record.StatusOK
				if i%100 == 0 {
					st = record.Status(1 + i/100%3) // error, panic, unfinished
				}
				if g%2 == 0 {
					p.push(q, call(fn, st))
					continue
				}
				batch = append(batch, call(fn, st))
				if len(batch) == 1+(g*7+i)%50 || i == perProd-1 {
					p.pushAll(q, batch)
					batch = batch[:0]
				}
			}
		}()
	}
	wg.Wait()
	q.Close()
	if err := <-done; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	checkInvariant(t, q, &p)
	got := errsByFunc(w.snapshot())
	for fn, n := range p.err {
		if got[fn] != n {
			t.Errorf("%s: %d error records written, %d pushed", fn, got[fn], n)
		}
	}
	_, drop := q.Counts()
	spilled, jn := q.SpillCounts()
	var nd, ns uint64
	for _, v := range drop {
		nd += v
	}
	for _, v := range spilled {
		ns += v
	}
	if nd == 0 {
		t.Error("no ok record was shed: the test did not overload the queue")
	}
	if ns == 0 {
		t.Error("no error record spilled: the test did not overload the error lane")
	}
	if len(jn) != 0 {
		t.Errorf("journal not empty after a clean Drain: %v", jn)
	}
	if _, err := os.Stat(filepath.Join(dir, "obs.db.spill")); !os.IsNotExist(err) {
		t.Errorf("journal directory left behind after everything was written: %v", err)
	}
	t.Logf("pushed %d, ok shed %d, errors spilled %d, store batches of 200", producers*perProd, nd, ns)
}

func TestStoreLockedThenOK(t *testing.T) {
	log, lb := newLogger()
	dir := t.TempDir()
	q := New(fastOpts(Options{SpillDir: filepath.Join(dir, "spill"), BatchSize: 50, Logger: log}))
	w := &fakeWriter{fail: storeErr(errLocked), calls: make(chan error, 1)}
	var p pushed
	for i := range 300 {
		st := record.StatusOK
		if i%10 == 3 {
			st = record.StatusError
		}
		p.push(q, call(fmt.Sprintf("main.g%d", i%3), st))
	}
	done := startDrain(q, w)
	// Let it fail several times: one log message, not one per retry.
	for fails := 0; fails < 5; {
		if err := <-w.calls; err != nil {
			fails++
		}
	}
	if q.StoreError() == nil || !errors.Is(q.StoreError(), errLocked) {
		t.Fatalf("StoreError = %v, want ErrLocked", q.StoreError())
	}
	w.setFail(nil)
	q.Close()
	if err := <-done; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if n := lb.count(`msg="store is locked by another writer`); n != 1 {
		t.Errorf("locked message logged %d times, want 1:\n%s", n, lb)
	}
	if n := lb.count("store: writes resumed"); n != 1 {
		t.Errorf("resumed message logged %d times, want 1:\n%s", n, lb)
	}
	if q.StoreError() != nil {
		t.Errorf("StoreError after recovery = %v", q.StoreError())
	}
	got := w.snapshot()
	if len(got) != 300 {
		t.Fatalf("%d records written, want 300", len(got))
	}
	lastErr, firstOK := -1, len(got)
	for i := range got {
		if got[i].IsError() {
			lastErr = i
		} else if i < firstOK {
			firstOK = i
		}
	}
	if lastErr > firstOK {
		t.Errorf("an ok record (at %d) was written before an error record (at %d)", firstOK, lastErr)
	}
	checkInvariant(t, q, &p)
}

// TestEveryFailureKind: each sentinel gets its own clear message once, and
// error records spill while the store fails.
func TestEveryFailureKind(t *testing.T) {
	kinds := map[error]string{
		errLocked:               "is locked by another writer",
		errReadOnly:             "is read-only",
		errDiskFull:             "is on a full disk",
		errCorrupt:              "is corrupt",
		errors.New("weird one"): "can't be written",
	}
	for kind, phrase := range kinds {
		t.Run(phrase, func(t *testing.T) {
			log, lb := newLogger()
			spill := filepath.Join(t.TempDir(), "spill")
			q := New(fastOpts(Options{SpillDir: spill, BatchSize: 10, Logger: log}))
			w := &fakeWriter{fail: storeErr(kind), calls: make(chan error, 1)}
			var p pushed
			for i := range 40 {
				st := record.StatusOK
				if i%4 == 0 {
					st = record.StatusPanic
				}
				p.push(q, call("main.k", st))
			}
			done := startDrain(q, w)
			// Wait until every error record is in the journal.
			for {
				<-w.calls
				if s, _ := q.SpillCounts(); s["main.k"] == 10 {
					break
				}
			}
			w.setFail(nil)
			q.Close()
			if err := <-done; err != nil {
				t.Fatalf("Drain: %v", err)
			}
			if n := lb.count(`msg="store ` + phrase); n != 1 {
				t.Errorf("%q logged %d times, want once:\n%s", phrase, n, lb)
			}
			if !strings.Contains(lb.String(), "error records are spilling to "+spill) {
				t.Errorf("message does not say where error records go:\n%s", lb)
			}
			if !strings.Contains(lb.String(), "replayed 10 spilled records") {
				t.Errorf("no resumed message with the replayed count:\n%s", lb)
			}
			checkInvariant(t, q, &p)
			if got := len(w.snapshot()); got != 40 {
				t.Errorf("%d written, want 40", got)
			}
		})
	}
}

// TestCloseTimeoutLeavesErrorsInJournal: the store never comes back. At
// the close deadline ok records are counted as dropped, error records stay
// in the journal, Drain says how many and where, and the next run replays
// them.
func TestCloseTimeoutLeavesErrorsInJournal(t *testing.T) {
	log, _ := newLogger()
	spill := filepath.Join(t.TempDir(), "obs.db.spill")
	q := New(fastOpts(Options{SpillDir: spill, BatchSize: 16, CloseTimeout: 20 * time.Millisecond, Logger: log}))
	w := &fakeWriter{fail: storeErr(errReadOnly)}
	var p pushed
	for i := range 100 {
		st := record.StatusOK
		if i%5 == 0 {
			st = record.StatusError
		}
		p.push(q, call(fmt.Sprintf("main.c%d", i%2), st))
	}
	done := startDrain(q, w)
	q.Close()
	err := <-done
	if err == nil {
		t.Fatal("Drain returned nil on a store that never accepted a write")
	}
	want := fmt.Sprintf("20 error records are waiting in the spill journal %s", spill)
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "80 ok records were dropped") || !errors.Is(err, errReadOnly) {
		t.Errorf("Drain error = %v\nwant it to contain %q, the ok count and wrap ErrReadOnly", err, want)
	}
	checkInvariant(t, q, &p)
	_, jn := q.SpillCounts()
	if jn["main.c0"]+jn["main.c1"] != 20 {
		t.Errorf("journaled = %v, want 20 in all", jn)
	}

	// The next run on the same store replays them.
	log2, lb2 := newLogger()
	q2 := New(fastOpts(Options{SpillDir: spill, BatchSize: 16, Logger: log2}))
	if n, err := q2.Recover(); n != 20 || err != nil {
		t.Fatalf("Recover = %d, %v; want 20", n, err)
	}
	w2 := &fakeWriter{}
	done2 := startDrain(q2, w2)
	q2.Close()
	if err := <-done2; err != nil {
		t.Fatal(err)
	}
	if got := errsByFunc(w2.snapshot()); got["main.c0"]+got["main.c1"] != 20 {
		t.Errorf("replayed %v, want 20 error records", got)
	}
	if found, replayed := q2.Recovered(); found != 20 || replayed != 20 {
		t.Errorf("Recovered = %d, %d", found, replayed)
	}
	if rec, _ := q2.Counts(); len(rec) != 0 {
		t.Errorf("records of an earlier run counted as recorded by this one: %v", rec)
	}
	if !strings.Contains(lb2.String(), "earlier run") {
		t.Errorf("replay not logged:\n%s", lb2)
	}
	if _, err := os.Stat(spill); !os.IsNotExist(err) {
		t.Errorf("journal directory not removed after replay: %v", err)
	}
}

// TestCrashReplay: the process dies with error records in the journal
// (the queue is dropped without Close or Drain); a new queue replays them.
// The last record is torn mid-way: the intact ones replay and the torn one
// is reported.
func TestCrashReplay(t *testing.T) {
	spill := filepath.Join(t.TempDir(), "spill")
	log, _ := newLogger()
	q := New(fastOpts(Options{SpillDir: spill, ErrBytes: 1, BatchSize: 1000, Logger: log}))
	var want []record.Call
	for i := range 30 {
		c := call(fmt.Sprintf("main.crash%d", i%3), record.StatusError)
		want = append(want, c)
		q.Push(c)
		// ErrBytes of 1 spills every error record; wait for each spill so
		// the journal holds all 30 in order.
		waitSpilled(t, q, i+1)
	}
	// "Crash": no Close, no Drain. The journal lock is released the way
	// the kernel releases it when a process dies.
	q.jmu.Lock()
	q.jr.lock.Close()
	q.jr.active.Close()
	q.jmu.Unlock()

	segs, _ := filepath.Glob(filepath.Join(spill, "*"+segmentSuffix))
	if len(segs) != 1 {
		t.Fatalf("segments %v, want 1", segs)
	}
	fi, err := os.Stat(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	// Tear the last record: cut 5 bytes off its end.
	if err := os.Truncate(segs[0], fi.Size()-5); err != nil {
		t.Fatal(err)
	}

	log2, lb2 := newLogger()
	q2 := New(fastOpts(Options{SpillDir: spill, Logger: log2}))
	w := &fakeWriter{}
	done := startDrain(q2, w)
	q2.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := w.snapshot()
	if len(got) != 29 {
		t.Fatalf("replayed %d records, want the 29 intact ones", len(got))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("record %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if !strings.Contains(lb2.String(), "torn record") || !strings.Contains(lb2.String(), "intact_records=29") {
		t.Errorf("torn record not reported:\n%s", lb2)
	}
	if found, replayed := q2.Recovered(); found != 29 || replayed != 29 {
		t.Errorf("Recovered = %d, %d; want 29, 29", found, replayed)
	}
}

func waitSpilled(t *testing.T, q *Queue, n int) {
	t.Helper()
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.spilling || q.jready < n {
		if !q.spilling && len(q.errs) > 0 {
			q.kickSpill()
		}
		if q.jrErr != nil {
			t.Fatalf("journal: %v", q.jrErr)
		}
		q.cond.Wait()
	}
}

// TestJournalUnwritable: when the journal can't be written either, error
// records stay in memory within their bound (none dropped) and it is said
// once.
func TestJournalUnwritable(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "not-a-dir")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	log, lb := newLogger()
	q := New(fastOpts(Options{SpillDir: filepath.Join(blocker, "spill"), ErrBytes: 1 << 20, BatchSize: 8, Logger: log}))
	w := &fakeWriter{fail: storeErr(errDiskFull), calls: make(chan error, 1)}
	var p pushed
	for range 40 {
		p.push(q, call("main.u", record.StatusError))
	}
	done := startDrain(q, w)
	for range 3 {
		<-w.calls
	}
	w.setFail(nil)
	q.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := errsByFunc(w.snapshot())["main.u"]; got != 40 {
		t.Errorf("%d error records written, want 40", got)
	}
	if n := lb.count(`msg="spill journal can't be used`); n != 1 {
		t.Errorf("journal failure logged %d times, want 1:\n%s", n, lb)
	}
	if !strings.Contains(lb.String(), "kept in memory") {
		t.Errorf("log does not say where the records are:\n%s", lb)
	}
	checkInvariant(t, q, &p)
}

// TestErrorLaneBoundLosesCounted: with the store and the journal both
// failing, the error lane holds what fits its bound; every error record
// past it is lost, counted per function, and the loss is logged once.
// Once the store is back, what was kept is written.
func TestErrorLaneBoundLosesCounted(t *testing.T) {
	blocker := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	log, lb := newLogger()
	one := call("main.a", record.StatusError)
	const fit = 10
	q := New(fastOpts(Options{SpillDir: filepath.Join(blocker, "spill"), ErrBytes: fit * recordSize(&one), BatchSize: 8, Logger: log}))
	if _, err := q.Recover(); err == nil {
		t.Fatal("journal under a regular file opened")
	}
	var p pushed
	for i := range 100 {
		p.push(q, call([]string{"main.a", "main.b"}[i%2], record.StatusError))
	}
	lost := q.ErrorsLost()
	if lost["main.a"]+lost["main.b"] != 100-fit || lost["main.a"] != lost["main.b"] {
		t.Fatalf("errors lost %v, want %d split evenly", lost, 100-fit)
	}
	if n := lb.count(`msg="error records are being lost`); n != 1 {
		t.Errorf("loss logged %d times, want 1:\n%s", n, lb)
	}
	w := &fakeWriter{}
	done := startDrain(q, w)
	q.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := len(w.snapshot()); got != fit {
		t.Errorf("%d error records written, want the %d kept", got, fit)
	}
	checkInvariant(t, q, &p)
	if _, drop := q.Counts(); drop["main.a"] != lost["main.a"] {
		t.Errorf("dropped %v does not include the lost errors %v", drop, lost)
	}
}

// TestErrorLaneBoundWaitsForJournal: with a working journal, a lane far
// smaller than the burst loses nothing: pushers wait for the spill.
func TestErrorLaneBoundWaitsForJournal(t *testing.T) {
	one := call("main.w", record.StatusError)
	q := New(fastOpts(Options{SpillDir: filepath.Join(t.TempDir(), "spill"), ErrBytes: 4 * recordSize(&one), BatchSize: 50}))
	var p pushed
	for range 500 {
		p.push(q, call("main.w", record.StatusError))
	}
	if lost := q.ErrorsLost(); len(lost) != 0 {
		t.Fatalf("errors lost %v with a working journal", lost)
	}
	q.mu.Lock()
	inMem := q.errBytes + q.spillSize
	q.mu.Unlock()
	if inMem > q.opts.ErrBytes {
		t.Errorf("error lane holds %d bytes, bound %d", inMem, q.opts.ErrBytes)
	}
	w := &fakeWriter{}
	done := startDrain(q, w)
	q.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := errsByFunc(w.snapshot())["main.w"]; got != 500 {
		t.Errorf("%d error records written, want 500", got)
	}
	checkInvariant(t, q, &p)
}

// TestIdleThenPush is the regression test for take() reporting "closed"
// on an empty batch after the flush timeout: records pushed after more
// than FlushEvery of idleness must still be written.
func TestIdleThenPush(t *testing.T) {
	q := New(fastOpts(Options{FlushEvery: time.Millisecond}))
	idle := make(chan struct{}, 1)
	q.testIdle = func() {
		select {
		case idle <- struct{}{}:
		default:
		}
	}
	w := &fakeWriter{calls: make(chan error, 1)}
	done := startDrain(q, w)
	for range 3 { // three empty flush timeouts in a row
		<-idle
	}
	select {
	case err := <-done:
		t.Fatalf("Drain returned while idle and not closed: %v", err)
	default:
	}
	q.Push(call("main.late", record.StatusOK))
	q.Push(call("main.late", record.StatusError))
	for n := 0; n < 2; n = len(w.snapshot()) {
		<-w.calls
	}
	q.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if rec, _ := q.Counts(); rec["main.late"] != 2 {
		t.Errorf("recorded %v, want 2", rec)
	}
}

// TestFlushTimerFiresBeforeWait forces the interleaving the CI run's
// -race build hit: the flush timer fires after take armed it but before
// take waits. The wakeup must still arrive (the timer takes the queue's
// lock before it broadcasts); before the fix it went to nobody and Drain
// slept until the next Push, for ever in an idle program.
func TestFlushTimerFiresBeforeWait(t *testing.T) {
	q := New(fastOpts(Options{FlushEvery: time.Millisecond}))
	fired := make(chan struct{}, 1)
	q.testTimerFired = func() { fired <- struct{}{} }
	q.testBeforeWait = func() { <-fired } // the timer has fired; we still hold mu
	idle := make(chan struct{}, 1)
	q.testIdle = func() {
		select {
		case idle <- struct{}{}:
		default:
		}
	}
	done := startDrain(q, &fakeWriter{})
	for i := range 3 {
		select {
		case <-idle:
		case <-time.After(time.Minute): // a failure bound, not a wait for a result
			t.Fatalf("flush timeout %d never woke take: the timer's wakeup was lost", i+1)
		}
	}
	q.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestNoSpillDirGivesUpCounted: without a journal, error records still
// unwritten at the close deadline are lost, counted and said so.
func TestNoSpillDirGivesUpCounted(t *testing.T) {
	log, _ := newLogger()
	q := New(fastOpts(Options{CloseTimeout: 10 * time.Millisecond, Logger: log}))
	var p pushed
	p.push(q, call("main.n", record.StatusError))
	p.push(q, call("main.n", record.StatusOK))
	w := &fakeWriter{fail: storeErr(errCorrupt)}
	done := startDrain(q, w)
	q.Close()
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "1 error records could not be kept and are lost (no spill directory)") {
		t.Fatalf("Drain = %v", err)
	}
	checkInvariant(t, q, &p)
}

func BenchmarkPushDrain(b *testing.B) {
	q := New(Options{OKBytes: 256 << 20, Logger: slog.New(slog.DiscardHandler)})
	done := startDrain(q, nopWriter{})
	c := call("main.bench", record.StatusOK)
	e := call("main.bench", record.StatusError)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%100 == 0 {
			q.Push(e)
		} else {
			q.Push(c)
		}
	}
	q.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	rec, drop := q.Counts()
	if rec["main.bench"] != uint64(b.N) || drop["main.bench"] != 0 {
		b.Fatalf("recorded %d, dropped %d of %d", rec["main.bench"], drop["main.bench"], b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

type nopWriter struct{}

func (nopWriter) WriteCalls([]record.Call) error { return nil }

func (nopWriter) Classify(error) Failure { return Failure{} }

// TestReplayAfterCommitBeforeDelete: a crash after the store committed a
// segment but before the segment was deleted makes the next run replay
// records the store already has. The store refuses the batch (duplicate
// ids); the queue must not wedge on it: it writes the segment record by
// record, reports the refused ones, and goes on.
func TestReplayAfterCommitBeforeDelete(t *testing.T) {
	spill := filepath.Join(t.TempDir(), "spill")
	log, _ := newLogger()
	q := New(fastOpts(Options{SpillDir: spill, CloseTimeout: time.Millisecond, Logger: log}))
	var errs []record.Call
	for range 20 {
		c := call("main.dup", record.StatusError)
		errs = append(errs, c)
		q.Push(c)
	}
	done := startDrain(q, &fakeWriter{fail: storeErr(errLocked)})
	q.Close()
	if err := <-done; err == nil {
		t.Fatal("want the give-up error")
	}
	// The "store" already holds the first 10 of them.
	w := &fakeWriter{ids: map[uint64]bool{}}
	for _, c := range errs[:10] {
		w.ids[c.ID] = true
	}
	log2, lb2 := newLogger()
	q2 := New(fastOpts(Options{SpillDir: spill, Logger: log2}))
	q2.Push(call("main.after", record.StatusError))
	done2 := startDrain(q2, w)
	q2.Close()
	if err := <-done2; err != nil {
		t.Fatal(err)
	}
	got := w.snapshot()
	if len(got) != 11 || got[10].Function != "main.after" {
		t.Fatalf("wrote %d records (%v), want the 10 new replayed ones, then main.after", len(got), got)
	}
	if !strings.Contains(lb2.String(), "refused=10") {
		t.Errorf("refused records not reported:\n%s", lb2)
	}
	if _, err := os.Stat(spill); !os.IsNotExist(err) {
		t.Errorf("journal left: %v", err)
	}
}

func BenchmarkPushDrainParallel(b *testing.B) {
	q := New(Options{OKBytes: 256 << 20, Logger: slog.New(slog.DiscardHandler)})
	done := startDrain(q, nopWriter{})
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := call("main.bench", record.StatusOK)
		e := call("main.bench", record.StatusError)
		i := 0
		for pb.Next() {
			if i%100 == 0 {
				q.Push(e)
			} else {
				q.Push(c)
			}
			i++
		}
	})
	q.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkPushBacklog: a sink behind a flood. Bursts of 50,000 records
// are pushed while the writer is away, then taken in batches: the ok
// lane grows to hold them, and is emptied, again and again.
func BenchmarkPushBacklog(b *testing.B) {
	const burst = 50_000
	q := New(Options{OKBytes: 256 << 20, Logger: slog.New(slog.DiscardHandler)})
	c := call("main.bench", record.StatusOK)
	var buf []record.Call
	b.ReportAllocs()
	for range b.N {
		for range burst {
			q.Push(c)
		}
		for n := 0; n < burst; n += len(buf) {
			buf, _ = q.take(buf, false, false)
			q.settle()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*burst), "ns/record")
}

// TestPushAllAsPush: PushAll queues, sheds and counts exactly as Push
// does each record in turn: the same records written, in the same order,
// and the same ones shed, with the ok lane bound met part-way through a
// batch.
func TestPushAllAsPush(t *testing.T) {
	var recs []record.Call
	for i := range 300 {
		st := record.StatusOK
		if i%7 == 3 {
			st = record.StatusError
		}
		recs = append(recs, call(fmt.Sprintf("main.f%d", i/40), st))
	}
	opts := fastOpts(Options{OKBytes: 150 * 128, ErrBytes: 1 << 20, BatchSize: 64})
	one, all := New(opts), New(opts)
	for i := range recs {
		one.Push(recs[i])
	}
	for i := 0; i < len(recs); i += 37 {
		all.PushAll(recs[i:min(i+37, len(recs))])
	}
	var w [2]fakeWriter
	for k, q := range []*Queue{one, all} {
		q.Close()
		if err := q.Drain(&w[k]); err != nil {
			t.Fatalf("Drain: %v", err)
		}
	}
	a, b := w[0].snapshot(), w[1].snapshot()
	if len(a) != len(b) || len(a) == len(recs) {
		t.Fatalf("Push wrote %d records, PushAll %d, of %d pushed: want the same, with some shed", len(a), len(b), len(recs))
	}
	for i := range a {
		if a[i].ID != b[i].ID {
			t.Fatalf("record %d: Push wrote call %d, PushAll call %d", i, a[i].ID, b[i].ID)
		}
	}
	rec1, drop1 := one.Counts()
	rec2, drop2 := all.Counts()
	if fmt.Sprint(rec1, drop1) != fmt.Sprint(rec2, drop2) {
		t.Errorf("ledgers differ: Push recorded %v dropped %v; PushAll recorded %v dropped %v", rec1, drop1, rec2, drop2)
	}
}

// TestCountRuns: a batch is counted per function whatever its runs.
func TestCountRuns(t *testing.T) {
	m := map[string]uint64{"b": 1}
	var batch []record.Call
	for _, f := range []string{"a", "a", "b", "a", "c", "c", "c", "a"} {
		batch = append(batch, record.Call{Function: f})
	}
	countRuns(m, batch)
	countRuns(m, nil)
	if fmt.Sprint(m) != "map[a:4 b:2 c:3]" {
		t.Errorf("counted %v, want a:4 b:2 c:3", m)
	}
}
