package validate

import (
	"runtime"
	"time"
)

// The allowed values of the tracing settings, shared by the flags of
// attach and run and the keys of the daemon's config file, so that both
// refuse the same values. The minimums keep a typo from hurting the host:
// a 1ns stats interval would write a row per function hundreds of times a
// second.
var (
	TraceDuration = Range[time.Duration]{Min: time.Millisecond, Special: []Special[time.Duration]{{Value: 0, Means: "until the target exits or Ctrl-C"}}}
	MaxProbes     = Range[int]{Min: 1, Special: []Special[int]{{Value: -1, Means: "no limit"}}}
	Rate          = Range[float64]{Min: 0, Max: 1}
	StatsInterval = Range[time.Duration]{Min: time.Second, Max: time.Hour}
	// Retention drops whole hours, so a window under an hour would promise
	// an expiry finer than the store has.
	Retention      = Range[time.Duration]{Min: time.Hour}
	SampleInterval = Range[time.Duration]{Min: 100 * time.Millisecond, Max: time.Hour, Special: []Special[time.Duration]{{Value: 0, Means: "never"}}}
)

// MaxMemoryMiB bounds the memory limit: 1 TiB.
const MaxMemoryMiB = 1 << 20

// Overhead is the circuit breaker's budget: a fraction of one CPU, up to
// every CPU this machine has (a larger budget could never be reached).
func Overhead() Range[float64] {
	return Range[float64]{Min: 0.001, Max: float64(runtime.NumCPU()), Special: []Special[float64]{{Value: 0, Means: "off"}}}
}
