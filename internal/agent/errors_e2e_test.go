package agent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// outcome is what one call must be recorded with.
type outcome struct {
	status record.Status
	typ    string
	text   string
}

func (o outcome) String() string { return fmt.Sprintf("%v %q %q", o.status, o.typ, o.text) }

func got(c *record.Call) outcome { return outcome{c.Status, c.ErrorType, c.Error} }

var ok = outcome{status: record.StatusOK}

func errOf(typ, text string) outcome { return outcome{record.StatusError, typ, text} }

// errsFuncs is, per function of `errs errors`, the outcome of its call
// number i (every one is called once per round i = 0..n-1, in order),
// as documented on each function in testdata/errs.
var errsFuncs = map[string]func(i int) outcome{
	"main.ErrOnly": func(i int) outcome {
		if i%3 == 0 {
			return errOf("*errors.errorString", fmt.Sprintf("erronly %d", i))
		}
		return ok
	},
	"main.IntErr": func(i int) outcome {
		if i%3 == 1 {
			return errOf("*fmt.wrapError", fmt.Sprintf("interr %d: base failure", i))
		}
		return ok
	},
	"main.StrErr": func(i int) outcome {
		if i%3 == 2 {
			return errOf("*errors.errorString", fmt.Sprintf("strerr %d", i))
		}
		return ok
	},
	"main.FloatErr": func(i int) outcome {
		if i%4 == 0 {
			return errOf("*fmt.wrapErrors", fmt.Sprintf("floaterr %d: base failure + other failure", i))
		}
		return ok
	},
	// A custom type's Error method cannot run: its value is recorded as
	// Go syntax (MyErr starts with a string field, which must not be
	// taken for the message).
	"main.Struct3Err": func(i int) outcome {
		if i%2 == 0 {
			return errOf("*main.MyErr", fmt.Sprintf(`&main.MyErr{Op:"struct3", Code:%d}`, i))
		}
		return ok
	},
	"main.Struct9Err": func(i int) outcome {
		if i%3 == 0 {
			return errOf("*errors.errorString", fmt.Sprintf("struct9 %d", i))
		}
		return ok
	},
	"main.Ints8Err": func(i int) outcome {
		if i%3 == 1 {
			return errOf("*fmt.wrapError", fmt.Sprintf("ints8 %d: base failure", i))
		}
		return ok
	},
	"main.Ints9Named": func(i int) outcome {
		if i%3 == 2 {
			return errOf("*main.MyErr", fmt.Sprintf(`&main.MyErr{Op:"ints9", Code:%d}`, i))
		}
		return ok
	},
	"main.G[go.shape.int]": func(i int) outcome {
		if s := strconv.Itoa(i * 7); len(s)%2 == 0 {
			return errOf("*errors.errorString", "g "+s)
		}
		return ok
	},
	"main.G[go.shape.string]": func(i int) outcome {
		if i%2 == 0 {
			return errOf("*errors.errorString", "g "+strings.Repeat("x", i))
		}
		return ok
	},
	"main.(*Obj).Check": func(i int) outcome {
		if i%5 == 0 {
			return errOf("*fmt.wrapError", fmt.Sprintf("obj %d: base failure", i))
		}
		return ok
	},
	"main.xs": func(int) outcome { return ok },
}

// errorsTree is the call tree of runErrors(n) under prefix, as paths.
func errorsTree(prefix string, n int, want map[string]int) {
	r := prefix + ">main.runErrors"
	want[r]++
	for f := range errsFuncs {
		want[r+">"+f] += n
	}
}

// checkErrorsOutcomes checks every call of the error-returning functions,
// in call order, against errsFuncs. Without DWARF the error result cannot
// be located, so every call is ok.
func checkErrorsOutcomes(t *testing.T, calls []record.Call, n int, noDWARF bool) (failed int) {
	t.Helper()
	byFunc := map[string][]*record.Call{}
	for i := range calls {
		byFunc[calls[i].Function] = append(byFunc[calls[i].Function], &calls[i])
	}
	for f, want := range errsFuncs {
		cs := byFunc[f]
		// Ids are taken at entry, so they give the call order.
		sort.Slice(cs, func(a, b int) bool { return cs[a].ID < cs[b].ID })
		if len(cs) != n {
			t.Errorf("%s: %d calls, want %d", f, len(cs), n)
			continue
		}
		for i, c := range cs {
			w := want(i)
			if w.status == record.StatusError {
				failed++
			}
			if noDWARF {
				w = ok
			}
			if got(c) != w {
				t.Errorf("%s call %d: %v, want %v", f, i, got(c), w)
			}
		}
	}
	return failed
}

