package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
)

func TestRetentionStatusAndRun(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "obs.db")
	s, err := store.Open(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	old := now.Add(-5 * time.Hour).UTC().Truncate(time.Hour).Add(10 * time.Minute)
	if err := s.WriteCalls([]record.Call{
		{ID: 1, PID: 1, Function: "main.old", Start: old.UnixNano(), Duration: 5, Status: record.StatusError, Error: "e"},
		{ID: 2, PID: 1, Function: "main.new", Start: now.UnixNano(), Duration: 5},
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	out, err := runCLI(t, "retention", "status", "--db", db, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	rows := jsonLines(t, out)
	oldName := "calls_" + old.Format("2006010215")
	var found bool
	for _, r := range rows {
		for _, k := range []string{"partition", "kind", "start", "end", "rows", "bytes"} {
			if _, ok := r[k]; !ok {
				t.Fatalf("key %q missing in %v", k, r)
			}
		}
		if r["partition"] == oldName {
			found = true
			if r["kind"] != "calls" || r["rows"] != 1.0 || r["start"] != old.Truncate(time.Hour).Format(time.RFC3339) || r["bytes"].(float64) <= 0 {
				t.Errorf("status row %v", r)
			}
		}
	}
	if !found {
		t.Fatalf("%s not listed:\n%s", oldName, out)
	}

	arch := filepath.Join(dir, "archive")
	out, err = runCLI(t, "retention", "run", "--db", db, "--older-than", "2h", "--archive", arch)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(arch, "obs-"+old.Format("2006010215")+".db")
	if !strings.Contains(out, "archived to "+file) {
		t.Errorf("run output:\n%s", out)
	}
	out, _ = runCLI(t, "retention", "status", "--db", db, "--format", "json")
	if strings.Contains(out, oldName) {
		t.Errorf("%s still listed after run", oldName)
	}
	// The archive is a store of its own, readable through the query path.
	out, err = runCLI(t, "query", "calls", "--db", file, "--since", "0", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	if rows := jsonLines(t, out); len(rows) != 1 || rows[0]["function"] != "main.old" || rows[0]["error"] != "e" {
		t.Errorf("archive query %v", rows)
	}
	// Only the new call is left in the store.
	out, _ = runCLI(t, "query", "calls", "--db", db, "--since", "0", "--format", "json")
	if rows := jsonLines(t, out); len(rows) != 1 || rows[0]["function"] != "main.new" {
		t.Errorf("store after run %v", rows)
	}
	out, _ = runCLI(t, "retention", "status", "--db", db)
	if !strings.Contains(out, "PARTITION") || !strings.Contains(out, "total") {
		t.Errorf("status table:\n%s", out)
	}
}

func TestRetentionMissingStore(t *testing.T) {
	db := filepath.Join(t.TempDir(), "none.db")
	for _, args := range [][]string{{"retention", "status", "--db", db}, {"retention", "run", "--db", db}} {
		if _, err := runCLI(t, args...); err == nil || !strings.Contains(err.Error(), "no store at") {
			t.Errorf("%v: %v", args, err)
		}
	}
	if _, err := os.Stat(db); !os.IsNotExist(err) {
		t.Error("retention created a store")
	}
}
