// Command churn is a busy tracing target for attach and detach tests: G
// goroutines call a small known tree at full speed until stdin closes, so
// that probes go in and out while calls are in flight everywhere.
//
//	churn G
//
// Each goroutine loops over
//
//	outer ─ middle ─ inner      (middle twice per outer)
//	      └ (every 64th outer) go spawned ─ inner
//
// so every call of middle has an outer call as its parent, every inner a
// middle or spawned call, and every spawned call the outer call that ran
// its `go` statement. It prints "ready" once the goroutines run.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
)

var sink atomic.Int64

//go:noinline
func inner(i int) int {
	s := 0
	for k := 0; k < 8; k++ {
		s += i ^ k
	}
	return s
}

//go:noinline
func middle(i int) int { return inner(i) + 1 }

//go:noinline
func spawned(i int) { sink.Add(int64(inner(i))) }

//go:noinline
func outer(i int) int {
	if i%64 == 0 {
		go spawned(i)
	}
	return middle(i) + middle(i+1)
}

func main() {
	g := 8
	if len(os.Args) > 1 {
		n, err := strconv.Atoi(os.Args[1])
		if err != nil || n < 1 {
			fmt.Fprintln(os.Stderr, "usage: churn G (G >= 1 goroutines)")
			os.Exit(2)
		}
		g = n
	}
	for k := 0; k < g; k++ {
		go func() {
			for i := 0; ; i++ {
				sink.Add(int64(outer(i)))
			}
		}()
	}
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
}
