// Command manyfuncs has 2,500 traceable functions (funcs.go). It calls
// each once per round; with -wait it waits for a line on stdin before each
// round, and exits on EOF.
package main

import (
	"bufio"
	"fmt"
	"os"
)

//go:noinline
func sink(x int) int { return x ^ 1 }

func main() {
	wait := len(os.Args) > 1 && os.Args[1] == "-wait"
	in := bufio.NewReader(os.Stdin)
	for {
		if wait {
			if _, err := in.ReadString('\n'); err != nil {
				return
			}
		}
		s := 0
		for i, f := range funcs {
			s += f(i)
		}
		fmt.Println("round", s)
		if !wait {
			return
		}
	}
}
