// Command phases is a tracing target for the daemon tests: each run calls
// two functions a known number of times, so a test that changes which of
// them are traced between runs can count exactly what each config recorded.
//
//	phases N    call main.alpha N times, then main.beta N times, and exit
package main

import (
	"fmt"
	"os"
	"strconv"
)

var sink int

//go:noinline
func alpha(i int) int {
	sink += i
	return sink
}

//go:noinline
func beta(i int) int {
	sink -= i
	return sink
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: phases N")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[1])
	if err != nil || n < 0 {
		fmt.Fprintln(os.Stderr, "phases: bad number", os.Args[1])
		os.Exit(2)
	}
	for i := 0; i < n; i++ {
		alpha(i)
	}
	for i := 0; i < n; i++ {
		beta(i)
	}
}
