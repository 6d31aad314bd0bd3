package uprobe

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Stats is the exact aggregate of one function, summed over CPUs.
type Stats struct {
	Calls, Errors, Panics, Unfinished uint64
	Dropped, Sampled                  uint64
	TotalNs, MaxNs                    uint64
	Hist                              [obsObsLimitsOBS_HIST_BUCKETS]uint64
}

// Stats reads every function's aggregate; the index is the function id.
func (t *Tracer) Stats() ([]Stats, error) {
	out := make([]Stats, t.Funcs())
	var per []obsFuncStats
	for i := range out {
		if err := t.objs.Fstats.Lookup(uint32(i), &per); err != nil {
			return nil, fmt.Errorf("read stats of function %d: %w", i, err)
		}
		s := &out[i]
		for _, c := range per {
			s.Calls += c.Calls
			s.Errors += c.Errors
			s.Panics += c.Panics
			s.Unfinished += c.Unfinished
			s.Dropped += c.Dropped
			s.Sampled += c.Sampled
			s.TotalNs += c.TotalNs
			s.MaxNs = max(s.MaxNs, c.MaxNs)
			for b := range s.Hist {
				s.Hist[b] += c.Hist[b]
			}
		}
	}
	return out, nil
}

// Health is the tracer's own counters, summed over CPUs.
type Health struct {
	RingOKFull  uint64 // ok calls lost because the ok ring was full
	RingErrFull uint64 // error-lane records lost because its ring was full
	MapFull     uint64
	// UnmatchedRet counts returns of calls that began before the entry
	// sites were armed (or while the circuit breaker had paused them).
	UnmatchedRet uint64
	// DrainRet counts returns of calls that began after detach had
	// disarmed the entry sites, while open calls were draining.
	DrainRet         uint64
	MorestackReentry uint64
	ReadFail         uint64
	Abandoned        uint64
	SpawnLinks       uint64
}

// Health reads the health counters.
func (t *Tracer) Health() (Health, error) {
	var per []obsCounters
	if err := t.objs.Health.Lookup(uint32(0), &per); err != nil {
		return Health{}, fmt.Errorf("read health counters: %w", err)
	}
	var h Health
	for _, c := range per {
		h.RingOKFull += c.RingOkFull
		h.RingErrFull += c.RingErrFull
		h.MapFull += c.MapFull
		h.UnmatchedRet += c.UnmatchedRet
		h.DrainRet += c.DrainRet
		h.MorestackReentry += c.MorestackReentry
		h.ReadFail += c.ReadFail
		h.Abandoned += c.Abandoned
		h.SpawnLinks += c.SpawnLinks
	}
	return h, nil
}

// OpenFrame is a call that has not returned.
type OpenFrame struct {
	ID, ParentID uint64
	GoID         uint64
	PID          uint32
	FuncID       uint32
	StartMono    uint64
	LastSeenMono uint64 // last probe hit on its goroutine
	Panicking    bool   // its goroutine was panicking
}

// TakeOpen removes and returns the open frames of process pid (every
// process when pid is 0): what was still running when the process died or
// the trace ended.
func (t *Tracer) TakeOpen(pid uint32) ([]OpenFrame, error) {
	gor, err := t.goroutineStates(pid)
	if err != nil {
		return nil, err
	}
	var out []OpenFrame
	for _, g := range gor {
		for d := int(g.st.Depth) - 1; d >= 0; d-- {
			var f obsFrame
			if d < len(g.st.Frames) {
				f = g.st.Frames[d]
			} else {
				fk := obsFkey{Tgid: g.key.Tgid, Depth: uint32(d), G: g.key.G}
				if err := t.objs.Frames.LookupAndDelete(&fk, &f); err != nil {
					if errors.Is(err, ebpf.ErrKeyNotExist) {
						continue
					}
					return nil, fmt.Errorf("read frame: %w", err)
				}
			}
			out = append(out, OpenFrame{
				ID: f.Id, ParentID: f.ParentId, GoID: g.st.Goid, PID: g.key.Tgid,
				FuncID: f.FuncId, StartMono: f.StartNs, LastSeenMono: g.st.LastNs,
				Panicking: g.st.PanicSeq != 0,
			})
		}
		if g.slot >= 0 {
			_ = t.objs.Gslots.Put(uint32(g.slot), obsGslot{G: gslotFreed})
		} else {
			k := g.key
			_ = t.objs.Goroutines.Delete(&k)
		}
	}
	return out, nil
}

// gslotFreed marks a slot of the goroutine table whose goroutine is gone;
// a g word at or below it is no goroutine.
const gslotFreed = uint64(obsObsGslotMarkOBS_GSLOT_FREED)

// gref is one goroutine's state, from the slot table (slot >= 0) or the
// hash map.
type gref struct {
	key  obsGkey
	st   obsGstate
	slot int
}

// goroutineStates reads the state of every goroutine of pid (every process
// when pid is 0) from both places it may live.
func (t *Tracer) goroutineStates(pid uint32) ([]gref, error) {
	var out []gref
	var gk obsGkey
	var gs obsGstate
	it := t.objs.Goroutines.Iterate()
	for it.Next(&gk, &gs) {
		if pid == 0 || gk.Tgid == pid {
			out = append(out, gref{gk, gs, -1})
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read goroutines: %w", err)
	}
	if pid != 0 && pid != uint32(t.cfg.PID) {
		return out, nil // the slot table holds only the traced process
	}
	err := t.eachSlot(func(idx uint32, slot *obsGslot) {
		out = append(out, gref{obsGkey{Tgid: uint32(t.cfg.PID), G: slot.G}, slot.St, int(idx)})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Goroutines counts the goroutines of pid that the tracer holds state for:
// those that made a traced call or were spawned inside one, and have not
// exited.
func (t *Tracer) Goroutines(pid uint32) (int, error) {
	var key, next obsGkey
	n := 0
	var prev any // nil: start from the first key
	for {
		err := t.objs.Goroutines.NextKey(prev, &next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return n, fmt.Errorf("count goroutines: %w", err)
		}
		if next.Tgid == pid {
			n++
		}
		key = next
		prev = &key
	}
	if pid != uint32(t.cfg.PID) {
		return n, nil
	}
	err := t.eachSlot(func(uint32, *obsGslot) { n++ })
	return n, err
}

// eachSlot calls fn for every goroutine in the slot table. The table is
// read in batches: one system call per 256 slots, where iterating would
// take two per slot, and Goroutines runs every few seconds.
func (t *Tracer) eachSlot(fn func(idx uint32, slot *obsGslot)) error {
	const batch = 256
	keys := make([]uint32, batch)
	vals := make([]obsGslot, batch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := t.objs.Gslots.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			if vals[i].G > gslotFreed {
				fn(keys[i], &vals[i])
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read goroutine slots: %w", err)
		}
	}
}

// Bias is the load bias of the traced file in process pid, for a PIEFile
// tracer: noted by the BPF programs at the process's first traced entry
// (see bpf/maps.h pie_bias). false when none was noted.
func (t *Tracer) Bias(pid uint32) (uint64, bool) {
	var b uint64
	if err := t.objs.PieBias.Lookup(pid, &b); err != nil {
		return 0, false
	}
	return b, true
}
