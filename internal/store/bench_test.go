package store

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/sqliteconf"
)

// genCalls makes n realistic call records starting at id first: ~200
// functions, call trees of depth <= 6 with parent ids, a few goroutines,
// durations from a log-normal-ish spread, and 20% errors carrying ~40 bytes
// of text.
func genCalls(rng *rand.Rand, first uint64, start time.Time, n int) []record.Call {
	fns := make([]string, 200)
	for i := range fns {
		fns[i] = fmt.Sprintf("github.com/acme/api/pkg%02d.(*Server).Handler%03d", i%17, i)
	}
	calls := make([]record.Call, n)
	t := start.UnixNano()
	var stack []uint64
	for i := range calls {
		id := first + uint64(i)
		var parent uint64
		if len(stack) > 0 && rng.IntN(4) != 0 {
			parent = stack[len(stack)-1]
		}
		if len(stack) < 6 {
			stack = append(stack, id)
		} else {
			stack = stack[:rng.IntN(3)]
		}
		t += int64(rng.IntN(4000))
		c := record.Call{
			ID: id, ParentID: parent, PID: 4242, GoID: uint64(1 + rng.IntN(64)),
			Function: fns[rng.IntN(len(fns))],
			Start:    t, Duration: int64(1 << uint(8+rng.IntN(16))),
		}
		if rng.IntN(benchErrEvery) == 0 {
			c.Status = record.StatusError
			c.ErrorType = "*errors.errorString"
			c.Error = fmt.Sprintf("open /var/data/file-%06d.json: denied", rng.IntN(1e6))
		}
		calls[i] = c
	}
	return calls
}

// BenchmarkWriteCalls measures WriteCalls in batches of 5,000 realistic
// records on a file store (WAL, synchronous=NORMAL, 16 KiB pages), and
// reports records/s (wall) and records/cpu-s (this process's CPU time; the
// dev VM is shared, so wall rates swing with other load).
//
// Measured on the 2-core dev VM, -benchtime 400000x, 4 runs:
// 323k, 352k, 400k, 426k records/s (308k-401k records/cpu-s), before the
// connection mutexes were no-ops and the rows bound on SQLite's handle.
// Since (2026-11-30 17:28, load average 7-9, so the wall rate says little):
// 361k-372k records/cpu-s (248k-262k records/s) at 20% errors, 438k-446k
// (308k-356k) at 1%; BenchmarkWriteOldNew gives the ratios to the path
// before in one run (docs/performance.md). With rows that append bound a
// NULL rowid and no NOT NULL constraints (2026-11-30 20:16, load average
// 6): 590k-602k records/cpu-s at 1% errors, 486k at 20%.
// OBS_BENCH_INDEXES=1|2|3 adds the indexes compared in partitionDDL.
func BenchmarkWriteCalls(b *testing.B) {

	const batch = 5000
	dir := b.TempDir()
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	s, err := Open(filepath.Join(dir, "bench.db"), Options{Clock: func() time.Time { return base }})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	// Pre-generate so the generator isn't measured; ids continue across
	// batches and starts stay inside a few hours.
	pool := genCalls(rng, 1, base, 200_000)
	span := pool[len(pool)-1].Start - pool[0].Start + 1
	b.ResetTimer()
	cpu0 := cpuTime()
	var written int
	next := uint64(1)
	for written < b.N {
		n := min(batch, b.N-written)
		chunk := make([]record.Call, n)
		off := written % len(pool)
		for i := range chunk {
			c := pool[(off+i)%len(pool)]
			c.ID = next + uint64(i)
			if c.ParentID != 0 {
				c.ParentID = next + uint64(i) - 1
			}
			c.Start += int64((off+i)/len(pool)) * span
			chunk[i] = c
		}
		if err := s.WriteCalls(chunk); err != nil {
			b.Fatal(err)
		}
		next += uint64(n)
		written += n
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	// records per CPU second of this process: the machine is shared, so
	// wall-clock rates swing with other load; this one doesn't.
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "records/cpu-s")
}

// cpuTime is the user+system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchErrEvery makes one call in benchErrEvery an error (default 5, 20%,
// the worst case for the error lane); OBS_BENCH_ERR_EVERY=100 gives 1%.
var benchErrEvery = 5

