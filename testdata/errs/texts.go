package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"syscall"
)

// CodeErr is a custom error of an integer kind.
type CodeErr int

func (c CodeErr) Error() string { return "code " + strconv.Itoa(int(c)) }

// WrapErr is a custom error that holds another.
type WrapErr struct {
	Op  string
	Err error
}

func (w *WrapErr) Error() string { return w.Op + ": " + w.Err.Error() }

// textErrs is the number of errors makeErr knows.
const textErrs = 16

// makeErr returns error k of a set of the standard library's common error
// types, wrapped chains of them and custom types. None needs the network:
// the dial goes to a closed port of the loopback.
//
//go:noinline
func makeErr(k int) error {
	switch k {
	case 0:
		_, err := os.Open("/nonexistent/x")
		return err
	case 1:
		_, err := strconv.Atoi("abc")
		return err
	case 2:
		c, err := net.Dial("tcp", "127.0.0.1:1")
		if c != nil {
			c.Close()
		}
		return err
	case 3:
		var v any
		return json.Unmarshal([]byte("{"), &v)
	case 4:
		ctx, cancel := context.WithTimeout(context.Background(), 0)
		defer cancel()
		<-ctx.Done()
		return ctx.Err()
	case 5:
		_, err := url.Parse(":")
		return err
	case 6:
		_, err := net.LookupPort("tcp", "nosuchservice")
		return err
	case 7:
		_, err := base64.StdEncoding.DecodeString("!!!!")
		return err
	case 8:
		return syscall.ENOENT
	case 9:
		return errors.Join(errBase, errOther)
	case 10:
		_, err := os.Open("/nonexistent/y")
		return fmt.Errorf("load config: %w", err)
	case 11:
		return CodeErr(7)
	case 12:
		return &WrapErr{Op: "save", Err: errBase}
	case 13:
		return &MyErr{Op: "texts", Code: 13}
	case 14:
		return os.ErrDeadlineExceeded
	default:
		_, err := strconv.ParseInt("99999999999999999999", 10, 64)
		return &url.Error{Op: "Get", URL: "http://x/", Err: err}
	}
}

// texter is called through an interface, so that its method's signature
// is in the binary's itab even when the binary is stripped: a tracer can
// then locate the error result without DWARF.
type texter interface{ Err(k int) error }

// Texts returns error k; the tests compare what was recorded for each call
// with the line runTexts prints for it.
type Texts struct{ calls int }

//go:noinline
func (t *Texts) Err(k int) error {
	t.calls++
	return makeErr(k)
}

// want is the text a tracer must record for err: err.Error() for the
// standard library's types, Go syntax for custom types (whose Error
// method it cannot run).
func want(err error) string {
	switch e := err.(type) {
	case CodeErr:
		return fmt.Sprintf("main.CodeErr(%d)", int(e))
	case *WrapErr:
		return fmt.Sprintf("&main.WrapErr{Op:%q, Err:&errors.errorString{s:%q}}", e.Op, e.Err.Error())
	case *MyErr:
		return fmt.Sprintf("%#v", e)
	}
	return err.Error()
}

// panicWith panics with a non-nil err, which catchText recovers: a tracer
// must record panicWith's frame with err's type and the same text as when
// err is returned. (It has a RET, so that it can be probed today.)
//
//go:noinline
func panicWith(err error) int {
	if err != nil {
		panic(err)
	}
	return 0
}

//go:noinline
func catchText(err error) {
	defer func() { recover() }()
	panicWith(err)
}

// runTexts calls src.Err for every k and prints, per call, k, the dynamic
// type and the quoted text a tracer must record; then it panics with the
// error in panicWith and recovers.
//
//go:noinline
func runTexts(src texter) {
	for k := 0; k < textErrs; k++ {
		err := src.Err(k)
		fmt.Printf("TEXT\t%d\t%T\t%s\n", k, err, strconv.Quote(want(err)))
		catchText(err)
	}
}
