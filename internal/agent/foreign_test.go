package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/obs-agent/obs-agent/internal/selector"
	"github.com/obs-agent/obs-agent/internal/symbols"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

const tracefs = "/sys/kernel/tracing"

// mountTracefs makes sure tracefs is mounted; the independent counter
// below uses the kernel's own uprobe_events, not BPF.
func mountTracefs(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(tracefs, "uprobe_events")); err == nil {
		return
	}
	if out, err := exec.Command("mount", "-t", "tracefs", "nodev", tracefs).CombinedOutput(); err != nil {
		t.Skipf("tracefs not available to count hits independently: %v %s", err, out)
	}
}

// hitCounter counts how often each RET site of some functions runs, with
// plain tracefs uprobes and their hit counters in uprobe_profile: a
// counter that shares no code with obs-agent's BPF programs.
//
// A tracefs uprobe has no pid filter of its own: it counts every process
// that maps the file. So the file must be the test's alone (see
// privateCopy), or any other process running it (a gofmt of a lint run on
// a loaded machine) is counted too. Its events are in a group named after
// the test process, so two test processes counting at once (parallel CI
// runs) neither collide on event names nor delete each other's.
type hitCounter struct {
	t      *testing.T
	group  string
	file   string            // the probed executable
	events map[string]string // event name -> function
}

// eventGroup is the prefix of the counters' tracefs event groups; the
// test process's pid follows it.
const eventGroup = "obsagent_test_"

// privateCopy copies the executable bin into a directory of this test, so
// that the only processes running that file (inode) are the test's own.
func privateCopy(t *testing.T, bin string) string {
	t.Helper()
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), filepath.Base(bin))
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

func newHitCounter(t *testing.T, bin string, fns []*symbols.Func, b *symbols.Binary) *hitCounter {
	t.Helper()
	mountTracefs(t)
	h := &hitCounter{t: t, group: eventGroup + strconv.Itoa(os.Getpid()), file: bin, events: map[string]string{}}
	var defs bytes.Buffer
	for i, f := range fns {
		for j, r := range f.Rets {
			off, err := b.FileOffset(r)
			if err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("f%d_%d", i, j)
			h.events[name] = f.Name
			fmt.Fprintf(&defs, "p:%s/%s %s:%#x\n", h.group, name, bin, off)
		}
	}
	h.removeStale() // leftovers of crashed runs
	h.write("uprobe_events", defs.String(), false)
	t.Cleanup(func() { h.remove(h.group) })
	h.write("events/"+h.group+"/enable", "1\n", false)
	return h
}

// removeStale deletes the counters of test processes that are gone.
func (h *hitCounter) removeStale() {
	for _, g := range h.groups() {
		pid, err := strconv.Atoi(strings.TrimPrefix(g, eventGroup))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			h.remove(g)
		}
	}
}

// groups lists the counters' event groups in uprobe_events.
func (h *hitCounter) groups() []string {
	data, _ := os.ReadFile(filepath.Join(tracefs, "uprobe_events"))
	seen := map[string]bool{}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		// "p:obsagent_test_123/f0_1 /path:0x..."
		name, _, _ := strings.Cut(line, " ")
		if _, ev, ok := strings.Cut(name, ":"); ok && strings.HasPrefix(ev, eventGroup) {
			g, _, _ := strings.Cut(ev, "/")
			if !seen[g] {
				seen[g] = true
				out = append(out, g)
			}
		}
	}
	return out
}

// remove disables and deletes the events of group.
func (h *hitCounter) remove(group string) {
	h.write("events/"+group+"/enable", "0\n", true)
	data, _ := os.ReadFile(filepath.Join(tracefs, "uprobe_events"))
	for _, line := range strings.Split(string(data), "\n") {
		name, _, _ := strings.Cut(line, " ")
		if _, ev, ok := strings.Cut(name, ":"); ok && strings.HasPrefix(ev, group+"/") {
			h.write("uprobe_events", "-:"+ev+"\n", true)
		}
	}
}

func (h *hitCounter) write(file, data string, ignoreErr bool) {
	f, err := os.OpenFile(filepath.Join(tracefs, file), os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		_, err = f.WriteString(data)
		f.Close()
	}
	if err != nil && !ignoreErr {
		h.t.Fatalf("tracefs %s: %v", file, err)
	}
}

// counts sums the hits of each function's RET sites.
func (h *hitCounter) counts() map[string]uint64 {
	h.t.Helper()
	data, err := os.ReadFile(filepath.Join(tracefs, "uprobe_profile"))
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, line := range strings.Split(string(data), "\n") {
		// "  /path/to/bin  f0_1  1234"
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		// Event names repeat across groups: only the file's own hits,
		// the first field, are the counters'.
		fn, ok := h.events[f[len(f)-2]]
		if !ok || f[0] != h.file {
			continue
		}
		n, err := strconv.ParseUint(f[len(f)-1], 10, 64)
		if err != nil {
			h.t.Fatalf("uprobe_profile line %q: %v", line, err)
		}
		out[fn] += n
	}
	return out
}

// TestForeignBinaryGofmt traces a real program we did not write, the Go
// toolchain's gofmt (built without DWARF), while it formats a file. Its
// output must be the same as untraced, and the calls recorded per function
// must equal an independent count of their returns.
func TestForeignBinaryGofmt(t *testing.T) {
	testutil.RequireRoot(t)
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatal(err)
	}
	// A copy of the toolchain's gofmt: the independent counter counts
	// every process running the file it probes, and other gofmt processes
	// (lint runs of a busy machine) run the toolchain's.
	gofmt := privateCopy(t, filepath.Join(strings.TrimSpace(string(goroot)), "bin", "gofmt"))
	b, err := symbols.Open(gofmt)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.HasDWARF {
		t.Logf("note: %s has DWARF", gofmt)
	}
	patterns := []string{"go/scanner.*", "go/printer.(*printer).print*", "go/parser.(*parser).parseIdent"}
	sel, err := selector.Select(b, patterns, nil, selector.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	var fns []*symbols.Func
	for _, s := range sel.Funcs {
		fns = append(fns, s.Func)
	}
	src := filepath.Join(testutil.RepoRoot(t), "internal", "agent", "agent.go")
	want, err := exec.Command(gofmt, "-d", "-s", src).CombinedOutput()
	if err != nil && !isExit(err) {
		t.Fatal(err)
	}

	hc := newHitCounter(t, gofmt, fns, b)
	opts := testOptions(t)
	opts.Include = patterns
	var got bytes.Buffer
	res, err := Run(context.Background(), []string{gofmt, "-d", "-s", src}, nil, &got, io.Discard, opts)
	if err != nil {
		t.Fatal(err)
	}
	independent := hc.counts()
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("gofmt output changed under tracing:\n--- untraced\n%s\n--- traced\n%s", want, got.Bytes())
	}
	calls := readCalls(t, opts.DB)
	checkResult(t, res, len(calls))
	recorded := map[string]uint64{}
	for _, c := range calls {
		recorded[c.Function]++
	}
	total := uint64(0)
	for _, f := range fns {
		if recorded[f.Name] != independent[f.Name] {
			t.Errorf("%s: recorded %d calls, tracefs counted %d returns", f.Name, recorded[f.Name], independent[f.Name])
		}
		total += recorded[f.Name]
	}
	if total < 1000 {
		t.Fatalf("only %d calls recorded over %d functions: the workload did not exercise them", total, len(fns))
	}
	t.Logf("gofmt (%s, DWARF %v): %d functions, %d calls, all matched by tracefs", b.GoVersion, b.HasDWARF, len(fns), total)
}

func isExit(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee)
}
