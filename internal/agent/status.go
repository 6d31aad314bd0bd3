package agent

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// overheadWarnAt is the estimated cost, as a fraction of one CPU, above
// which a session without --max-overhead warns once: 5%, the budget the
// README suggests for production.
const overheadWarnAt = 0.05

// StatusLine is a live line at the bottom of a terminal. Log lines go
// through it too (it is the logger's writer), so that each one clears the
// status first and the status is drawn again below it.
type StatusLine struct {
	mu   sync.Mutex
	w    io.Writer
	line string
}

// NewStatusLine draws on w, which should be a terminal (see IsTerminal).
func NewStatusLine(w io.Writer) *StatusLine { return &StatusLine{w: w} }

// clearSeq returns the cursor to the start of the line and erases it.
const clearSeq = "\r\x1b[K"

// Write writes log output above the status line.
func (l *StatusLine) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.line != "" {
		io.WriteString(l.w, clearSeq)
	}
	n, err := l.w.Write(p)
	if l.line != "" {
		io.WriteString(l.w, l.line)
	}
	return n, err
}

// set draws line in place of the current status; "" removes it.
func (l *StatusLine) set(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.line == "" && line == "" {
		return
	}
	io.WriteString(l.w, clearSeq+line)
	l.line = line
}

// IsTerminal reports whether w is a terminal: only then is a status line
// drawn, never into a file or a pipe.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// statusFigures are what the status line shows.
type statusFigures struct {
	callsPerSec float64
	recorded    uint64
	lost        uint64
	storeBytes  int64
	overhead    float64 // estimated cost to the target, fraction of one CPU
}

func (f statusFigures) String() string {
	return fmt.Sprintf("obs-agent: %s calls/s, recorded %s, lost %s, store %s, overhead ≈%.1f%% of a CPU",
		count(uint64(f.callsPerSec+0.5)), count(f.recorded), count(f.lost), size(f.storeBytes), 100*f.overhead)
}

// overheadWarning reports whether to warn that tracing costs the target
// more than overheadWarnAt while no circuit breaker bounds it.
func overheadWarning(overhead, maxOverhead float64) bool {
	return maxOverhead <= 0 && overhead > overheadWarnAt
}

// estimateOverhead turns a call rate into a fraction of one CPU spent in
// probe traps (an entry and a RET trap per call, DefaultCallCost).
func estimateOverhead(callsPerSec float64) float64 {
	return callsPerSec * DefaultCallCost.Seconds()
}

// count prints n with thousands separators.
func count(n uint64) string {
	s := fmt.Sprint(n)
	out := make([]byte, 0, len(s)+len(s)/3)
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// size prints a byte count in KiB, MiB or GiB.
func size(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", (b+1023)/1024)
}

// statusLoop measures the session: once a second when it draws the status
// line, else after the first second and then every 10 s (a measure reads
// every function's per-CPU aggregates, which a large selection makes
// megabytes), and warns once when the estimated overhead passes
// overheadWarnAt with the circuit breaker off.
func (s *session) statusLoop(ctx context.Context) {
	every := 10 * time.Second
	if s.opts.Status != nil {
		every = time.Second
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	if s.opts.Status != nil {
		defer s.opts.Status.set("")
	}
	var prevCalls uint64
	prevT := time.Now()
	warned := false
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			t.Reset(every)
			cur, err := s.snapshot()
			if err != nil {
				continue
			}
			var f statusFigures
			var calls uint64
			for _, c := range cur {
				calls += c.Calls
				f.recorded += c.Recorded
				f.lost += c.Sampled + c.Dropped
			}
			if dt := now.Sub(prevT).Seconds(); dt > 0 && calls >= prevCalls {
				f.callsPerSec = float64(calls-prevCalls) / dt
			}
			prevCalls, prevT = calls, now
			f.overhead = estimateOverhead(f.callsPerSec)
			f.storeBytes = storeSize(s.opts.DB)
			if !warned && overheadWarning(f.overhead, s.opts.MaxOverhead) {
				warned = true
				s.log.Warn(fmt.Sprintf("tracing costs the target an estimated %.0f%% of a CPU (%s calls/s) and --max-overhead is off", 100*f.overhead, count(uint64(f.callsPerSec))),
					"hint", "narrow the patterns (obs-agent query stats shows the hottest functions), sample them with @RATE, or set --max-overhead 0.05")
			}
			if s.opts.Status != nil {
				s.opts.Status.set(f.String())
			}
		}
	}
}

// storeSize is the store's size on disk: the file and its write-ahead log.
func storeSize(db string) int64 {
	var n int64
	for _, p := range []string{db, db + "-wal"} {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}
