package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
)

// followEvery is how often the follower checks the processes it knows
// (exited?) and those the events named (the traced file's?), and
// scanEvery how often it reads all of /proc for processes of the file that
// made no traced call yet. Neither bounds what is traced (the probes are
// on the file, so every process is traced from its first instruction
// whether or not the follower has seen it): they bound how late a
// process's row appears, and how long the frames an exited process left
// open wait to be closed. A full scan costs about 1 ms per 160 /proc
// entries here (BenchmarkFollowerScan), hence the slower pace.
const (
	followEvery = 100 * time.Millisecond
	scanEvery   = time.Second
)

// maxGone bounds the memory of exited pids (see follower.gone).
const maxGone = 1 << 14

// follower keeps track of the processes of one executable file traced by
// AttachExe: it finds them in /proc (by device and inode of /proc/PID/exe,
// never by name) and in the events themselves (a process that lived a few
// milliseconds may be gone before any scan sees it, but its calls carry
// its pid), stores one row per process, closes the frames a process left
// open when it exits, and keeps the per-process aggregates that
// `query stats --pid` reads.
type follower struct {
	s        *session
	log      *slog.Logger
	path     string
	dev, ino uint64
	buildID  string
	// scope, for a cgroup target, is the cgroup a process must be in to
	// be followed (the probes' filter keeps the others' calls out).
	scope *cgroup

	mu sync.Mutex
	// procs are the processes known to run, by host pid.
	procs map[uint32]*followed
	// pending are pids seen in events but not yet looked at in /proc,
	// with the earliest and latest call times seen.
	pending map[uint32]*followed
	// gone are pids that exited, so that their late events (still in
	// the rings when the exit was seen) do not bring them back. A reused
	// pid is taken out when a scan finds its new process.
	gone map[uint32]bool
	// agg is the cumulative per-(pid, function) aggregates of the calls
	// that reached the agent, in order of first appearance (writeStats
	// diffs snapshots by position).
	agg []record.FuncStats
	idx map[aggKey]int
}

// aggKey is a process and a function id: integers, cheaper to hash on
// every record than the function's name.
type aggKey struct {
	pid, fid uint32
}

// followed is one process of the traced file.
type followed struct {
	row   store.Process
	ticks uint64 // start in clock ticks after boot; 0: never seen alive
	// first and last call times seen (Unix ns), for a process that was
	// gone before a scan saw it.
	first, last int64
}

func newFollower(s *session, path string, dev, ino uint64, buildID string) *follower {
	return &follower{
		s: s, log: s.log.With("component", "follow"), path: path, dev: dev, ino: ino, buildID: buildID,
		procs: map[uint32]*followed{}, pending: map[uint32]*followed{}, gone: map[uint32]bool{},
		idx: map[aggKey]int{},
	}
}

// saw accounts for one call record of function id fid on its way to the
// queue (from the rings, or closed in user space): it is added to its
// process's aggregates, and an unknown pid is noted for the next scan.
func (f *follower) saw(c *record.Call, fid uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.procs[c.PID]; !ok && !f.gone[c.PID] {
		p := f.pending[c.PID]
		if p == nil {
			p = &followed{first: c.Start}
			f.pending[c.PID] = p
		}
		p.first = min(p.first, c.Start)
		p.last = max(p.last, c.Start+c.Duration)
	}
	k := aggKey{c.PID, fid}
	i, ok := f.idx[k]
	if !ok {
		i = len(f.agg)
		f.idx[k] = i
		f.agg = append(f.agg, record.FuncStats{PID: c.PID, Function: c.Function})
	}
	a := &f.agg[i]
	d := uint64(max(c.Duration, 0))
	a.Calls++
	a.Recorded++
	switch c.Status {
	case record.StatusError:
		a.Errors++
	case record.StatusPanic:
		a.Panics++
	}
	a.TotalNs += d
	a.MaxNs = max(a.MaxNs, d)
	a.Hist[record.HistBucket(d)]++
}

