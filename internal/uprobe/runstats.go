package uprobe

import (
	"fmt"
	"io"
	"reflect"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ProgramCost is the kernel's run-time statistics of one of the tracer's
// BPF programs: how often it ran and the time spent inside it. The time is
// the programs' own, free of the uprobe trap around them, which is why the
// cost benchmark uses it rather than the traced program's wall clock.
type ProgramCost struct {
	Name            string
	Runs            uint64
	RunNs           uint64
	RecursionMisses uint64 // runs skipped because a BPF program was already running on the CPU
}

// EnableRunStats turns on the kernel's BPF run-time statistics
// (kernel.bpf_stats_enabled) until the returned Closer is closed. They are
// off by default because taking two clock readings per program run has a
// cost of its own.
func EnableRunStats() (io.Closer, error) {
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enable BPF run-time statistics: %w", permErr(err))
	}
	return c, nil
}

// ProgramCosts reads the run-time statistics of every loaded program; they
// count only while EnableRunStats is in force.
func (t *Tracer) ProgramCosts() ([]ProgramCost, error) {
	var out []ProgramCost
	for name, p := range t.programs() {
		st, err := p.Stats()
		if err != nil {
			return nil, fmt.Errorf("read statistics of BPF program %s: %w", name, err)
		}
		out = append(out, ProgramCost{Name: name, Runs: st.RunCount, RunNs: uint64(st.Runtime), RecursionMisses: st.RecursionMisses})
	}
	return out, nil
}

// programs lists every loaded program by its name in bpf/, read from the
// generated struct so a program added there is never left out of a sum.
func (t *Tracer) programs() map[string]*ebpf.Program {
	out := map[string]*ebpf.Program{}
	v := reflect.ValueOf(&t.objs.obsPrograms).Elem()
	for i := 0; i < v.NumField(); i++ {
		if p, ok := v.Field(i).Interface().(*ebpf.Program); ok && p != nil {
			out[v.Type().Field(i).Tag.Get("ebpf")] = p
		}
	}
	return out
}
