// Package settle lets calltree wait for its goroutines to exit. It lives
// outside package main so that the tests' main.* patterns never trace it.
package settle

import "runtime"

// Wait returns once the goroutines started since base (runtime.NumGoroutine
// then) have exited. A goroutine's deferred wg.Done runs before its function
// returns, so wg.Wait alone would let the program exit while a traced
// goroutine function has not reached its RET yet, and the tracer would
// rightly record that call as unfinished.
func Wait(base int) {
	for runtime.NumGoroutine() > base {
		runtime.Gosched()
	}
}
