// Command phases is a tracing target for the daemon tests: each run calls
// two functions a known number of times, so a test that changes which of
// them are traced between runs can count exactly what each config recorded.
//
//	phases N         call main.alpha N times, then main.beta N times, and exit
//	phases wait N    print "ready", wait for a line on stdin, then do the same
//	                 (a process that lives across a reload)
//	phases serve     print "ready", then call main.outer once, which obeys
//	                 the lines of stdin, each answered on stdout:
//	                   step   call alpha, beta and gamma once       -> "ok"
//	                   spin   call them over and over, without end, -> "spinning"
//	                          until the next line, which must be stop -> "spun N"
//	                          (N rounds of the three)
//	                   nest   print "nested", then call outer again, which
//	                          obeys until its own end               -> "unnested"
//	                   end    return from outer                     -> "done"
//	                 so a test knows every call exactly while its calls run
//	                 across a reload, all under one open call of outer
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
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

//go:noinline
func gamma(i int) int {
	sink ^= i
	return sink
}

// round is one step: a call of each of the three.
func round(i int) {
	alpha(i)
	beta(i)
	gamma(i)
}

// outer obeys the commands of in until "end" (see the package comment).
//
//go:noinline
func outer(in *bufio.Reader) {
	for {
		line, err := in.ReadString('\n')
		if err != nil {
			fmt.Fprintln(os.Stderr, "phases: stdin:", err)
			os.Exit(1)
		}
		switch line {
		case "step\n":
			round(0)
			fmt.Println("ok")
		case "spin\n":
			var stop atomic.Bool
			next := make(chan string)
			go func() {
				l, _ := in.ReadString('\n')
				stop.Store(true)
				next <- l
			}()
			fmt.Println("spinning")
			n := 0
			for !stop.Load() {
				round(n)
				n++
			}
			if l := <-next; l != "stop\n" {
				fmt.Fprintf(os.Stderr, "phases: %q while spinning, want stop\n", l)
				os.Exit(1)
			}
			fmt.Println("spun", n)
		case "nest\n":
			fmt.Println("nested")
			outer(in)
			fmt.Println("unnested")
		case "end\n":
			return
		default:
			fmt.Fprintf(os.Stderr, "phases: unknown command %q\n", line)
			os.Exit(2)
		}
	}
}

func main() {
	args := os.Args[1:]
	if len(args) == 1 && args[0] == "serve" {
		fmt.Println("ready")
		outer(bufio.NewReader(os.Stdin))
		fmt.Println("done")
		return
	}
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
