package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/store"
)

// The files in testdata/golden were written by the query code as it was
// before the query layer (internal/query) and the read structures
// (store/derived.go) existed: store.db is a real trace (testdata/calltree
// and testdata/errs run under `obs-agent run`, schema 2), commands.txt the
// query commands, NN.out/NN.err/NN.rc what each printed. The tests below
// run the same commands through today's code and want byte-identical
// output, on the store as it was and after an upgrade that built every
// index, span table and rollup of its (closed) hours.

type goldenCase struct {
	args           []string
	out, err, name string
	fails          bool
}

func goldenCases(t *testing.T) []goldenCase {
	t.Helper()
	b, err := os.ReadFile("testdata/golden/commands.txt")
	if err != nil {
		t.Fatal(err)
	}
	var cases []goldenCase
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		name := filepath.Join("testdata/golden", fmt.Sprintf("%02d", i+1))
		out, err := os.ReadFile(name + ".want.out")
		if os.IsNotExist(err) {
			out, err = os.ReadFile(name + ".out")
		}
		if err != nil {
			t.Fatal(err)
		}
		errText, _ := os.ReadFile(name + ".err")
		rc, _ := os.ReadFile(name + ".rc")
		cases = append(cases, goldenCase{args: strings.Fields(line), out: string(out), err: string(errText), name: name,
			fails: strings.TrimSpace(string(rc)) != "0"})
	}
	return cases
}

// copyGolden copies the golden store into a temporary directory (a query
// opens it read-only but may create its -shm file).
func copyGolden(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/golden/store.db")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "store.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func checkGolden(t *testing.T, db string) {
	t.Helper()
	const oldPath = "/work/wt/readlayer/cmd/obs-agent/testdata/golden/store.db"
	for _, c := range goldenCases(t) {
		out, err := runCLI(t, append(c.args, "--db", db)...)
		if c.fails {
			want := strings.TrimSpace(strings.TrimPrefix(strings.ReplaceAll(c.err, oldPath, db), "obs-agent: "))
			if err == nil || err.Error() != want {
				t.Errorf("%s (%s): error %v, want %q", c.name, strings.Join(c.args, " "), err, want)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s (%s): %v", c.name, strings.Join(c.args, " "), err)
			continue
		}
		if out != c.out {
			t.Errorf("%s (%s): output differs from the old code's\n got:\n%s\nwant:\n%s", c.name, strings.Join(c.args, " "), clip(out), clip(c.out))
		}
	}
}

func clip(s string) string {
	if len(s) > 3000 {
		return s[:3000] + "..."
	}
	return s
}

func TestGoldenQueriesOldStore(t *testing.T) {
	db := copyGolden(t)
	checkGolden(t, db)
	for _, f := range []struct {
		args []string
		file string
	}{
		{[]string{"retention", "status"}, "retention.out"},
		{[]string{"retention", "status", "--format", "json"}, "retention-json.out"},
	} {
		want, err := os.ReadFile(filepath.Join("testdata/golden", strings.TrimSuffix(f.file, ".out")+".want.out"))
		if errors.Is(err, fs.ErrNotExist) {
			want, err = os.ReadFile(filepath.Join("testdata/golden", f.file))
		}
		if err != nil {
			t.Fatal(err)
		}
		out, err := runCLI(t, append(f.args, "--db", db)...)
		if err != nil || out != string(want) {
			t.Errorf("%v: %v\n got:\n%s\nwant:\n%s", f.args, err, out, want)
		}
	}
}

func TestGoldenQueriesIndexedStore(t *testing.T) {
	db := copyGolden(t)
	// Upgrade to the current schema and build the read structures of the
	// trace's hours, which are closed by the clock given.
	s, err := store.Open(db, store.Options{Clock: func() time.Time { return time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.BuildDerived(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db2, err := sql.Open("sqlite", db)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	for _, name := range []string{"calls_2026113007__spans", "calls_2026113007__err", "calls_2026113007__parent", "calls_2026113007__func", "stats_2026113007__rollup"} {
		var state string
		if err := db2.QueryRow(`SELECT state FROM derived WHERE name = ?`, name).Scan(&state); err != nil || state != "done" {
			t.Errorf("%s: state %q, %v; want done", name, state, err)
		}
	}
	checkGolden(t, db)
}
