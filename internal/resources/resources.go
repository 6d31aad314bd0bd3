// Package resources samples the resource use of a traced process (CPU,
// memory, threads, file descriptors, I/O and context switches) from /proc
// through gopsutil, so that call latencies can be read next to what the
// process was doing at the time.
package resources

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/shirou/gopsutil/v4/process"

	"github.com/obs-agent/obs-agent/internal/record"
)

// ErrNoProcess is returned by NewSampler and Run when the pid names no
// running process.
var ErrNoProcess = errors.New("no such process")

// DefaultInterval is the sampling period callers use unless told otherwise.
const DefaultInterval = 5 * time.Second

// Sampler reads one process's resource counters. It keeps the previous CPU
// time reading, so CPU percent covers the time between two samples. A Sampler
// is not safe for concurrent use.
type Sampler struct {
	pid  int32
	proc *process.Process

	// CPU time (user+system, seconds) and wall clock of the last sample
	// that read it; havePrev is false until then.
	prevCPU  float64
	prevWall time.Time
	havePrev bool
}

// NewSampler checks that pid is a running process and returns its Sampler.
func NewSampler(pid int32) (*Sampler, error) {
	p, err := process.NewProcess(pid)
	if err != nil {
		if errors.Is(err, process.ErrorProcessNotRunning) {
			return nil, fmt.Errorf("resources: pid %d: %w", pid, ErrNoProcess)
		}
		return nil, fmt.Errorf("resources: pid %d: %w", pid, err)
	}
	return &Sampler{pid: pid, proc: p}, nil
}

// Sample reads every metric once. A metric that can't be read (it is not
// exposed, or /proc/PID/fd and /proc/PID/io need the same user or root) is
// nil in the result, never zero. CPUPercent is nil on the first sample, since
// it needs two readings; it is the share of one CPU, so a process busy on
// two cores shows 200. goroutines is copied into the sample as given.
func (s *Sampler) Sample(now time.Time, goroutines *int64) record.ResourceSample {
	ctx := context.Background()
	r := record.ResourceSample{
		PID:        uint32(s.pid),
		Time:       now.UnixNano(),
		Goroutines: goroutines,
	}

	if t, err := s.proc.TimesWithContext(ctx); err == nil {
		cpu := t.User + t.System
		if s.havePrev {
			if wall := now.Sub(s.prevWall).Seconds(); wall > 0 && cpu >= s.prevCPU {
				r.CPUPercent = ptr((cpu - s.prevCPU) / wall * 100)
			}
		}
		s.prevCPU, s.prevWall, s.havePrev = cpu, now, true
	}
	if m, err := s.proc.MemoryInfoWithContext(ctx); err == nil {
		r.RSSBytes, r.VMSBytes = ptr(m.RSS), ptr(m.VMS)
	}
	if n, err := s.proc.NumThreadsWithContext(ctx); err == nil && n > 0 {
		r.Threads = ptr(int64(n))
	}
	if n, err := s.proc.NumFDsWithContext(ctx); err == nil {
		r.OpenFDs = ptr(int64(n))
	}
	if io, err := s.proc.IOCountersWithContext(ctx); err == nil {
		r.ReadBytes, r.WriteBytes = ptr(io.ReadBytes), ptr(io.WriteBytes)
	}
	if cs, err := s.proc.NumCtxSwitchesWithContext(ctx); err == nil && cs != nil {
		r.VolCtxSwitches, r.InvCtxSwitches = ptr(uint64(cs.Voluntary)), ptr(uint64(cs.Involuntary))
	}
	return r
}

// Running reports whether the sampled process still runs: it exists and has
// the start time it had when the Sampler was made, so a reused pid counts as
// gone.
func (s *Sampler) Running() bool {
	ok, err := s.proc.IsRunning()
	return err == nil && ok
}

// Run samples pid every interval (DefaultInterval when interval <= 0) and
// passes each sample to emit, the first one right away. goroutines, if not
// nil, supplies the goroutine count for each sample. Run returns nil when ctx
// is done or when the process exits, and an error wrapping ErrNoProcess when
// pid names no running process at the start.
func Run(ctx context.Context, pid int32, interval time.Duration, goroutines func() *int64, emit func(record.ResourceSample)) error {
	s, err := NewSampler(pid)
	if err != nil {
		return err
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	log := slog.With("component", "resources", "pid", pid)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		var g *int64
		if goroutines != nil {
			g = goroutines()
		}
		r := s.Sample(time.Now(), g)
		// Checked after reading, so a process that died meanwhile gives
		// no sample of nils.
		if !s.Running() {
			log.Debug("process exited; sampling stopped")
			return nil
		}
		emit(r)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func ptr[T any](v T) *T { return &v }