// runErrs runs `errs args...` under Run.
func runErrs(t *testing.T, b testutil.Build, opts Options, args ...string) (*Result, []record.Call, string) {
	t.Helper()
	bin := testutil.BuildProgram(t, b)
	var out bytes.Buffer
	res, err := Run(context.Background(), append([]string{bin}, args...), nil, &out, io.Discard, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res, readCalls(t, opts.DB), out.String()
}

// errsBuilds are the local toolchain's builds and the release matrix.
var errsBuilds = append([]testutil.Build{
	{Program: "errs"},
	{Program: "errs", PIE: true},
	{Program: "errs", Stripped: true},
}, testutil.Matrix("errs")...)

// TestErrorReturns: every error-returning call is recorded with status
// error, its dynamic type and, for the types that hold their message, the
// text; every nil-error call is ok; counts are exact.
func TestErrorReturns(t *testing.T) {
	testutil.RequireRoot(t)
	const n = 12
	for _, b := range errsBuilds {
		t.Run(b.String(), func(t *testing.T) {
			opts := testOptions(t)
			res, calls, out := runErrs(t, b, opts, "errors", strconv.Itoa(n))
			if res.ExitCode != 0 {
				t.Fatalf("exit %d, output %q", res.ExitCode, out)
			}
			want := map[string]int{"main.main": 1}
			errorsTree("main.main", n, want)
			diffPaths(t, paths(t, calls), want)
			checkResult(t, res, len(calls))
			// A stripped binary has no DWARF: nothing says which result is
			// the error or where it is at RET, so the BPF side is given no
			// location and every call is recorded ok.
			failed := checkErrorsOutcomes(t, calls, n, b.Stripped)
			if out != fmt.Sprintf("errors %d\n", failed) {
				t.Errorf("program says %q, the pattern gives %d failures", out, failed)
			}
			for _, c := range calls {
				if c.Function == "main.main" || c.Function == "main.runErrors" {
					if got(&c) != ok {
						t.Errorf("%s: %v", c.Function, got(&c))
					}
				}
			}
		})
	}
}

// panicOutcome is the recorded outcome of a frame unwound by
// panicValue(k) in testdata/errs.
func panicOutcome(k int) outcome {
	v := [...]struct{ typ, text string }{
		{"string", "boom string"},
		{"*errors.errorString", "boom error"},
		{"int", "42"},
		{"float64", "2.5"},
		{"main.Point", "main.Point{X:1, Y:2}"}, // a struct: Go syntax
		{"*fmt.wrapError", "boom wrapped: base failure"},
	}[k]
	return outcome{record.StatusPanic, v.typ, v.text}
}

// caughtText is what catchErr(k) returns: fmt's %v of the value.
var caughtText = [...]string{"boom string", "boom error", "42", "2.5", "{1 2}", "boom wrapped: base failure"}

// TestRecoveredPanics traces `errs recover` with untracedCatch and its
// closure excluded, so one recovery happens in untraced code.
func TestRecoveredPanics(t *testing.T) {
	testutil.RequireRoot(t)
	for _, b := range errsBuilds {
		t.Run(b.String(), func(t *testing.T) {
			opts := testOptions(t)
			opts.Exclude = []string{"main.untraced*"}
			res, calls, out := runErrs(t, b, opts, "recover")
			if res.ExitCode != 0 || out != "recover 188\n" {
				t.Fatalf("exit %d, output %q", res.ExitCode, out)
			}
			checkResult(t, res, len(calls))

			const R = "main.main>main.runRecover"
			want := map[string]int{"main.main": 1, R: 1, R + ">main.catchOK": 6, R + ">main.catchErr": 6, R + ">main.after": 7}
			chain := func(p string, n int) string { return p + strings.Repeat(">main.thrower", n) }
			for k := 0; k < 6; k++ {
				for d := 1; d <= k%3+1; d++ {
					want[chain(R+">main.catchOK", d)]++
				}
				in := chain(R+">main.catchOK", k%3+1)
				want[in+">main.panicValue"]++
				want[in+">main.catchOK.func1"]++
				want[chain(R+">main.catchErr", 1)]++
				want[chain(R+">main.catchErr", 2)]++
				want[chain(R+">main.catchErr", 2)+">main.panicValue"]++
				want[chain(R+">main.catchErr", 2)+">main.catchErr.func1"]++
			}
			// Under the untraced recovering frame, the throwers hang off
			// runRecover.
			for d := 1; d <= 3; d++ {
				want[chain(R, d)]++
			}
			want[chain(R, 3)+">main.panicValue"]++
			pt := paths(t, calls)
			diffPaths(t, pt, want)

			// Outcomes: the round k of a call is its rank among the
			// calls of its function under the same parent kind, in id
			// order; throwers take their round from their catcher.
			byID := map[uint64]*record.Call{}
			for i := range calls {
				byID[calls[i].ID] = &calls[i]
			}
			catcher := func(c *record.Call) *record.Call {
				for p := byID[c.ParentID]; p != nil; p = byID[p.ParentID] {
					if p.Function != "main.thrower" {
						return p
					}
				}
				return nil
			}
			round := map[uint64]int{}
			for _, f := range []string{"main.catchOK", "main.catchErr"} {
				var cs []*record.Call
				for i := range calls {
					if calls[i].Function == f {
						cs = append(cs, &calls[i])
					}
				}
				sort.Slice(cs, func(a, b int) bool { return cs[a].ID < cs[b].ID })
				for k, c := range cs {
					round[c.ID] = k
				}
			}
			for i := range calls {
				c := &calls[i]
				w := ok
				switch c.Function {
				case "main.thrower":
					ct := catcher(c)
					k := 0 // untracedCatch panics with panicValue(0)
					if ct.Function != "main.runRecover" {
						k = round[ct.ID]
					}
					w = panicOutcome(k)
				case "main.catchErr":
					if !b.Stripped {
						w = errOf("*errors.errorString", "caught: "+caughtText[round[c.ID]])
					}
				}
				if got(c) != w {
					t.Errorf("%s (call %d, parent %d): %v, want %v", c.Function, c.ID, c.ParentID, got(c), w)
				}
			}
		})
	}
}

// lastSeen is, per goroutine, the latest time a probe fired on it: the
// latest start or end of its recorded calls.
func lastSeen(calls []record.Call) map[uint64]int64 {
	out := map[uint64]int64{}
	for _, c := range calls {
		out[c.GoID] = max(out[c.GoID], c.Start, c.Start+c.Duration)
	}
	return out
}

// TestUnrecoveredPanic: the program panics three traced frames deep and
// exits with code 2. Every call completed before is stored, and the
// panicking chain up to main.main is closed with status panic and the
// value's text.
func TestUnrecoveredPanic(t *testing.T) {
	testutil.RequireRoot(t)
	for _, b := range []testutil.Build{{Program: "errs"}, {Program: "errs", Stripped: true}} {
		t.Run(b.String(), func(t *testing.T) {
			opts := testOptions(t)
			res, calls, _ := runErrs(t, b, opts, "crash")
			if res.ExitCode != 2 || res.Signaled {
				t.Fatalf("exit code %d (signaled %v), want 2", res.ExitCode, res.Signaled)
			}
			want := map[string]int{
				"main.main":                                     1,
				"main.main>main.crashA":                         1,
				"main.main>main.crashA>main.crashB":             1,
				"main.main>main.crashA>main.crashB>main.crashC": 1,
			}
			errorsTree("main.main", 3, want)
			diffPaths(t, paths(t, calls), want)
			checkResult(t, res, len(calls))
			checkErrorsOutcomes(t, calls, 3, b.Stripped)
			p := outcome{record.StatusPanic, "string", "fatal: crash value 1"}
			for i := range calls {
				c := &calls[i]
				switch c.Function {
				case "main.main", "main.crashA", "main.crashB", "main.crashC":
					if got(c) != p {
						t.Errorf("%s: %v, want %v", c.Function, got(c), p)
					}
				case "main.runErrors":
					if got(c) != ok {
						t.Errorf("%s: %v, want ok", c.Function, got(c))
					}
				}
			}
		})
	}
}

// TestExitWhileOpen: os.Exit(3) inside traced calls; they are recorded
// unfinished, ending when their goroutine was last seen.
func TestExitWhileOpen(t *testing.T) {
	testutil.RequireRoot(t)
	opts := testOptions(t)
	res, calls, _ := runErrs(t, testutil.Build{Program: "errs"}, opts, "exit")
	if res.ExitCode != 3 || res.Signaled {
		t.Fatalf("exit code %d (signaled %v), want 3", res.ExitCode, res.Signaled)
	}
	want := map[string]int{
		"main.main":                                  1,
		"main.main>main.exitA":                       1,
		"main.main>main.exitA>main.exitB":            1,
		"main.main>main.exitA>main.exitB>main.after": 1,
	}
	errorsTree("main.main", 3, want)
	diffPaths(t, paths(t, calls), want)
	checkResult(t, res, len(calls))
	checkErrorsOutcomes(t, calls, 3, false)
	seen := lastSeen(calls)
	for _, c := range calls {
		switch c.Function {
		case "main.main", "main.exitA", "main.exitB":
			if c.Status != record.StatusUnfinished || c.Error != "" {
				t.Errorf("%s: %v, want unfinished", c.Function, got(&c))
			}
			if end := c.Start + c.Duration; end != seen[c.GoID] {
				t.Errorf("%s ends at %d, its goroutine was last seen at %d", c.Function, end, seen[c.GoID])
			}
		case "main.after", "main.runErrors":
			if c.Status != record.StatusOK {
				t.Errorf("%s: %v, want ok", c.Function, got(&c))
			}
		}
	}
}

// TestKilledWhileOpen: a process blocked inside traced calls, in two
// goroutines, is killed with SIGKILL while attached. The open calls are
// recorded unfinished, ending when their goroutine was last seen.
func TestKilledWhileOpen(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "errs"})
	cmd := exec.Command(bin, "-wait", "hang")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(ready)
			}
		}
	}()
	opts := testOptions(t)
	opts.OnReady = func(int) { in.Write([]byte("go\n")) }
	type attachRes struct {
		res *Result
		err error
	}
	done := make(chan attachRes, 1)
	go func() {
		res, err := Attach(context.Background(), cmd.Process.Pid, opts)
		done <- attachRes{res, err}
	}()
	select {
	case <-ready:
	case r := <-done:
		t.Fatalf("attach ended before the program was ready: %v", r.err)
	case <-time.After(30 * time.Second):
		t.Fatal("program never printed ready")
	}
	time.Sleep(200 * time.Millisecond)
	if err := cmd.Process.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	calls := readCalls(t, opts.DB)
	// main.main was entered before the probes went in.
	want := map[string]int{
		"main.hangA":                            1,
		"main.hangA>main.hangB":                 1,
		"main.hangA>main.hangB>main.after":      1,
		"main.hangA>main.hangWorker":            1,
		"main.hangA>main.hangWorker>main.after": 1,
	}
	diffPaths(t, paths(t, calls), want)
	checkResult(t, r.res, len(calls))
	seen := lastSeen(calls)
	for _, c := range calls {
		if c.Function == "main.after" {
			if c.Status != record.StatusOK {
				t.Errorf("after: %v, want ok", got(&c))
			}
			continue
		}
		if c.Status != record.StatusUnfinished || c.Error != "" || c.ErrorType != "" {
			t.Errorf("%s: %v, want unfinished", c.Function, got(&c))
		}
		if end := c.Start + c.Duration; end != seen[c.GoID] || c.Duration <= 0 {
			t.Errorf("%s: duration %d ends at %d, its goroutine was last seen at %d", c.Function, c.Duration, end, seen[c.GoID])
		}
	}
}

