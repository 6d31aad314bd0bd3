// Package metrics owns the Prometheus exposition of a tracing session (or
// of every target of an agent that traces several): the /metrics endpoint that --metrics-listen serves, the metric names and
// labels, and the conversion of the kernel's exact per-function aggregates
// (log2 nanosecond buckets) into Prometheus histograms in seconds.
//
// It reads everything through Source, a small interface over the agent's
// cumulative aggregates and health counters, once per scrape; it keeps no
// state of its own and uses its own registry, never the global default
// one. Nothing here is keyed by process or goroutine id: a label is a
// binary (an executable's path), a function, a package, a status, a lane or
// a sink, so the number of series is bounded by the programs traced and
// the functions selected.
package metrics

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// Source is what a scrape reads. Snapshot returns cumulative counts since
// the session started; it is called from the HTTP server's goroutines, so
// it must be safe for concurrent use.
type Source interface {
	Snapshot() (Snapshot, error)
}

// Snapshot is one consistent read of the agent's counters: of one
// session, or of every target of a host of several (internal/agent's
// host), each traced program's functions labelled by its binary.
type Snapshot struct {
	// Sessions are the traced programs, one obs_agent_session_info each.
	Sessions  []Info
	Functions []Function
	Health    Health
}

// Function is the cumulative aggregate of one traced function. The call
// counts and the histogram come from the kernel counters (plus the calls
// closed in user space at the end), so they count every call made,
// whatever was sampled or dropped on the way to the store.
type Function struct {
	// Binary is the path of the traced executable (the binary label):
	// function names collide between programs (two have main.main), so
	// each series names its program. Never a pid: a program's processes,
	// and its several --pid targets, share their series.
	Binary string
	Name   string
	// LossOnly marks the records a sink shared by several programs lost
	// under a function name it cannot attribute to one of them (Binary is
	// then ""): only the loss series are exposed for it.
	LossOnly bool
	// Calls by outcome; their sum is every call made.
	OK, Errors, Panics, Unfinished uint64
	Recorded                       uint64 // written to the store
	Sampled                        uint64 // ok calls left out by the sample rate
	Dropped                        uint64 // lost to pressure (ring full, queue bound)
	ErrorsLost                     uint64 // error records among Dropped
	TotalNs                        uint64
	Hist                           [record.HistBuckets]uint64 // bucket i: 2^(i-1) <= ns < 2^i
}

// Calls is every call made.
func (f *Function) Calls() uint64 { return f.OK + f.Errors + f.Panics + f.Unfinished }

// Ring is the kernel ring buffer of one lane: "error" (errors, panics,
// unfinished calls) or "ok".
type Ring struct {
	Lane    string
	Dropped uint64 // records the kernel could not put in the ring: it was full
}

// Depth is how many records of one lane wait in memory for a sink.
type Depth struct {
	Lane    string
	Records int
}

// Sink is one destination of records (today only the store).
type Sink struct {
	Name   string
	Queue  []Depth
	Writes *Log2Hist // duration of each batch write; nil when not measured
	// The sink's ledger: records it wrote, and records it lost (ok records
	// shed, error records that could not be kept); ErrorsLost are the
	// error records among Dropped.
	Written, Dropped, ErrorsLost uint64
}

// Health is the agent's own state.
type Health struct {
	Rings         []Ring
	Sinks         []Sink
	ProbeSites    int    // uprobe sites attached
	Functions     int    // functions traced
	BreakerPauses uint64 // times the circuit breaker paused a function's probes
	// Kernel-side trouble (see uprobe.Health).
	MapFull, ReadFail, UnmatchedReturns uint64
}

// Log2Hist is a histogram of durations in log2 nanosecond buckets, the
// layout of the kernel's call histograms, safe for concurrent use.
type Log2Hist struct {
	buckets [record.HistBuckets]atomic.Uint64
	sumNs   atomic.Uint64
}

// Observe adds one duration.
func (h *Log2Hist) Observe(d time.Duration) {
	ns := uint64(max(d, 0))
	h.buckets[record.HistBucket(ns)].Add(1)
	h.sumNs.Add(ns)
}

// Read returns the buckets and the sum of the durations in ns.
func (h *Log2Hist) Read() (b [record.HistBuckets]uint64, sumNs uint64) {
	for i := range b {
		b[i] = h.buckets[i].Load()
	}
	return b, h.sumNs.Load()
}

// The log2 buckets exposed as Prometheus bucket bounds: i from firstBucket
// to lastBucket, i.e. from about 1 µs to about 18 min. A uprobe trap alone
// costs microseconds, so finer bounds would only add empty series; longer
// calls land in +Inf, which Prometheus always has. Bounds are cumulative,
// so leaving buckets out loses no exactness: each exposed count is exact.
const (
	firstBucket = 10
	lastBucket  = 40
)

// upperNs is the largest whole number of nanoseconds in log2 bucket i:
// 2^i - 1. Prometheus bounds are inclusive (le), the kernel's are
// exclusive (< 2^i); for integer durations these are the same set.
func upperNs(i int) uint64 {
	if i >= 64 {
		return math.MaxUint64
	}
	return 1<<uint(i) - 1
}

// promBuckets converts log2 ns buckets into Prometheus' cumulative buckets
// keyed by their upper bound in seconds, and returns the total count.
func promBuckets(h *[record.HistBuckets]uint64) (map[float64]uint64, uint64) {
	out := make(map[float64]uint64, lastBucket-firstBucket+1)
	var cum uint64
	for i, n := range h {
		cum += n
		if i >= firstBucket && i <= lastBucket {
			out[float64(upperNs(i))/1e9] = cum
		}
	}
	return out, cum
}