func init() {
	if v, err := strconv.Atoi(os.Getenv("OBS_BENCH_ERR_EVERY")); err == nil && v > 0 {
		benchErrEvery = v
	}
	// OBS_BENCH_INDEXES=0|1|2 creates the calls partitions with no index,
	// (start_ns), or (start_ns)+(parent_id), to measure their cost.
	if v := os.Getenv("OBS_BENCH_INDEXES"); v != "" {
		benchIndexes, _ = strconv.Atoi(v)
	}
}

// BenchmarkWriteOldNew measures, in one run, the write rate of five
// paths, in rotating rounds of 200,000 records (5,000-record batches,
// BenchmarkWriteCalls's records) each on a fresh store, so that all see
// the same load of the shared machine:
//   - old: the rows only, every row binding all 11 columns, in order, as
//     the store wrote before the read structures (benchOldWrite,
//     benchFullRows);
//   - full: the rows bound the same way, with the read structures (the
//     hour's spans and id ranges, the error lane, the partition's row
//     count and write generation): the write path before ok rows had
//     statements of their own (benchFullRows);
//   - before: today's path as it was before SQLite's connection mutexes
//     were made no-ops (internal/sqliteconf) and the cuts made with it
//     (benchBefore): the store opened with real connection mutexes;
//   - explicit: today's path as it was before rows that append to the
//     table were bound a NULL rowid (benchExplicitIDs, see rowidTail) and
//     values a statement's parameter holds already were left as they are
//     (benchRebind, see rawStmt): every row binds its id, and SQLite
//     searches the b-tree for it, and every value is bound;
//   - new: today's path (ok rows bind 7 columns, see insertCalls).
//
// old, full and before all run with real connection mutexes.
// It reports each path's records/s over all its rounds, records per CPU
// second, the new/old, new/full, new/before and new/explicit ratios of
// both, and the size of each path's store in bytes per record (ok rows
// and other rows inserted through separate statements leave some pages
// less full).
// OBS_BENCH_ROUNDS sets the rounds per path (default 4).
// OBS_BENCH_ORDER=agent gives each batch in the order the agent's queue
// does (agentOrder) instead of in id order. OBS_BENCH_SHAPE=flood gives
// the records the shape of `load flood 2`'s (floodShape).
func BenchmarkWriteOldNew(b *testing.B) {
	rounds := benchRounds(4)
	const perRound, batch = 200_000, 5000
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	pool := genCalls(rand.New(rand.NewPCG(1, 2)), 1, base, perRound)
	if os.Getenv("OBS_BENCH_SHAPE") == "flood" {
		floodShape(pool)
	}
	if os.Getenv("OBS_BENCH_ORDER") == "agent" {
		for off := 0; off < perRound; off += batch {
			agentOrder(pool[off : off+batch])
		}
	}
	const old, full, before, explicit, cur = 0, 1, 2, 3, 4
	const paths = 5
	var wall, cpu [paths]time.Duration
	var size [paths]int64
	noop := sqliteconf.SetConnMutexNoop(true)
	defer func() {
		benchOldWrite, benchFullRows, benchBefore, benchExplicitIDs, benchRebind = false, false, false, false, false
		sqliteconf.SetConnMutexNoop(noop)
	}()
	for i := 0; i < b.N; i++ {
		for r := range paths * rounds {
			// old, full, before, explicit, new, full, before, ..., old, ...
			path := (r + r/paths) % paths
			benchOldWrite, benchFullRows, benchBefore = path == old, path == old || path == full, path < explicit
			benchExplicitIDs, benchRebind = path == explicit, path == explicit
			sqliteconf.SetConnMutexNoop(path >= explicit)
			dbPath := filepath.Join(b.TempDir(), "bench.db")
			s, err := Open(dbPath, Options{Clock: func() time.Time { return base }, NoBackgroundBuild: true})
			if err != nil {
				b.Fatal(err)
			}
			w0, c0 := time.Now(), cpuTime()
			for off := 0; off < perRound; off += batch {
				if err := s.WriteCalls(pool[off : off+batch]); err != nil {
					b.Fatal(err)
				}
			}
			wall[path] += time.Since(w0)
			cpu[path] += cpuTime() - c0
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			fi, err := os.Stat(dbPath)
			if err != nil {
				b.Fatal(err)
			}
			size[path] += fi.Size()
		}
	}
	n := float64(b.N * rounds * perRound)
	rate := func(d time.Duration) float64 { return n / d.Seconds() }
	for p, name := range []string{"old", "full", "before", "explicit", "new"} {
		b.ReportMetric(rate(wall[p]), name+"-records/s")
		b.ReportMetric(rate(cpu[p]), name+"-records/cpu-s")
		b.ReportMetric(float64(size[p])/n, name+"-bytes/record")
	}
	b.ReportMetric(rate(wall[cur])/rate(wall[old]), "new/old")
	b.ReportMetric(rate(cpu[cur])/rate(cpu[old]), "new/old-cpu")
	b.ReportMetric(rate(wall[cur])/rate(wall[full]), "new/full")
	b.ReportMetric(rate(cpu[cur])/rate(cpu[full]), "new/full-cpu")
	b.ReportMetric(rate(wall[cur])/rate(wall[before]), "new/before")
	b.ReportMetric(rate(cpu[cur])/rate(cpu[before]), "new/before-cpu")
	b.ReportMetric(rate(wall[cur])/rate(wall[explicit]), "new/explicit")
	b.ReportMetric(rate(cpu[cur])/rate(cpu[explicit]), "new/explicit-cpu")
}

