package agent

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/symbols"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestStrippedGofmtErrors traces the Go distribution's own gofmt, a
// stripped binary nobody here built, over its os, io and io/fs functions
// while it formats two files and fails on a third. Without DWARF only
// methods whose type descriptors give their signature can have their error
// located, and every error they record must be real: here, the EOF that
// os.(*File).Read returns once per file read to its end. Any other error
// record would be a false one.
func TestStrippedGofmtErrors(t *testing.T) {
	testutil.RequireRoot(t)
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Skipf("go env GOROOT: %v", err)
	}
	gofmt := filepath.Join(strings.TrimSpace(string(out)), "bin", "gofmt")
	bin, err := symbols.Open(gofmt)
	if err != nil {
		t.Skipf("%s: %v", gofmt, err)
	}
	if bin.HasDWARF {
		t.Skipf("%s has DWARF: this test is about binaries without", gofmt)
	}
	read := bin.Lookup("os.(*File).Read")
	if read == nil || read.ErrSource != symbols.ErrSourceMethodType || read.ErrResult == nil {
		t.Fatalf("os.(*File).Read: %+v, want its error result from the method type", read)
	}

	dir := t.TempDir()
	for name, src := range map[string]string{"a.go": "package a\n\nfunc A() {}\n", "b.go": "package a\nfunc  B() {}\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	opts := testOptions(t)
	opts.Include = []string{"os.*", "io.*", "io/fs.*"}
	var stdout bytes.Buffer
	res, err := Run(context.Background(), []string{gofmt, "-l", dir, filepath.Join(dir, "missing.go")}, nil, &stdout, io.Discard, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 2 || stdout.String() != filepath.Join(dir, "b.go")+"\n" {
		t.Fatalf("gofmt exited %d with output %q", res.ExitCode, stdout.String())
	}
	calls := readCalls(t, opts.DB)
	reads, eofs := 0, 0
	for _, c := range calls {
		if c.Function == "os.(*File).Read" {
			reads++
		}
		if c.Status != record.StatusError {
			continue
		}
		if c.Function != "os.(*File).Read" || c.ErrorType != "*errors.errorString" || c.Error != "EOF" {
			t.Errorf("%s: %v: not an error gofmt returns here", c.Function, got(&c))
			continue
		}
		eofs++
	}
	// Each of the two files is read to its end: at least one EOF each.
	if eofs < 2 || reads <= eofs {
		t.Errorf("%d calls of os.(*File).Read, %d of them EOF; want each file read to EOF", reads, eofs)
	}
	t.Logf("%d calls recorded, %d reads, %d EOF errors", len(calls), reads, eofs)
}
