package main

import (
	"encoding/csv"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestSinkLossesStored: `run --otlp-endpoint` pointed at an endpoint
// nothing listens on loses every span, and says so in its exit line; the
// store keeps that account, and `query stats` shows it per sink in the
// table, JSON and CSV: the OTLP sink's ok records not sent and error
// records lost equal the exit line's, and its written is 0, while the
// store's own account says it kept every call.
func TestSinkLossesStored(t *testing.T) {
	testutil.RequireRoot(t)
	requireOTLPFlag(t)
	load := testutil.BuildProgram(t, testutil.Build{Program: "load"})
	db := filepath.Join(t.TempDir(), "obs.db")
	dead := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	// 2000 calls, 200 of them errors.
	cmd := exec.Command(agentBinary(t), "run", "--otlp-endpoint", dead, "-f", "main.work", "--db", db, "--", load, "rate", "1000", "2", "10")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || !strings.Contains(stdout.String(), "made main.work calls=2000 errors=200") {
		t.Fatalf("run: %v; stdout %q\n%s", err, stdout.String(), stderr.String())
	}
	acct := parseOTLPAccount(t, stderr.String())
	t.Logf("exit line's OTLP account: %+v", acct)
	if acct.sent != 0 || acct.lost != 2000 || acct.okNotSent+acct.errorsLost != acct.lost || acct.errorsLost != 200 {
		t.Fatalf("exit line: %+v; want nothing sent and all 2000 lost, the 200 errors among them", acct)
	}

	out, err := runCLI(t, "query", "stats", "--db", db, "--since", "0", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	rows := jsonLines(t, out)
	if len(rows) != 1 || rows[0]["function"] != "main.work" {
		t.Fatalf("stats rows %v", rows)
	}
	sinks, _ := rows[0]["sinks"].(map[string]any)
	o, _ := sinks["otlp"].(map[string]any)
	s, _ := sinks["store"].(map[string]any)
	if o == nil || s == nil {
		t.Fatalf("stats row has no otlp and store accounts: %v", rows[0])
	}
	if o["written"] != 0.0 || o["lost"] != float64(acct.lost) || o["errors_lost"] != float64(acct.errorsLost) {
		t.Errorf("stored otlp account %v; the exit line said %+v", o, acct)
	}
	if s["written"] != 2000.0 || s["lost"] != 0.0 || rows[0]["recorded"] != 2000.0 {
		t.Errorf("stored store account %v (recorded %v); want all 2000 written", s, rows[0]["recorded"])
	}

	out, err = runCLI(t, "query", "stats", "--db", db, "--since", "0", "--format", "csv")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(recs) != 2 {
		t.Fatalf("csv %q: %v", out, err)
	}
	col := map[string]string{}
	for i, h := range recs[0] {
		col[h] = recs[1][i]
	}
	if col["otlp_written"] != "0" || col["otlp_lost"] != strconv.Itoa(acct.lost) || col["otlp_errors_lost"] != strconv.Itoa(acct.errorsLost) ||
		col["store_written"] != "2000" {
		t.Errorf("csv columns %v; the exit line said %+v", col, acct)
	}

	out, err = runCLI(t, "query", "stats", "--db", db, "--since", "0")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("otlp        0  %d         %d          %d   main.work", acct.lost, acct.okNotSent, acct.errorsLost)
	if !strings.Contains(out, "records per sink") || !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(want), " ")) {
		t.Errorf("table does not show the otlp sink's line %q:\n%s", want, out)
	}
}
