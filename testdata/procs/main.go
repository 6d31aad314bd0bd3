// Command procs is a tracing target for attach --exe: processes of one
// binary that come and go, with known call counts.
//
//	procs count N        call main.tick N times (each returns an error
//	                     when its argument is a multiple of 10), then exit
//	procs wait N         print "ready", wait for a line on stdin, then count N
//	procs spawn K N      start K children `count N` from this same
//	                     executable, one after another, each living a few
//	                     milliseconds; print each child's pid on stdout
//
// main.tick is the only function the tests select: its count per process
// is exactly N, so a test can tell every process apart by its pid.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
)

var errTenth = errors.New("tenth")

var sink int

//go:noinline
func tick(i int) error {
	sink += i
	if i%10 == 0 {
		return errTenth
	}
	return nil
}

func count(n int) {
	for i := 1; i <= n; i++ {
		_ = tick(i)
	}
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		fmt.Fprintln(os.Stderr, "procs: bad number", s)
		os.Exit(2)
	}
	return n
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: procs count N | procs wait N | procs spawn K N")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "count":
		count(atoi(os.Args[2]))
	case "wait":
		fmt.Println("ready")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		count(atoi(os.Args[2]))
	case "spawn":
		k := atoi(os.Args[2])
		for i := 0; i < k; i++ {
			// /proc/self/exe: the very file this process runs, so the
			// children are processes of the same inode.
			c := exec.Command("/proc/self/exe", "count", os.Args[3])
			c.Stderr = os.Stderr
			if err := c.Start(); err != nil {
				fmt.Fprintln(os.Stderr, "procs:", err)
				os.Exit(1)
			}
			fmt.Println(c.Process.Pid)
			if err := c.Wait(); err != nil {
				fmt.Fprintln(os.Stderr, "procs:", err)
				os.Exit(1)
			}
		}
	default:
		fmt.Fprintln(os.Stderr, "procs: unknown mode", os.Args[1])
		os.Exit(2)
	}
}
