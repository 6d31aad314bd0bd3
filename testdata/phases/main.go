// Command phases is a tracing target for the daemon tests: each run calls
// two functions a known number of times, so a test that changes which of
// them are traced between runs can count exactly what each config recorded.
//
//	phases N         call main.alpha N times, then main.beta N times, and exit
//	phases wait N    print "ready", wait for a line on stdin, then do the same
//	                 (a process that lives across a reload)
package main

import (
	"bufio"
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
	args := os.Args[1:]
	if len(args) == 2 && args[0] == "wait" {
		fmt.Println("ready")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		args = args[1:]
	}
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: phases N | phases wait N")
		os.Exit(2)
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 0 {
		fmt.Fprintln(os.Stderr, "phases: bad number", args[0])
		os.Exit(2)
	}
	for i := 0; i < n; i++ {
		alpha(i)
	}
	for i := 0; i < n; i++ {
		beta(i)
	}
}
