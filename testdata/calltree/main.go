// Command calltree is a tracing target whose call tree is known in advance.
// The tests in this repository trace it and compare what was recorded with
// the tree below, call for call. Every function is marked noinline so that
// each call is a real call.
//
//	calltree [-wait] [mode] [args]
//
// With -wait it reads one line from stdin before it starts, so a tracer can
// attach first. Modes:
//
//	tree            the fixed tree described in run (default)
//	burst N         N goroutines alive at once, each calling burstWork
//	hot N           N calls of hot in one goroutine; prints ns/call
//	multi N         run the tree N times
//	hotcool N M     N calls of hot in a tight loop, then M calls one
//	                millisecond apart (a hot phase, then a cool one)
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"example.com/calltree/settle"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "-wait" {
		args = args[1:]
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	mode := "tree"
	if len(args) > 0 {
		mode = args[0]
	}
	n := 0
	if len(args) > 1 {
		n, _ = strconv.Atoi(args[1])
	}
	switch mode {
	case "tree":
		fmt.Println("result", run())
	case "multi":
		for i := 0; i < n; i++ {
			run()
		}
		fmt.Println("multi done")
	case "burst":
		fmt.Println("burst", burst(n))
	case "hot":
		start := time.Now()
		s := 0
		for i := 0; i < n; i++ {
			s += hot(i)
		}
		el := time.Since(start)
		fmt.Printf("hot calls=%d ns_per_call=%.1f sum=%d\n", n, float64(el.Nanoseconds())/float64(n), s)
	case "hotcool":
		m := 0
		if len(args) > 2 {
			m, _ = strconv.Atoi(args[2])
		}
		s := 0
		for i := 0; i < n; i++ {
			s += hot(i)
		}
		for i := 0; i < m; i++ {
			s += hot(i)
			time.Sleep(time.Millisecond)
		}
		fmt.Printf("hotcool calls=%d sum=%d\n", n+m, s)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", mode)
		os.Exit(2)
	}
}

// run makes this tree (every name is main.X):
//
//	run
//	├─ nest(3) ─ nest(2) ─ nest(1) ─ nest(0) ─ leaf(0)
//	├─ grow(200) ─ grow(199) ─ … ─ grow(0)          201 calls, the stack grows
//	├─ (*Counter).Inc ×3
//	├─ Counter.Get
//	├─ Map[int] ─ run.func1 ×4                       generic + closure
//	├─ classify ×4                                   four RET paths
//	├─ spawn(5)                                      goroutines spawned inside
//	│   └─ spawn.func1 ×5 (each in its own goroutine) ─ worker ─ leaf
//	├─ recovered ─ panicky                           panicky panics, recovered
//	│                                                 in recovered
//	├─ leaf(7), after the recovery
//	└─ relay ─ worker ─ leaf                         worker runs in a goroutine
//	                                                  started by hop, in a
//	                                                  goroutine relay started;
//	                                                  the tests never trace hop

func run() int {
	total := nest(3)
	total += grow(200)
	c := &Counter{}
	c.Inc()
	c.Inc()
	c.Inc()
	total += c.Get()
	k := 10
	for _, v := range Map([]int{1, 2, 3, 4}, func(x int) int { return x + k }) {
		total += v
	}
	for _, v := range []int{-1, 0, 1, 100} {
		total += len(classify(v))
	}
	total += spawn(5)
	if recovered() != nil {
		total++
	}
	total += leaf(7)
	total += relay()
	return total
}

// relay starts a goroutine running hop, which starts the goroutine that
// calls worker. The tests exclude main.hop*, so the link from worker's call
// to relay passes through a goroutine with no traced call.
//
//go:noinline
func relay() int {
	done := make(chan int)
	go hop(done)
	return <-done
}

//go:noinline
func hop(done chan int) {
	go func() { done <- worker(100) }()
}

//go:noinline
func leaf(x int) int { return x * 2 }

//go:noinline
func nest(d int) int {
	if d == 0 {
		return leaf(d)
	}
	return nest(d-1) + 1
}

// grow recurses with a large frame, so the goroutine stack is copied
// several times while grow frames are open.
//
//go:noinline
func grow(d int) int {
	var buf [512]byte
	buf[d%len(buf)] = byte(d)
	if d == 0 {
		return int(buf[0])
	}
	return grow(d-1) + int(buf[d%len(buf)])&1
}

// Counter has methods with pointer and value receivers.
type Counter struct{ n int }

//go:noinline
func (c *Counter) Inc() { c.n++ }

//go:noinline
func (c Counter) Get() int { return c.n }

//go:noinline
func Map[T any](xs []T, f func(T) T) []T {
	out := make([]T, 0, len(xs))
	for _, x := range xs {
		out = append(out, f(x))
	}
	return out
}

//go:noinline
func classify(n int) string {
	if n < 0 {
		return "negative"
	}
	if n == 0 {
		return "zero"
	}
	if n < 10 {
		return "small"
	}
	return "large"
}

//go:noinline
func spawn(k int) int {
	base := runtime.NumGoroutine()
	var wg sync.WaitGroup
	results := make([]int, k)
	for i := 0; i < k; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = worker(i)
		}(i)
	}
	wg.Wait()
	settle.Wait(base) // no defer: Go 1.21 would wrap it in a traced closure
	s := 0
	for _, r := range results {
		s += r
	}
	return s
}

//go:noinline
func worker(i int) int { return leaf(i) + 1 }

var errPanicky = errors.New("panicky failed")

//go:noinline
func recovered() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("recovered: %v", r)
		}
	}()
	panicky(3)
	return nil
}

//go:noinline
func panicky(n int) int {
	if n > 0 {
		panic("panicky: " + strconv.Itoa(n))
	}
	return n
}

// burst starts n goroutines that are all alive at once: each blocks until
// the last one has started.
//
//go:noinline
func burst(n int) int {
	base := runtime.NumGoroutine()
	var started, done sync.WaitGroup
	gate := make(chan struct{})
	started.Add(n)
	done.Add(n)
	var mu sync.Mutex
	sum := 0
	for i := 0; i < n; i++ {
		go func(i int) {
			defer done.Done()
			started.Done()
			<-gate
			v := burstWork(i)
			mu.Lock()
			sum += v
			mu.Unlock()
		}(i)
	}
	started.Wait()
	close(gate)
	done.Wait()
	settle.Wait(base)
	return sum
}

//go:noinline
func burstWork(i int) int { return leaf(i) }

//go:noinline
func hot(i int) int { return i & 7 }
