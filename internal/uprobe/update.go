package uprobe

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
)

// ErrNoRoom means an Update would add more functions than the tracer's
// per-function maps hold (Config.Capacity): the caller has to start a new
// tracer to trace them.
var ErrNoRoom = errors.New("the per-function maps have no room for more functions")

// funcState is a function's part in the selection of a running tracer.
type funcState uint8

const (
	funcLive funcState = iota // entry and RET sites
	// funcRetiring: removed by Update; its entry sites are gone, its RET
	// sites stay while calls that entered before are still open, so that
	// they close as they return (Retire takes them out afterwards).
	funcRetiring
	funcOff // removed, and no call of it is open: no site
)

// Capacity is how many functions the tracer's per-function maps hold.
func (t *Tracer) Capacity() int { return t.capacity }

// Funcs is how many functions the function table holds (traced or
// removed): function ids run from 0 to Funcs()-1.
func (t *Tracer) Funcs() int { return int(t.nfuncs.Load()) }

// Update changes the functions a running tracer traces, in place, with
// no moment when a function traced before and after has no live probe
// (switchSites). funcs is the whole function table: it extends the
// current one (each function keeps its id and sites; its SampleRate and
// error location may change), and the functions past the current end are
// added, up to Capacity (else ErrNoRoom, and nothing changes). off are the
// ids not to trace from now on; the others are traced. A function taken
// out stops opening calls at once, but its RET sites stay while calls it
// had open run on, so they are closed by their own return: Retire takes
// them out once none is open. It returns how long the switch took.
func (t *Tracer) Update(funcs []Func, off map[int]bool) (time.Duration, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.detached {
		return 0, ErrDetached
	}
	old := len(t.cfg.Funcs)
	switch {
	case len(funcs) < old:
		return 0, fmt.Errorf("update: %d functions, fewer than the %d the tracer has: the function table only grows", len(funcs), old)
	case len(funcs) > t.Capacity():
		return 0, fmt.Errorf("update: %d functions: %w (it holds %d)", len(funcs), ErrNoRoom, t.Capacity())
	}
	for i := range old {
		if funcs[i].Entry != t.cfg.Funcs[i].Entry {
			return 0, fmt.Errorf("update: function %d moved from offset %#x to %#x: ids never change meaning", i, t.cfg.Funcs[i].Entry, funcs[i].Entry)
		}
	}
	// The table entries first: a new function's sites find theirs, and
	// a kept one's new sample rate applies from here on (an entry is
	// written whole; a call that reads it meanwhile sees the old rate or
	// the new one).
	if err := t.writeFuncInfo(funcs, 0); err != nil {
		return 0, fmt.Errorf("update: %w", err)
	}
	state := make([]funcState, len(funcs))
	for i := range state {
		was := funcOff
		if i < old {
			was = t.state[i]
		}
		switch {
		case !off[i]:
			state[i] = funcLive
		case was == funcOff:
			state[i] = funcOff
		default:
			state[i] = funcRetiring
		}
	}
	prevFuncs, prevState := t.cfg.Funcs, t.state
	t.cfg.Funcs, t.state = append([]Func(nil), funcs...), state
	took, err := t.switchSites()
	if err != nil {
		t.cfg.Funcs, t.state = prevFuncs, prevState
		return took, fmt.Errorf("update: %w", err)
	}
	t.nfuncs.Store(int64(len(funcs)))
	return took, nil
}

// Retire takes out the RET sites of the functions Update removed that
// have no call open any more (in any process), and returns how many
// removed functions still wait for theirs to return. No call of a removed
// function can open again (its entry sites are gone), so one that is not
// open now never will be. Callers call it now and then while some wait.
func (t *Tracer) Retire() (waiting int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.detached {
		return 0, ErrDetached
	}
	retiring := false
	for _, st := range t.state {
		retiring = retiring || st == funcRetiring
	}
	if !retiring {
		return 0, nil
	}
	open, err := t.openFuncs()
	if err != nil {
		return 0, err
	}
	next := append([]funcState(nil), t.state...)
	changed := false
	for i, st := range next {
		switch {
		case st != funcRetiring:
		case open[uint32(i)]:
			waiting++
		default:
			next[i] = funcOff
			changed = true
		}
	}
	if !changed {
		return waiting, nil
	}
	prev := t.state
	t.state = next
	if _, err := t.switchSites(); err != nil {
		t.state = prev
		return waiting, fmt.Errorf("retire removed functions: %w", err)
	}
	return waiting, nil
}

// openFuncs is the set of function ids with a call open in any goroutine
// of any process.
func (t *Tracer) openFuncs() (map[uint32]bool, error) {
	gor, err := t.goroutineStates(0)
	if err != nil {
		return nil, err
	}
	open := map[uint32]bool{}
	for _, g := range gor {
		for d := range int(g.st.Depth) {
			if d < len(g.st.Frames) {
				open[g.st.Frames[d].FuncId] = true
				continue
			}
			var f obsFrame
			fk := obsFkey{Tgid: g.key.Tgid, Depth: uint32(d), G: g.key.G}
			if err := t.objs.Frames.Lookup(&fk, &f); err != nil {
				if errors.Is(err, ebpf.ErrKeyNotExist) {
					continue
				}
				return nil, fmt.Errorf("read frame: %w", err)
			}
			open[f.FuncId] = true
		}
	}
	return open, nil
}
