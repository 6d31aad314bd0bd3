// Command errs is a tracing target whose errors and panics are known in
// advance. The tests in internal/agent trace it and check, call by call,
// the status, error type and error text that were recorded. Every function
// is marked noinline so that each call is a real call.
//
//	errs [-wait] [-hold] mode [n]
//
// With -wait it reads one line from stdin before it starts, so a tracer can
// attach first. With -hold, once the mode's calls are done it prints
// "holding" and reads one line from stdin before it exits, so a tracer can
// be asked about the finished calls while the session still runs. Modes:
//
//	errors N    N rounds of every error-returning function (default 12);
//	            which calls fail follows the pattern in each function
//	texts       errors of the standard library's common types, wrapped
//	            chains and custom types, each printed with its text
//	recover     recovered panics with a string, an error, an int, a float
//	            and a struct value, at several depths
//	crash       some completed calls, then an unrecovered string panic
//	            three traced frames deep: the process exits with code 2
//	exit        os.Exit(3) while traced calls are open
//	hang        blocks inside traced calls until killed; prints "ready"
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "-wait" {
		args = args[1:]
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	if len(args) > 0 && args[0] == "-hold" {
		args = args[1:]
		defer func() {
			fmt.Println("holding")
			bufio.NewReader(os.Stdin).ReadString('\n')
		}()
	}
	mode := "errors"
	if len(args) > 0 {
		mode = args[0]
	}
	n := 12
	if len(args) > 1 {
		n, _ = strconv.Atoi(args[1])
	}
	switch mode {
	case "errors":
		fmt.Println("errors", runErrors(n))
	case "recover":
		fmt.Println("recover", runRecover())
	case "texts":
		runTexts(&Texts{})
	case "crash":
		runErrors(3)
		crashA(1)
	case "exit":
		runErrors(3)
		exitA(1)
	case "hang":
		hangA(1)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", mode)
		os.Exit(1)
	}
}

// MyErr is a custom error type. Its struct starts with a string, like
// *errors.errorString, but its text is only its Error method's: a tracer
// must not take Op for the message.
type MyErr struct {
	Op   string
	Code int
}

//go:noinline
func (e *MyErr) Error() string { return fmt.Sprintf("myerr %s %d", e.Op, e.Code) }

var (
	errBase  = errors.New("base failure")
	errOther = errors.New("other failure")
)

// S3 fits in three registers with its error after it.
type S3 struct{ A, B, C int64 }

// S9 takes all nine integer result registers: the error goes to the stack.
type S9 struct{ A, B, C, D, E, F, G, H, I int64 }

// The error-returning functions. The comment on each gives when it fails,
// with what dynamic type and text; the tests derive the same from i.

// ErrOnly fails when i%3 == 0: *errors.errorString "erronly <i>".
//
//go:noinline
func ErrOnly(i int) error {
	if i%3 == 0 {
		return errors.New("erronly " + strconv.Itoa(i))
	}
	return nil
}

// IntErr fails when i%3 == 1: *fmt.wrapError "interr <i>: base failure".
//
//go:noinline
func IntErr(i int) (int, error) {
	if i%3 == 1 {
		return -1, fmt.Errorf("interr %d: %w", i, errBase)
	}
	return i, nil
}

// StrErr fails when i%3 == 2: *errors.errorString "strerr <i>" (fmt.Errorf
// without %w).
//
//go:noinline
func StrErr(i int) (string, error) {
	if i%3 == 2 {
		return "", fmt.Errorf("strerr %d", i)
	}
	return strconv.Itoa(i), nil
}

// FloatErr fails when i%4 == 0: *fmt.wrapErrors
// "floaterr <i>: base failure + other failure".
//
//go:noinline
func FloatErr(i int) (float64, error) {
	if i%4 == 0 {
		return 0, fmt.Errorf("floaterr %d: %w + %w", i, errBase, errOther)
	}
	return float64(i) / 2, nil
}

// Struct3Err fails when i%2 == 0: *main.MyErr.
//
//go:noinline
func Struct3Err(i int) (S3, error) {
	if i%2 == 0 {
		return S3{}, &MyErr{Op: "struct3", Code: i}
	}
	return S3{int64(i), 2, 3}, nil
}

// Struct9Err fails when i%3 == 0: *errors.errorString "struct9 <i>".
//
//go:noinline
func Struct9Err(i int) (S9, error) {
	if i%3 == 0 {
		return S9{}, errors.New("struct9 " + strconv.Itoa(i))
	}
	return S9{A: int64(i), I: 9}, nil
}

// Ints8Err fails when i%3 == 1: *fmt.wrapError "ints8 <i>: base failure".
//
//go:noinline
func Ints8Err(i int) (int, int, int, int, int, int, int, int, error) {
	if i%3 == 1 {
		return 0, 0, 0, 0, 0, 0, 0, 0, fmt.Errorf("ints8 %d: %w", i, errBase)
	}
	return i, 1, 2, 3, 4, 5, 6, 7, nil
}

// Ints9Named fails when i%3 == 2: *main.MyErr.
//
//go:noinline
func Ints9Named(i int) (a, b, c, d, e, f, g, h, j int, err error) {
	if i%3 == 2 {
		err = &MyErr{Op: "ints9", Code: i}
		return
	}
	a, j = i, 9
	return
}

