// Package record owns the data types that flow from the probes, through the
// queue, into the store: call records, per-function aggregates, resource
// samples, probe gaps and tracing sessions. It has no behaviour beyond small
// helpers, so every other package can depend on it without cycles.
package record

import (
	"fmt"
	"math/bits"
	"time"

	"github.com/obs-agent/obs-agent/internal/validate"
)

// Status is the outcome of one traced call.
type Status uint8

// Call outcomes. The numeric values are stored in the database and are shared
// with the BPF programs (bpf/obs.h), so never renumber them.
const (
	StatusOK         Status = 0
	StatusError      Status = 1 // returned a non-nil error
	StatusPanic      Status = 2 // unwound by a panic
	StatusUnfinished Status = 3 // still open when the process or the trace ended
)

var statusNames = [...]string{"ok", "error", "panic", "unfinished"}

// String returns the name used in queries and JSON output.
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// ParseStatus is the inverse of String.
func ParseStatus(s string) (Status, error) {
	for i, n := range statusNames {
		if n == s {
			return Status(i), nil
		}
	}
	return 0, fmt.Errorf("unknown status %s (want one of ok, error, panic, unfinished)", validate.Quote(s))
}

// Call is one completed (or abandoned) call of a traced function.
type Call struct {
	ID       uint64 // unique within a store
	ParentID uint64 // 0 when the call is a root
	PID      uint32
	GoID     uint64
	Function string // full symbol name as in the binary, e.g. main.(*Counter).Inc
	Start    int64  // wall clock, Unix nanoseconds
	Duration int64  // nanoseconds
	Status   Status
	// ErrorType is the dynamic type of a returned error or of a panic value,
	// e.g. "*errors.errorString". Empty when there is none.
	ErrorType string
	// Error is the error or panic text, when it could be read. Empty when
	// there is none or it could not be read without running code.
	Error          string
	ErrorTruncated bool // Error was cut at the read bound
	// TraceRoot is the root of the call's tree (the call itself for a
	// root), once a live sink has resolved it (internal/agent's OTLP
	// sink); 0 otherwise. It is not stored: the store derives roots from
	// its parent links.
	TraceRoot uint64
}

// IsError reports whether the call belongs to the error lane: an error
// return, a panic, or a call left unfinished.
func (c *Call) IsError() bool { return c.Status != StatusOK }

// HistBuckets is the number of log2 latency buckets kept per function.
// Bucket i counts durations d with 2^(i-1) <= d < 2^i nanoseconds (bucket 0
// counts d == 0).
const HistBuckets = 64

// HistBucket is the bucket of a duration of ns nanoseconds, as the BPF side
// computes it: bucket b holds 2^(b-1) <= ns < 2^b, bucket 0 holds 0.
func HistBucket(ns uint64) int {
	// The number of bits of ns: one instruction, where shifting it out
	// bit by bit looped 10-20 times for a typical call, once per record
	// on a follower's hot path.
	return min(bits.Len64(ns), HistBuckets-1)
}

// FuncStats is the exact aggregate of one function's calls over an interval,
// taken from the kernel counters: it does not depend on sampling or shedding.
type FuncStats struct {
	PID           uint32
	Function      string
	IntervalStart int64  // Unix ns
	IntervalEnd   int64  // Unix ns
	Calls         uint64 // every call made
	Errors        uint64
	Panics        uint64
	Recorded      uint64 // calls written to the store
	Sampled       uint64 // ok calls deliberately not kept by --sample
	Dropped       uint64 // calls lost to pressure (ring full, queue bound)
	TotalNs       uint64
	MaxNs         uint64
	Hist          [HistBuckets]uint64
}

// Lost is every call made but not recorded, for any reason.
func (s *FuncStats) Lost() uint64 { return s.Sampled + s.Dropped }