// snapshot is session.snapshot for a file target. The kernel's counters
// are per function, for every process together; what is per process is
// counted here, from the calls that reached the agent. Calls the kernel
// sampled out or could not put in a ring never reach it, so they are
// stored with pid 0 ("not attributed to a process"), as are the records
// the queue shed. Every row grows monotonically, so interval deltas are
// never negative.
func (f *follower) snapshot() ([]record.FuncStats, error) {
	s := f.s
	ks, err := s.tr.Stats()
	if err != nil {
		return nil, err
	}
	_, dropped := s.sinkCounts()
	out := make([]record.FuncStats, len(ks))
	for i, k := range ks {
		o := &out[i]
		o.Function = s.names[i]
		o.Sampled = k.Sampled
		o.Dropped = k.Dropped + dropped[o.Function]
		o.Calls = k.Sampled + k.Dropped
	}
	f.mu.Lock()
	out = append(out, f.agg...)
	f.mu.Unlock()
	return out, nil
}

// recorded is how many records the store took, for the session's result
// (the per-process rows count what reached the agent).
func (f *follower) recorded() uint64 {
	rec, _ := f.s.sinkCounts()
	if f.s.shared {
		f.mu.Lock()
		defer f.mu.Unlock()
		var n uint64
		for i := range f.agg {
			n += f.agg[i].Recorded
		}
		return n
	}
	var n uint64
	for _, v := range rec {
		n += v
	}
	return n
}

// processes is how many processes the session traced.
func (f *follower) processes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.procs) + len(f.gone)
}

// run scans for processes every followEvery until ctx is done, then
// stores the end of those still running.
func (f *follower) run(ctx context.Context) {
	t := time.NewTicker(followEvery)
	defer t.Stop()
	f.scan(true)
	lastFull := time.Now()
	for {
		select {
		case <-ctx.Done():
			// The session has stopped: the rings are drained and every
			// frame still open was closed (closeOpen), so what is
			// pending now is all the processes there were.
			f.scan(false)
			f.endAll("running when the session ended")
			return
		case now := <-t.C:
			full := now.Sub(lastFull) >= scanEvery
			if full {
				lastFull = now
			}
			f.scan(full)
		}
	}
}

// scan ends the processes that exited, resolves the pids seen only in
// events, and with full, looks through /proc for new processes of the file.
func (f *follower) scan(full bool) {
	f.mu.Lock()
	live := make([]*followed, 0, len(f.procs))
	for _, p := range f.procs {
		live = append(live, p)
	}
	f.mu.Unlock()
	// /proc is read without the lock, which the ring readers take for
	// every record.
	var exited, execd []*followed
	for _, p := range live {
		pid := p.row.PID
		switch ticks, ok := liveStart(pid); {
		case !ok || ticks != p.ticks:
			exited = append(exited, p)
		case !f.runsFile(pid):
			// An execve replaced the traced program: no traced call
			// of the old image can return any more.
			execd = append(execd, p)
		}
	}
	for _, p := range exited {
		f.exit(p, time.Now().UnixNano(), "exited")
	}
	for _, p := range execd {
		f.exit(p, time.Now().UnixNano(), "ran another program (execve)")
	}

	if full {
		f.scanProc()
	}
	f.resolvePending()
}

// scanProc starts following the processes of the file in /proc that it
// does not know yet.
func (f *follower) scanProc() {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		f.log.Warn("cannot list processes", "err", err)
		return
	}
	for _, e := range ents {
		pid, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil || pid == 0 {
			continue
		}
		f.mu.Lock()
		_, known := f.procs[uint32(pid)]
		f.mu.Unlock()
		if !known {
			f.consider(uint32(pid), nil)
		}
	}
}

// resolvePending looks at the pids the events named: a process still
// running is followed; one already gone gets its row from its calls.
func (f *follower) resolvePending() {
	f.mu.Lock()
	pend := f.pending
	f.pending = map[uint32]*followed{}
	f.mu.Unlock()
	for pid, p := range pend {
		// A pid followed or ended since its calls were pended is not
		// news: saw may pend it between the swap above and consider
		// below, and the process may exit before the next scan, which
		// would otherwise store it a second time, from its calls.
		f.mu.Lock()
		_, known := f.procs[pid]
		known = known || f.gone[pid]
		f.mu.Unlock()
		if known || f.consider(pid, p) {
			continue
		}
		// Gone before any scan saw it: its lifetime is what its calls
		// show.
		p.row = f.newRow(pid, p.first)
		f.mu.Lock()
		f.markGone(pid)
		f.mu.Unlock()
		if err := f.s.st.BeginProcess(p.row); err != nil {
			f.log.Warn("store process", "pid", pid, "err", err)
		}
		f.exit(p, max(p.last, p.first), "exited")
	}
}

