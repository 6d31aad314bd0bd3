// Command oldfixture is a generics-free test program for internal/symbols,
// buildable by Go 1.16+ toolchains (goid table and version checks).
package main

import (
	"errors"
	"fmt"
)

//go:noinline
func IntErr(x int) (int, error) {
	if x > 0 {
		return x, errors.New("boom")
	}
	return 0, nil
}

func main() { fmt.Println(IntErr(1)) }