// G fails when the value's text has an even length: *errors.errorString
// "g <value>".
//
//go:noinline
func G[T any](v T) (T, error) {
	s := fmt.Sprint(v)
	if len(s)%2 == 0 {
		var zero T
		return zero, errors.New("g " + s)
	}
	return v, nil
}

// Obj has a method with a pointer receiver.
type Obj struct{ n int }

// Check fails when i%5 == 0: *fmt.wrapError "obj <i>: base failure".
//
//go:noinline
func (o *Obj) Check(i int) error {
	o.n++
	if i%5 == 0 {
		return fmt.Errorf("obj %d: %w", i, errBase)
	}
	return nil
}

// runErrors calls every function n times, with i = 0..n-1, G with the int
// i*7 and the string strings.Repeat("x", i), and returns how many failed.
//
//go:noinline
func runErrors(n int) int {
	failed := 0
	o := &Obj{}
	for i := 0; i < n; i++ {
		errs := make([]error, 0, 11)
		errs = append(errs, ErrOnly(i))
		_, err := IntErr(i)
		errs = append(errs, err)
		_, err = StrErr(i)
		errs = append(errs, err)
		_, err = FloatErr(i)
		errs = append(errs, err)
		_, err = Struct3Err(i)
		errs = append(errs, err)
		_, err = Struct9Err(i)
		errs = append(errs, err)
		_, _, _, _, _, _, _, _, err = Ints8Err(i)
		errs = append(errs, err)
		_, _, _, _, _, _, _, _, _, err = Ints9Named(i)
		errs = append(errs, err)
		_, err = G(i * 7)
		errs = append(errs, err)
		_, err = G(xs(i))
		errs = append(errs, err)
		errs = append(errs, o.Check(i))
		for _, err := range errs {
			if err != nil {
				failed++
			}
		}
	}
	return failed
}

// xs returns n x's.
//
//go:noinline
func xs(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'x'
	}
	return string(b)
}

// Point is a struct panic value.
type Point struct{ X, Y int }

// panicValue is the panic value of runRecover's round k.
//
//go:noinline
func panicValue(k int) any {
	switch k {
	case 0:
		return "boom string"
	case 1:
		return errors.New("boom error")
	case 2:
		return 42
	case 3:
		return 2.5
	case 4:
		return Point{X: 1, Y: 2}
	default:
		return fmt.Errorf("boom wrapped: %w", errBase)
	}
}

// runRecover makes this tree (every name is main.X), for k = 0..5:
//
//	runRecover
//	├─ catchOK(k)            recovers and returns 1: ok
//	│   ├─ thrower(k, k%3)   thrower×(k%3+1) nested, all status panic
//	│   │   └─ … thrower(k, 0) panics with panicValue(k)
//	│   │         ├─ panicValue(k)
//	│   │         └─ catchOK.func1 (the deferred recover, runs during the
//	│   │                           panic; ok)
//	├─ catchErr(k)           recovers and returns an error: error
//	│   └─ thrower(k, 1) ─ thrower(k, 0) ─ panicValue(k), catchErr.func1
//	└─ after(k)              after the recoveries: parent runRecover
//
// and then untracedCatch, whose recovery happens in untraced code when
// main.untraced* is excluded: throwers under it are closed as panicked by
// the next traced call, after(100).
//
//go:noinline
func runRecover() int {
	s := 0
	for k := 0; k < 6; k++ {
		s += catchOK(k)
		if err := catchErr(k); err != nil {
			s += 10
		}
		s += after(k)
	}
	untracedCatch()
	s += after(100)
	return s
}

//go:noinline
func catchOK(k int) (r int) {
	defer func() {
		if v := recover(); v != nil {
			r = 1
		}
	}()
	thrower(k, k%3)
	return 0
}

//go:noinline
func catchErr(k int) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("caught: %v", v)
		}
	}()
	thrower(k, 1)
	return nil
}

//go:noinline
func thrower(k, depth int) int {
	if depth == 0 {
		panic(panicValue(k))
	}
	return thrower(k, depth-1) + 1
}

//go:noinline
func after(k int) int { return k + 1 }

//go:noinline
func untracedCatch() {
	defer func() { recover() }()
	thrower(0, 2)
}

// crashA → crashB → crashC, which panics with a string nobody recovers.
//
//go:noinline
func crashA(i int) int { return crashB(i) + 1 }

//go:noinline
func crashB(i int) int { return crashC(i) + 1 }

//go:noinline
func crashC(i int) int {
	if i > 0 {
		panic("fatal: crash value " + strconv.Itoa(i))
	}
	return i
}

// exitA → exitB, which exits the process with code 3.
//
//go:noinline
func exitA(i int) int { return exitB(i) + 1 }

//go:noinline
func exitB(i int) int {
	after(i)
	os.Exit(3)
	return i
}

// hangA starts hangWorker in a goroutine, then hangB, and both block
// forever; "ready" is printed once both are blocked.
//
//go:noinline
func hangA(i int) int {
	started := make(chan struct{})
	go hangWorker(started)
	<-started
	return hangB(i) + 1
}

//go:noinline
func hangB(i int) int {
	after(i)
	fmt.Println("ready")
	time.Sleep(time.Hour)
	return i
}

// never is nil: receiving from it blocks forever, in a function that
// still has a RET to probe.
var never chan struct{}

//go:noinline
func hangWorker(started chan struct{}) {
	after(-1)
	close(started)
	<-never
}
