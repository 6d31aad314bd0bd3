// Package result holds the answers of the query layer (internal/query) as
// plain values: the grouping of statistics, merged statistics rows with
// their percentiles, error chains, call trees and partitions. It does no
// I/O and knows no store, so the renderers (internal/render) and any API
// can take its values without depending on how they were read.
package result

import (
	"fmt"
	"math"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/validate"
)

// Grouping is what statistics are grouped by.
type Grouping string

// Groupings.
const (
	ByFunction Grouping = "function"
	ByPackage  Grouping = "package"
	ByModule   Grouping = "module"
)

// ParseGrouping checks a --by value against the groupings a command
// allows.
func ParseGrouping(s string, allowed ...Grouping) (Grouping, error) {
	for _, g := range allowed {
		if string(g) == s {
			return g, nil
		}
	}
	want := ""
	for i, g := range allowed {
		switch {
		case i == 0:
		case i == len(allowed)-1:
			want += " or "
		default:
			want += ", "
		}
		want += string(g)
	}
	return "", fmt.Errorf("--by %s: want %s", validate.Quote(s), want)
}

// Key is the group of function f.
func (g Grouping) Key(f record.Function) string {
	switch g {
	case ByPackage:
		return f.Package
	case ByModule:
		return f.Module
	}
	return f.Name
}

// StatsRow is the merged aggregate of one function, package or module.
type StatsRow struct {
	Key string // function name, package or module ("" = unknown module)
	record.FuncStats
	P50, P90, P99 uint64        // ns; see Percentile
	MeanNs        uint64        //
	Gaps          int           // probe gaps overlapping the range
	GapTime       time.Duration // their total length inside the range
	// Sinks is each sink's account of the row's records (the store, the
	// live OTLP sink), summed over the sessions that overlap the range,
	// whole sessions; sorted by sink name.
	Sinks []SinkCount
}

// SinkCount is what one sink wrote and lost of a row's records.
type SinkCount struct {
	Sink       string
	Written    uint64 // stored, or sent as spans
	Dropped    uint64 // lost: ok records shed, error records not kept
	ErrorsLost uint64 // the error records among Dropped
}

// Finish computes the percentiles and the mean from the merged aggregate.
func (r *StatsRow) Finish() {
	r.P50 = Percentile(&r.Hist, r.MaxNs, 0.50)
	r.P90 = Percentile(&r.Hist, r.MaxNs, 0.90)
	r.P99 = Percentile(&r.Hist, r.MaxNs, 0.99)
	if r.Calls > 0 {
		r.MeanNs = r.TotalNs / r.Calls
	}
}

// Percentile returns the q-quantile (0 < q <= 1) of a log2 histogram whose
// bucket i counts durations 2^(i-1) <= d < 2^i (bucket 0: d == 0).
//
// It takes the rank ceil(q*total), finds the bucket holding it and reports
// that bucket's largest value, 2^i - 1, capped at maxNs (the exact maximum)
// when maxNs > 0. The result is therefore an upper bound: the true quantile
// t satisfies t <= Percentile < 2t (or equals maxNs). No interpolation, so a
// known histogram gives a known, exact answer. Returns 0 for an empty
// histogram.
func Percentile(h *[record.HistBuckets]uint64, maxNs uint64, q float64) uint64 {
	var total uint64
	for _, n := range h {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	rank = max(rank, 1)
	var cum uint64
	for i, n := range h {
		cum += n
		if cum >= rank {
			var v uint64
			if i > 0 {
				if i >= 64 {
					v = math.MaxUint64
				} else {
					v = 1<<uint(i) - 1
				}
			}
			if maxNs > 0 && v > maxNs {
				v = maxNs
			}
			return v
		}
	}
	return maxNs
}

// ErrorChain is an error-lane call with its parents, root first.
type ErrorChain struct {
	Call  record.Call
	Chain []record.Call // root first, ending with the parent of Call
}

// Tree is a call and its descendants in depth-first pre-order, children
// oldest first.
type Tree struct {
	Calls     []record.Call
	Depth     []int // Depth[i] is Calls[i]'s depth below the root (0)
	Truncated bool  // the limit left some descendants out
}

// RetentionSetting is the retention one agent writing the store runs with.
type RetentionSetting struct {
	Session    uint64
	Running    bool          // the session has no end yet
	Window     time.Duration // records older than this are dropped
	ArchiveDir string        // "" when hours are dropped without an archive
}

// Partition describes one hour table of the store.
type Partition struct {
	Name       string
	Kind       string // calls, stats, samples or gaps
	Start, End time.Time
	Rows       int64
	Bytes      int64 // table and its indexes and side tables; -1 unknown
}
