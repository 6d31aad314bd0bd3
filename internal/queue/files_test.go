package queue

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestJournalRefusesPlantedDir plants, as uid 65534 in a sticky
// world-writable directory (like /tmp, beside a store there), what another
// user could put at <db>.spill: a link to a root directory, a dangling
// link, a directory of its own or a file. The journal must refuse it and
// create, write or delete nothing through it.
func TestJournalRefusesPlantedDir(t *testing.T) {
	testutil.RequireRootToPlant(t)
	plants := append([]testutil.Plant{{Name: "directory of another user", Script: func(p, _ string) string { return "mkdir " + p }}}, testutil.Plants...)
	for _, p := range plants {
		t.Run(p.Name, func(t *testing.T) {
			dirs := testutil.NewSharedDirs(t)
			victimDir := filepath.Join(dirs.Base, "rootdir")
			if err := os.Mkdir(victimDir, 0o755); err != nil {
				t.Fatal(err)
			}
			keep := filepath.Join(victimDir, "0000000000000001.jnl")
			if err := os.WriteFile(keep, []byte("not a journal"), 0o644); err != nil {
				t.Fatal(err)
			}
			spill := filepath.Join(dirs.Sticky, "obs.db.spill")
			target := victimDir
			if p.Name == "dangling symlink" || p.Name == "file of another user" {
				target = dirs.Victim
			}
			testutil.AsNobody(t, p.Script(spill, target))
			j := &journal{dir: spill, maxRecs: 10}
			_, err := j.open()
			if err == nil {
				_, err = j.appendRecords([]record.Call{{ID: 1, Function: "main.f", Status: record.StatusError}})
			}
			j.close()
			dirs.CheckRefused(t, err)
			ents, _ := os.ReadDir(victimDir)
			if len(ents) != 1 {
				t.Errorf("the linked directory was written: %v", ents)
			}
			if b, _ := os.ReadFile(keep); string(b) != "not a journal" {
				t.Errorf("a file in the linked directory was changed: %q", b)
			}
		})
	}
}

// TestJournalModes: the journal directory is 0700 and its segments, which
// hold error texts, 0600.
func TestJournalModes(t *testing.T) {
	spill := filepath.Join(t.TempDir(), "obs.db.spill")
	j := &journal{dir: spill, maxRecs: 10}
	defer j.close()
	if _, err := j.appendRecords([]record.Call{{ID: 1, Function: "main.f", Status: record.StatusError, Error: "token=secret"}}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(spill); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("directory %v, %v; want 0700", st.Mode(), err)
	}
	st, err := os.Stat(j.segs[0].path)
	if err != nil || st.Mode() != 0o600 {
		t.Fatalf("segment %v, %v; want 0600", st.Mode(), err)
	}
}