// TestErrorTexts: the errors of the standard library's common types,
// wrapped chains of them and custom types are recorded with the text the
// program's own err.Error() gives (Go syntax for custom types), on plain,
// PIE, stripped and older-release builds, both when they are returned and
// when they are panic values. `errs texts` prints, per call of
// main.(*Texts).Err, its dynamic type and the text a tracer must record.
func TestErrorTexts(t *testing.T) {
	testutil.RequireRoot(t)
	builds := append(errsBuilds, testutil.Build{Program: "errs", Stripped: true, PIE: true},
		testutil.Build{Program: "errs", Toolchain: "go1.27.4"}, testutil.Build{Program: "errs", Toolchain: "go1.21.13", Stripped: true})
	for _, b := range builds {
		t.Run(b.String(), func(t *testing.T) {
			opts := testOptions(t)
			res, calls, out := runErrs(t, b, opts, "texts")
			if res.ExitCode != 0 {
				t.Fatalf("exit %d, output %q", res.ExitCode, out)
			}
			checkTexts(t, calls, out)
		})
	}
}

// checkTexts checks the calls of main.(*Texts).Err and main.panicWith
// that one run of `errs texts` made against what it printed (out).
func checkTexts(t *testing.T, calls []record.Call, out string) {
	t.Helper()
	var want []outcome
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 || f[0] != "TEXT" || f[1] != strconv.Itoa(len(want)) {
			t.Fatalf("bad line %q", line)
		}
		text, err := strconv.Unquote(f[3])
		if err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		want = append(want, errOf(f[2], text))
	}
	var texts []*record.Call
	for i := range calls {
		if calls[i].Function == "main.(*Texts).Err" {
			texts = append(texts, &calls[i])
		}
	}
	sort.Slice(texts, func(a, b int) bool { return texts[a].ID < texts[b].ID })
	if len(texts) != len(want) {
		t.Fatalf("%d calls of main.(*Texts).Err recorded, the program made %d", len(texts), len(want))
	}
	for k, c := range texts {
		if g := got(c); g != want[k] || c.ErrorTruncated {
			t.Errorf("error %d: recorded %v (truncated %v), the program says %v", k, g, c.ErrorTruncated, want[k])
		}
	}
	// The same errors as panic values: main.panicWith's frames.
	var panics []*record.Call
	for i := range calls {
		if calls[i].Function == "main.panicWith" {
			panics = append(panics, &calls[i])
		}
	}
	sort.Slice(panics, func(a, b int) bool { return panics[a].ID < panics[b].ID })
	if len(panics) != len(want) {
		t.Fatalf("%d calls of main.panicWith recorded, the program made %d", len(panics), len(want))
	}
	for k, c := range panics {
		w := outcome{record.StatusPanic, want[k].typ, want[k].text}
		if g := got(c); g != w || c.ErrorTruncated {
			t.Errorf("panic %d: recorded %v (truncated %v), want %v", k, g, c.ErrorTruncated, w)
		}
	}
}

