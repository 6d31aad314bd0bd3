// Command noret is a tracing target made of functions that never reach a
// RET instruction, so the tracer must follow them by their entry alone. Its
// call tree is known in advance (every name is main.X):
//
//	main
//	└─ run                              open at exit (finish never returns)
//	   ├─ rescue(1) ─ boom(1)            boom only panics ("boom 1");
//	   │              └─ rescue.func1    rescue's deferred recover runs
//	   │                                 while boom is being unwound
//	   ├─ rescue(2) ─ boom(2) ─ rescue.func1
//	   ├─ serve (its own goroutine)     loops forever: open at exit
//	   │  └─ handle ×3
//	   ├─ stepper (its own goroutine)   loops until step calls runtime.Goexit
//	   │  └─ step ×3                     the third one exits the goroutine
//	   └─ finish                        ends in os.Exit(0)
//
// Every function is marked noinline so that each call is a real call.
package main

import (
	"fmt"
	"os"
	"runtime"
)

// boom only panics: it has no RET.
//
//go:noinline
func boom(n int) {
	panic(fmt.Sprintf("boom %d", n))
}

//go:noinline
func rescue(n int) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg = fmt.Sprint(r)
		}
	}()
	boom(n)
	return ""
}

//go:noinline
func handle(v int) int { return v * 3 }

// serve loops forever, as a server's request loop does: it has no RET.
//
//go:noinline
func serve(reqs <-chan int, acks chan<- int) {
	for {
		select {
		case v := <-reqs:
			acks <- handle(v)
		}
	}
}

// step ends its goroutine with runtime.Goexit when i reaches 2.
//
//go:noinline
func step(i int, done chan<- struct{}) int {
	if i == 2 {
		defer close(done)
		runtime.Goexit()
	}
	return i + 1
}

// stepper loops until step ends the goroutine: it has no RET.
//
//go:noinline
func stepper(done chan<- struct{}) {
	for i := 0; ; i++ {
		step(i, done)
	}
}

// finish ends the process: it has no RET.
//
//go:noinline
func finish(sum int) {
	fmt.Println("result", sum)
	os.Exit(0)
}

//go:noinline
func run() {
	sum := len(rescue(1)) + len(rescue(2))
	reqs, acks := make(chan int), make(chan int)
	go serve(reqs, acks)
	for v := 1; v <= 3; v++ {
		reqs <- v
		sum += <-acks
	}
	done := make(chan struct{})
	go stepper(done)
	<-done
	finish(sum)
}

func main() {
	run()
}
