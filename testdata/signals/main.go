// Command signals is the target of the tests of `obs-agent run`'s signal
// forwarding. It prints "ready" once it handles SIGINT, SIGTERM and SIGHUP,
// waits for one, passes it to main.handle (traced by the tests) and exits
// with the code handle returns, 10+N for signal N: an exit code that only
// the program itself can have chosen, and that names the signal it got.
// Like a program using signal.NotifyContext, it gives the signals back to
// their default action once it has one, so a second SIGINT kills it (exit
// by signal): the tests see a signal that arrives twice. With -linger it
// waits for a line on stdin before it exits, so a test can decide when.
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	fmt.Println("ready")
	s := <-c
	signal.Reset()
	code := handle(s.(syscall.Signal))
	if len(os.Args) > 1 && os.Args[1] == "-linger" {
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	os.Exit(code)
}

// handle returns the exit code for signal s.
//
//go:noinline
func handle(s syscall.Signal) int {
	fmt.Println("got", s)
	return 10 + int(s)
}