// TestExePIEErrorTexts traces a PIE build by --exe: each of its processes
// is loaded at its own address (ASLR), and the error types, texts and
// panic values of each are still found, from the bias the BPF programs
// note per process at its first traced entry (stripped too: no DWARF).
func TestExePIEErrorTexts(t *testing.T) {
	testutil.RequireRoot(t)
	for _, b := range []testutil.Build{{Program: "errs", PIE: true}, {Program: "errs", PIE: true, Stripped: true}} {
		t.Run(b.String(), func(t *testing.T) {
			bin := testutil.BuildProgram(t, b)
			db := filepath.Join(t.TempDir(), "obs.db")
			stop := exeSession(t, bin, db, func(o *Options) { o.Include = []string{"main.*"} })
			outs := map[uint32]string{}
			for range 2 {
				cmd := exec.Command(bin, "texts")
				out, err := cmd.Output()
				if err != nil {
					t.Fatal(err)
				}
				outs[uint32(cmd.Process.Pid)] = string(out)
			}
			stop()
			byPID := map[uint32][]record.Call{}
			for _, c := range readCalls(t, db) {
				byPID[c.PID] = append(byPID[c.PID], c)
			}
			for pid, out := range outs {
				t.Run(fmt.Sprint("pid ", pid), func(t *testing.T) { checkTexts(t, byPID[pid], out) })
			}
		})
	}
}