// Add merges o into s: counts, total time and histogram add up, MaxNs is
// the larger, and the interval grows to cover both (a zero bound is
// unset). PID and Function are left as they are. This is the one place an
// aggregate is summed: per-interval rows into a range, intervals into an
// hourly rollup, functions into a package or module.
func (s *FuncStats) Add(o *FuncStats) {
	s.Calls += o.Calls
	s.Errors += o.Errors
	s.Panics += o.Panics
	s.Recorded += o.Recorded
	s.Sampled += o.Sampled
	s.Dropped += o.Dropped
	s.TotalNs += o.TotalNs
	s.MaxNs = max(s.MaxNs, o.MaxNs)
	for i := range s.Hist {
		s.Hist[i] += o.Hist[i]
	}
	if o.IntervalStart != 0 && (s.IntervalStart == 0 || o.IntervalStart < s.IntervalStart) {
		s.IntervalStart = o.IntervalStart
	}
	s.IntervalEnd = max(s.IntervalEnd, o.IntervalEnd)
}

// Sub removes an earlier cumulative snapshot o from s, leaving the change
// between the two. MaxNs stays s's: a maximum over an interval cannot be
// derived from cumulative counters.
func (s *FuncStats) Sub(o *FuncStats) {
	s.Calls -= o.Calls
	s.Errors -= o.Errors
	s.Panics -= o.Panics
	s.Recorded -= o.Recorded
	s.Sampled -= o.Sampled
	s.Dropped -= o.Dropped
	s.TotalNs -= o.TotalNs
	for i := range s.Hist {
		s.Hist[i] -= o.Hist[i]
	}
}

// ResourceSample is one sample of a traced process's resource use. A nil
// field means the metric was unavailable, never zero.
type ResourceSample struct {
	PID            uint32
	Time           int64 // Unix ns
	CPUPercent     *float64
	RSSBytes       *uint64
	VMSBytes       *uint64
	Threads        *int64
	OpenFDs        *int64
	ReadBytes      *uint64
	WriteBytes     *uint64
	VolCtxSwitches *uint64
	InvCtxSwitches *uint64
	Goroutines     *int64
}

// Gap records a span during which a function's probes were paused, so that
// its missing calls are explained rather than silently absent.
type Gap struct {
	PID      uint32
	Function string
	Start    int64 // Unix ns
	End      int64 // Unix ns; 0 while still open
	Reason   string
}

// Session describes one run of the agent against one process.
type Session struct {
	ID            uint64
	PID           uint32
	Binary        string
	GoVersion     string
	Patterns      string
	Start         int64 // Unix ns
	End           int64 // Unix ns; 0 while running
	CallsRecorded uint64
	CallsLost     uint64
	ExitReason    string
	// The agent that owns the row: its pid, its start time (clock ticks
	// after boot, /proc/PID/stat field 22) and the kernel's boot id. The
	// next run on the store closes the row of an owner that is gone.
	AgentPID   uint32
	AgentStart uint64
	BootID     string
	// ErrorsLost counts the error, panic and unfinished records the agent
	// could not keep (also in CallsLost), per function.
	ErrorsLost map[string]uint64
	// Retention is the window the agent keeps records for (its
	// --retention), ArchiveDir where it archives an hour before dropping
	// it ("" = it drops without archiving). Retention 0 means unknown: a
	// session stored before the store kept it.
	Retention  time.Duration
	ArchiveDir string
}

// ErrorsLostTotal sums ErrorsLost.
func (s *Session) ErrorsLostTotal() uint64 {
	var n uint64
	for _, v := range s.ErrorsLost {
		n += v
	}
	return n
}

// Function names one traced function and the groups it rolls up into.
type Function struct {
	Name    string // full symbol name
	Package string // Go package path, e.g. github.com/acme/api/server
	Module  string // module path that holds the package, e.g. github.com/acme/api; "" when unknown
}

// PackageOf returns the package path of a Go symbol name:
// "github.com/acme/api/v2.(*Server).Handle" gives "github.com/acme/api/v2",
// "main.main.func1" gives "main". Generic instantiations keep their package:
// "main.Map[go.shape.int]" gives "main".
func PackageOf(symbol string) string {
	// The package path ends at the first '.' after the last '/' that comes
	// before any '[' (type arguments may contain slashes).
	end := len(symbol)
	for i := 0; i < len(symbol); i++ {
		if symbol[i] == '[' || symbol[i] == '(' {
			end = i
			break
		}
	}
	slash := -1
	for i := end - 1; i >= 0; i-- {
		if symbol[i] == '/' {
			slash = i
			break
		}
	}
	for i := slash + 1; i < end; i++ {
		if symbol[i] == '.' {
			return symbol[:i]
		}
	}
	return symbol[:end]
}
