package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/obs-agent/obs-agent/internal/agent"
)

// TestMemoryFlagsRange: --memory-limit, --queue-memory and --spill-dir out
// of range are refused with the range, before anything runs.
func TestMemoryFlagsRange(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	script := filepath.Join(t.TempDir(), "script.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(t.TempDir(), "obs.db")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--memory-limit", "10"}, "--memory-limit 10 is out of range: want from 64 to 1048576"},
		{[]string{"--memory-limit", "-1"}, "--memory-limit -1 is out of range"},
		{[]string{"--memory-limit", "2000000"}, "--memory-limit 2000000 is out of range"},
		{[]string{"--queue-memory", "0"}, fmt.Sprintf("--queue-memory 0 is out of range: want from 1 to %d", agent.DefaultMemoryLimit>>20-1)},
		{[]string{"--queue-memory", "-5"}, "--queue-memory -5 is out of range"},
		{[]string{"--memory-limit", "64", "--queue-memory", "64"}, "--queue-memory 64 is out of range: want from 1 to 63"},
		{[]string{"--spill-dir", ""}, "--spill-dir is empty"},
	} {
		for _, cmd := range [][]string{{"run"}, {"attach", "--pid", "1"}} {
			args := append(append(append([]string{}, cmd...), "--db", db, "-f", "main.*"), c.args...)
			if cmd[0] == "run" {
				args = append(args, "--", script)
			}
			_, _, err := cli(t, args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%v: %v, want %q", args, err, c.want)
			}
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the program ran")
	}
	if _, err := os.Stat(db); err == nil {
		t.Error("a store was created")
	}
}