// floodShape gives genCalls' records the shape of those of `load flood
// 2`: one process, one function, two goroutines taking turns, no parents,
// a call every 6 µs lasting 3 µs; ids and errors stay.
func floodShape(calls []record.Call) {
	t := calls[0].Start
	for i := range calls {
		c := &calls[i]
		c.PID, c.GoID, c.ParentID, c.Function = 777, uint64(1+i%2), 0, "main.work"
		t += 6000
		c.Start, c.Duration = t, 3000
	}
}

// benchRounds is $OBS_BENCH_ROUNDS, or def.
func benchRounds(def int) int {
	if v, err := strconv.Atoi(os.Getenv("OBS_BENCH_ROUNDS")); err == nil && v > 0 {
		return v
	}
	return def
}

// agentOrder puts a batch in the order the agent's queue hands it to the
// store: the errors first (the queue's error lane), then the ok calls;
// each in the order the calls returned (their end time), since the agent
// gets a call's record when it returns while its id was taken when it
// entered.
func agentOrder(batch []record.Call) {
	slices.SortStableFunc(batch, func(a, b record.Call) int {
		aok, bok := a.Status == record.StatusOK, b.Status == record.StatusOK
		if aok != bok {
			if aok {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.Start+a.Duration, b.Start+b.Duration)
	})
}

// threadCPU is the CPU time of the calling OS thread (RUSAGE_THREAD); the
// caller locks its goroutine to the thread.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1, &ru); err != nil { // 1: RUSAGE_THREAD
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runDelay is how long this thread has waited on a run queue for a core
// (the second field of /proc/thread-self/schedstat), or 0 when unknown.
func runDelay() time.Duration {
	b, err := os.ReadFile("/proc/thread-self/schedstat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	ns, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return time.Duration(ns)
}

// stepMeter takes the CPU time of each step of a background operation and
// its longest blocked time (wall minus CPU minus run-queue delay) from
// readings right after each step: the pause before the next step sleeps,
// so it costs no CPU and no run-queue delay but the wakeup's.
type stepMeter struct {
	cpu           []time.Duration
	blocked, c, d time.Duration
}

func newStepMeter() *stepMeter { return &stepMeter{c: threadCPU(), d: runDelay()} }

// step records a step that took took, from asking for the lock to the end
// of its commit.
func (m *stepMeter) step(took time.Duration) {
	c, d := threadCPU(), runDelay()
	m.cpu = append(m.cpu, c-m.c)
	m.blocked = max(m.blocked, took-(c-m.c)-(d-m.d))
	m.c, m.d = c, d
}

// BenchmarkLockHolds measures how long each background operation on a
// closed 1M-call hour (BenchmarkWriteCalls's records) holds the write lock,
// that is, the longest a WriteCalls can wait for it: each step of the
// build of the hour's read structures (BuildDerived), the dropping
// transaction of a verified drop (DropHourIf after its snapshot), and each
// step that frees the dropped tables' pages (EmptyTrash). It reports wall
// and CPU time (of this goroutine's locked thread: the machine is shared,
// and CPU time is what the wall time would be on an idle core), the
// maximum and the 99th percentile of the steps, and the median CPU time of
// a 5,000-call WriteCalls batch in the same run for scale.
//
// The *-blocked metrics are wall time minus CPU time minus the time the
// thread waited for a core (its run-queue delay, /proc/thread-self/schedstat):
// what a hold spent waiting for the disk or for another lock, which load
// on the machine does not explain. Before the WAL was reused in place and
// statement journals kept in memory, that was up to 80 ms of a build step
// on a quiet machine (docs/performance.md, "What the writer waited for").
// After (2026-11-30 17:44, load average 9-11): build steps at most 26.2 ms
// CPU (p99 14.9), the dropping transaction 16.3 ms CPU and 0.6 ms blocked,
// the largest DROP TABLE 34.6 ms CPU and 2.5 ms blocked. This benchmark
// runs no writer, so its build steps still start the WAL over themselves
// (leaveRestartToWriter gives up after 250 ms) and include that sync.
func BenchmarkLockHolds(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const perHour, batch = 1_000_000, 5000
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	now := base.Add(3 * time.Hour)
	ctx := context.Background()
	pct := func(ds []time.Duration, p float64) float64 {
		if len(ds) == 0 {
			return 0
		}
		ds = slices.Clone(ds)
		slices.Sort(ds)
		return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))]) / 1e6
	}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := b.TempDir()
		s, err := Open(filepath.Join(dir, "bench.db"), Options{Clock: func() time.Time { return now }, NoBackgroundBuild: true})
		if err != nil {
			b.Fatal(err)
		}
		pool := genCalls(rand.New(rand.NewPCG(1, 2)), 1, base, perHour)
		var writeCPU []time.Duration
		for off := 0; off < perHour; off += batch {
			c0 := threadCPU()
			if err := s.WriteCalls(pool[off : off+batch]); err != nil {
				b.Fatal(err)
			}
			writeCPU = append(writeCPU, threadCPU()-c0)
		}
		b.StartTimer()

		bm := newStepMeter()
		buildStepHook = bm.step
		rep, err := s.BuildDerived(ctx)
		buildStepHook = nil
		if err != nil {
			b.Fatal(err)
		}
		stepCPU, blocked := bm.cpu, bm.blocked
		b.ReportMetric(float64(rep.Steps), "build-steps")
		b.ReportMetric(float64(rep.Max)/1e6, "build-step-max-ms")
		b.ReportMetric(pct(stepCPU, 1), "build-step-max-cpu-ms")
		b.ReportMetric(pct(stepCPU, 0.99), "build-step-p99-cpu-ms")
		b.ReportMetric(float64(blocked)/1e6, "build-step-max-blocked-ms")

		arch := filepath.Join(dir, "a.db")
		a, err := Open(arch, Options{Exclusive: true, NoBackgroundBuild: true})
		if err != nil {
			b.Fatal(err)
		}
		a.Close()
		if err := s.CopyHourTo(ctx, base, arch); err != nil {
			b.Fatal(err)
		}
		fp, err := ArchiveFingerprint(ctx, arch, base)
		if err != nil {
			b.Fatal(err)
		}
		var dw0 time.Time
		var dc0, dd0 time.Duration
		dropTxHook = func() { dw0, dc0, dd0 = time.Now(), threadCPU(), runDelay() }
		err = s.DropHourIf(ctx, base, arch, fp)
		dropWall, dropCPU, dropDelay := time.Since(dw0), threadCPU()-dc0, runDelay()-dd0
		dropTxHook = nil
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(dropWall)/1e6, "drop-tx-ms")
		b.ReportMetric(float64(dropCPU)/1e6, "drop-tx-cpu-ms")
		b.ReportMetric(float64(dropWall-dropCPU-dropDelay)/1e6, "drop-tx-blocked-ms")

		tm := newStepMeter()
		trashStepHook = tm.step
		steps, longest, err := s.EmptyTrash(ctx)
		trashStepHook = nil
		tcpu, tblocked := tm.cpu, tm.blocked
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(steps), "trash-steps")
		b.ReportMetric(float64(longest)/1e6, "trash-step-max-ms")
		b.ReportMetric(pct(tcpu, 1), "trash-step-max-cpu-ms")
		b.ReportMetric(pct(tcpu, 0.99), "trash-step-p99-cpu-ms")
		b.ReportMetric(float64(tblocked)/1e6, "trash-step-max-blocked-ms")
		b.ReportMetric(pct(writeCPU, 0.5), "batch-median-cpu-ms")
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
}
