// Command load is a tracing target that makes a known number of calls and
// errors under load, so the tests in internal/agent can check the agent's
// accounting exactly and measure its cost. The traced function is
// main.work; the program counts every call it makes and every error it
// gets back, and prints the counts at exit:
//
//	made main.work calls=N errors=E
//	self cpu_us=U maxrss_kb=K
//
// The second line is the program's own getrusage(RUSAGE_SELF), so a
// harness that only sees the rusage of a parent (which includes its
// reaped children) can subtract the target's share.
//
// Modes:
//
//	flood G SECS ERRPCT  G goroutines call main.work in a tight loop for
//	                     SECS seconds (fractions allowed); goroutine k calls
//	                     work(0), work(1), ... and call i fails when
//	                     i%100 < ERRPCT, so each goroutine's error count
//	                     follows from its call count
//	burst N ERRPCT       N goroutines are alive at once, blocked on a gate;
//	                     then goroutine i calls work(i) once (fails when
//	                     i%100 < ERRPCT)
//	rate R SECS [ERRPCT] R calls per second for SECS seconds from one
//	                     goroutine, in batches every 10 ms: exactly R*SECS
//	                     calls
//
// With LOAD_WAIT_STDIN=1 in the environment the program first prints
// "waiting" and reads one line from stdin, so that a tracer attached to
// the running process sees every call.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// errWork is built once: returning it costs no allocation, so the
// program's own cost stays flat whatever the error share.
var errWork = errors.New("work: injected failure")

// errPct is the share of failing calls, in percent (0..100).
var errPct int

// work is the traced function. It returns an error exactly when
// i%100 < errPct.
//
//go:noinline
func work(i int) (int, error) {
	if i%100 < errPct {
		return 0, errWork
	}
	return i * 7, nil
}

// counts is one goroutine's tally, padded so goroutines don't share a
// cache line.
type counts struct {
	calls, errors uint64
	sink          int
	_             [40]byte
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: load flood G SECS ERRPCT | burst N ERRPCT | rate R SECS [ERRPCT]")
	}
	if os.Getenv("LOAD_WAIT_STDIN") == "1" {
		fmt.Println("waiting")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			return fmt.Errorf("wait for stdin: %w", err)
		}
	}
	mode, rest := args[0], args[1:]
	nums := make([]float64, len(rest))
	for i, a := range rest {
		v, err := strconv.ParseFloat(a, 64)
		if err != nil || v < 0 {
			return fmt.Errorf("%s: bad argument %q", mode, a)
		}
		nums[i] = v
	}
	need := func(n int) error {
		if len(nums) < n {
			return fmt.Errorf("%s: want %d arguments, got %d", mode, n, len(nums))
		}
		return nil
	}
	setPct := func(v float64) error {
		if v > 100 {
			return fmt.Errorf("%s: error share %v%% is over 100", mode, v)
		}
		errPct = int(v)
		return nil
	}
	var c counts
	var err error
	switch mode {
	case "flood":
		if err = need(3); err == nil {
			if err = setPct(nums[2]); err == nil {
				c, err = flood(int(nums[0]), time.Duration(nums[1]*float64(time.Second)))
			}
		}
	case "burst":
		if err = need(2); err == nil {
			if err = setPct(nums[1]); err == nil {
				c = burst(int(nums[0]))
			}
		}
	case "rate":
		if err = need(2); err == nil {
			if len(nums) > 2 {
				err = setPct(nums[2])
			}
			if err == nil {
				c = rate(int(nums[0]), time.Duration(nums[1]*float64(time.Second)))
			}
		}
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		return err
	}
	fmt.Printf("made main.work calls=%d errors=%d\n", c.calls, c.errors)
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		us := ru.Utime.Nano()/1000 + ru.Stime.Nano()/1000
		fmt.Printf("self cpu_us=%d maxrss_kb=%d\n", us, ru.Maxrss)
	}
	return nil
}

// expectedErrors is how many of the calls work(0) .. work(n-1) fail.
func expectedErrors(n uint64) uint64 {
	p := uint64(errPct)
	return n/100*p + min(n%100, p)
}

// flood runs g goroutines calling work back to back for d.
func flood(g int, d time.Duration) (counts, error) {
	var stop atomic.Bool
	per := make([]counts, g)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for k := 0; k < g; k++ {
		wg.Add(1)
		go func(c *counts) {
			defer wg.Done()
			<-start
			i := 0
			for !stop.Load() {
				v, err := work(i)
				if err != nil {
					c.errors++
				}
				c.sink += v
				c.calls++
				i++
			}
		}(&per[k])
	}
	close(start)
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	var total counts
	for k := range per {
		c := &per[k]
		if want := expectedErrors(c.calls); c.errors != want {
			return total, fmt.Errorf("goroutine %d: %d errors in %d calls, want %d", k, c.errors, c.calls, want)
		}
		total.calls += c.calls
		total.errors += c.errors
	}
	return total, nil
}

// burst has n goroutines alive at once; each calls work once when the
// gate opens.
func burst(n int) counts {
	var ready, done sync.WaitGroup
	gate := make(chan struct{})
	var calls, errs atomic.Uint64
	for i := 0; i < n; i++ {
		ready.Add(1)
		done.Add(1)
		go func(i int) {
			defer done.Done()
			ready.Done()
			<-gate
			if _, err := work(i); err != nil {
				errs.Add(1)
			}
			calls.Add(1)
		}(i)
	}
	ready.Wait()
	close(gate)
	done.Wait()
	return counts{calls: calls.Load(), errors: errs.Load()}
}

// rate calls work r times a second for d, in a batch every 10 ms; a late
// tick catches up, so the total is exactly r*d.
func rate(r int, d time.Duration) counts {
	var c counts
	total := uint64(float64(r) * d.Seconds())
	tk := time.NewTicker(10 * time.Millisecond)
	defer tk.Stop()
	t0 := time.Now()
	i := 0
	for c.calls < total {
		<-tk.C
		due := min(total, uint64(float64(r)*time.Since(t0).Seconds()))
		for c.calls < due {
			v, err := work(i)
			if err != nil {
				c.errors++
			}
			c.sink += v
			c.calls++
			i++
		}
	}
	return c
}