// consider starts following pid when its executable is the traced file,
// and reports whether it did. seen is what events told of it, if anything.
func (f *follower) consider(pid uint32, seen *followed) bool {
	if !f.runsFile(pid) || f.scope != nil && !f.scope.holds(pid) {
		return false
	}
	ticks, ok := liveStart(pid)
	if !ok {
		return false
	}
	p := &followed{ticks: ticks}
	if seen != nil {
		p.first, p.last = seen.first, seen.last
	}
	p.row = f.newRow(pid, procStartNs(ticks))
	p.row.NSPID = nsPID(pid)
	f.mu.Lock()
	delete(f.gone, pid) // a reused pid: a new process
	f.procs[pid] = p
	f.mu.Unlock()
	if err := f.s.st.BeginProcess(p.row); err != nil {
		f.log.Warn("store process", "pid", pid, "err", err)
	}
	f.log.Debug("process found", "pid", pid, "ns_pid", p.row.NSPID)
	return true
}

// runsFile reports whether pid's executable is the traced file: the same
// device and inode, whatever path (a link, another mount namespace's)
// started it.
func (f *follower) runsFile(pid uint32) bool {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/exe", pid), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == f.dev && st.Ino == f.ino
}

func (f *follower) newRow(pid uint32, start int64) store.Process {
	return store.Process{Session: f.s.sess.ID, PID: pid, Binary: f.path, BuildID: f.buildID, Start: start}
}

// markGone moves pid to the exited set; f.mu is held.
func (f *follower) markGone(pid uint32) {
	delete(f.procs, pid)
	if len(f.gone) >= maxGone {
		for k := range f.gone {
			delete(f.gone, k)
			break
		}
	}
	f.gone[pid] = true
}

// exit closes the frames the process left open (it can no longer return
// from them: unfinished, or panicked when its goroutine was panicking)
// and stores its end.
func (f *follower) exit(p *followed, end int64, reason string) {
	pid := p.row.PID
	f.mu.Lock()
	f.markGone(pid)
	f.mu.Unlock()
	f.s.takeOpen(pid)
	p.row.End, p.row.ExitReason = end, reason
	if err := f.s.st.EndProcess(p.row); err != nil {
		f.log.Warn("store process end", "pid", pid, "err", err)
	}
	f.log.Debug("process ended", "pid", pid, "reason", reason)
}

// endAll stores the end of every process still running.
func (f *follower) endAll(reason string) {
	f.mu.Lock()
	var live []*followed
	for _, p := range f.procs {
		live = append(live, p)
	}
	f.mu.Unlock()
	now := time.Now().UnixNano()
	for _, p := range live {
		p.row.End, p.row.ExitReason = now, reason
		if err := f.s.st.EndProcess(p.row); err != nil {
			f.log.Warn("store process end", "pid", p.row.PID, "err", err)
		}
	}
}

// nsPID is pid's number in its own pid namespace (the last field of
// NSpid in /proc/PID/status) when it differs from the host's, else 0.
func nsPID(pid uint32) uint32 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "NSpid:")
		if !ok {
			continue
		}
		fs := strings.Fields(rest)
		if len(fs) < 2 {
			return 0
		}
		n, err := strconv.ParseUint(fs[len(fs)-1], 10, 32)
		if err != nil {
			return 0
		}
		return uint32(n)
	}
	return 0
}

// liveStart returns pid's start time (clock ticks after boot) while it
// runs: a zombie has exited, though its /proc entry stays until its
// parent reaps it.
func liveStart(pid uint32) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	// After ")": state is field 3 (index 0), starttime field 22 (index 19).
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	return ticks, err == nil
}

// newProcessRow describes the one process of an attach --pid or run
// session.
func (s *session) newProcessRow() store.Process {
	p := store.Process{Session: s.sess.ID, PID: uint32(s.pid), NSPID: nsPID(uint32(s.pid)), Binary: s.binaryName(),
		BuildID: buildID(s.bin.Path), Start: time.Now().UnixNano()}
	if ticks, ok := liveStart(uint32(s.pid)); ok {
		p.Start = procStartNs(ticks)
	}
	return p
}
