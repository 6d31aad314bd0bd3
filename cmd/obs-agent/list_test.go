package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// listFixtureSrc is a program with one function of each kind list reports.
const listFixtureSrc = `package main

import (
	"errors"
	"fmt"
	"os"
)

type Counter struct{ n int }

//go:noinline
func (c *Counter) Inc() { c.n++ }

//go:noinline
func fetchUser(id int) (string, error) {
	if id < 0 {
		return "", errors.New("negative id")
	}
	return fmt.Sprintf("user%d", id), nil
}

// double is inlined at its only call site and has no body of its own.
func double(x int) int { return x * 2 }

// small is inlined where called directly, but its address is taken too,
// so it also has a body.
func small(x int) int { return x + 1 }

var hook = small

//go:noinline
func fail(msg string) { panic(msg) }

func main() {
	c := &Counter{}
	c.Inc()
	u, err := fetchUser(len(os.Args))
	fmt.Println(u, err, double(len(os.Args)), small(len(os.Args)), hook(1))
	if len(os.Args) > 5 {
		fail("too many")
	}
}
`

var (
	listFixtureOnce sync.Once
	listFixtureDir  string
	listFixtureErr  error
)

// listFixture builds the fixture once per variant: "" (DWARF), "nodwarf"
// (-ldflags=-w) and "stripped" (-s -w).
func listFixture(t *testing.T, variant string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds Go programs")
	}
	listFixtureOnce.Do(func() {
		dir, err := os.MkdirTemp("", "list-fixture")
		if err != nil {
			listFixtureErr = err
			return
		}
		listFixtureDir = dir
		src := filepath.Join(dir, "src")
		if err := os.MkdirAll(src, 0o755); err != nil {
			listFixtureErr = err
			return
		}
		for name, data := range map[string]string{
			"go.mod":  "module example.com/listfixture\n\ngo 1.26\n",
			"main.go": listFixtureSrc,
		} {
			if err := os.WriteFile(filepath.Join(src, name), []byte(data), 0o644); err != nil {
				listFixtureErr = err
				return
			}
		}
		for variant, ldflags := range map[string]string{"dwarf": "", "nodwarf": "-w", "stripped": "-s -w"} {
			cmd := exec.Command("go", "build", "-ldflags="+ldflags, "-o", filepath.Join(dir, variant), ".")
			cmd.Dir = src
			cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-buildvcs=false", "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				listFixtureErr = &buildError{variant, string(out), err}
				return
			}
		}
	})
	if listFixtureErr != nil {
		t.Fatalf("building list fixture: %v", listFixtureErr)
	}
	if variant == "" {
		variant = "dwarf"
	}
	return filepath.Join(listFixtureDir, variant)
}

type buildError struct {
	variant, out string
	err          error
}

func (e *buildError) Error() string { return e.variant + ": " + e.err.Error() + "\n" + e.out }

func TestMain(m *testing.M) {
	if os.Getenv(landlockEnv) != "" {
		landlockExec(os.Args[1:]) // TestDeniedProcess: does not return
	}
	code := m.Run()
	if listFixtureDir != "" {
		os.RemoveAll(listFixtureDir)
	}
	os.Exit(code)
}

func runListCmd(t *testing.T, args ...string) (stdout string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), append([]string{"list"}, args...), &out, &errOut)
	return out.String(), err
}

// tableRow returns the fields of the table row for function name.
func tableRow(t *testing.T, out, name string) []string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return f
		}
	}
	t.Fatalf("no row for %s in:\n%s", name, out)
	return nil
}

func TestListTable(t *testing.T) {
	bin := listFixture(t, "")
	out, err := runListCmd(t, "--binary", bin, "-f", "main.*")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "FUNCTION ") || !strings.Contains(out, "PROBE") || !strings.Contains(out, "SITES") {
		t.Errorf("no header:\n%s", out)
	}
	if got := tableRow(t, out, "main.fetchUser"); got[1] != "yes" || got[3] != "yes" {
		t.Errorf("fetchUser row %q: want probeable with an error result", got)
	}
	if got := tableRow(t, out, "main.(*Counter).Inc"); got[1] != "yes" || got[2] != "2" || got[3] != "no" {
		t.Errorf("Inc row %q: want yes, 2 sites, no error result", got)
	}
	if got := strings.Join(tableRow(t, out, "main.double"), " "); !strings.Contains(got, "no - unknown inlined at every call site") {
		t.Errorf("double row %q: want not probeable, inlined at every call site", got)
	}
	if got := strings.Join(tableRow(t, out, "main.fail"), " "); !strings.HasPrefix(got, "main.fail yes 1 no entry only (no RET)") {
		t.Errorf("fail row %q: want probeable at its entry alone, for lack of RET", got)
	}
	if got := strings.Join(tableRow(t, out, "main.small"), " "); !strings.Contains(got, "calls at 1 inlined site are not seen") {
		t.Errorf("small row %q: want the inlined-sites warning", got)
	}
	if strings.Contains(out, "runtime.") {
		t.Errorf("runtime functions listed for main.*:\n%s", out)
	}
	for _, want := range []string{"probeable", "probe sites", bin, "go1.", "PIE no", "DWARF yes", "stripped no", "goid offset"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "note: no DWARF") {
		t.Errorf("no-DWARF note on a binary with DWARF:\n%s", out)
	}
}

func TestListDefaultAndAll(t *testing.T) {
	bin := listFixture(t, "")
	def, err := runListCmd(t, "--binary", bin)
	if err != nil {
		t.Fatal(err)
	}
	tableRow(t, def, "main.fetchUser")
	tableRow(t, def, "fmt.Sprintf")
	if strings.Contains(def, "\nruntime.") {
		t.Error("default listing shows runtime functions")
	}
	all, err := runListCmd(t, "--binary", bin, "--all")
	if err != nil {
		t.Fatal(err)
	}
	tableRow(t, all, "runtime.gopanic")
	rt, err := runListCmd(t, "--binary", bin, "-f", "runtime.gopanic", "-f", "main.main")
	if err != nil {
		t.Fatal(err)
	}
	tableRow(t, rt, "runtime.gopanic")
	if !strings.Contains(rt, "\n2 functions,") {
		t.Errorf("want exactly 2 functions:\n%s", rt)
	}
}

func TestListNoDWARF(t *testing.T) {
	for _, variant := range []string{"nodwarf", "stripped"} {
		t.Run(variant, func(t *testing.T) {
			out, err := runListCmd(t, "--binary", listFixture(t, variant), "-f", "main.*", "-x", "main.main")
			if err != nil {
				t.Fatal(err)
			}
			if got := tableRow(t, out, "main.fetchUser"); got[1] != "yes" || got[3] != "unknown" {
				t.Errorf("fetchUser row %q: want probeable, error result unknown", got)
			}
			if strings.Contains(out, "main.double") || strings.Contains(out, "\nmain.main ") {
				t.Errorf("inlined-only or excluded function listed:\n%s", out)
			}
			for _, want := range []string{"DWARF no", "note: no DWARF", "for other functions they can't be located", "panics are still captured", "inlining can't be reported"} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			if stripped := strings.Contains(out, "stripped yes"); stripped != (variant == "stripped") {
				t.Errorf("stripped fact wrong for %s:\n%s", variant, out)
			}
		})
	}
}

func TestListJSON(t *testing.T) {
	bin := listFixture(t, "")
	out, err := runListCmd(t, "--binary", bin, "-f", "main.*", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got listOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, out)
	}
	if got.Binary.Path != bin || !got.Binary.DWARF || got.Binary.GoVersion == "" || got.Binary.GoidOffset == 0 {
		t.Errorf("binary facts %+v", got.Binary)
	}
	rows := map[string]listRow{}
	sites, probeable := 0, 0
	for _, r := range got.Functions {
		rows[r.Name] = r
		if r.Probe {
			probeable++
			sites += r.Sites
		}
	}
	if r := rows["main.fetchUser"]; !r.Probe || r.ErrResult != "yes" || r.ErrIndex == nil || *r.ErrIndex != 1 || r.Sites < 2 {
		t.Errorf("fetchUser %+v", r)
	}
	if r := rows["main.double"]; r.Probe || !strings.Contains(r.Reason, "inlined") {
		t.Errorf("double %+v", r)
	}
	if r := rows["main.fail"]; !r.Probe || !r.EntryOnly || r.Sites != 1 {
		t.Errorf("fail %+v: want traced by its entry alone", r)
	}
	if got.Summary.Functions != len(got.Functions) || got.Summary.Probeable != probeable || got.Summary.Sites != sites {
		t.Errorf("summary %+v; counted %d functions, %d probeable, %d sites", got.Summary, len(got.Functions), probeable, sites)
	}
}

func TestListByPID(t *testing.T) {
	// The test binary is a Go program, and its testmain has a main.main.
	out, err := runListCmd(t, "--pid", itoa(os.Getpid()), "-f", "main.main")
	if err != nil {
		t.Fatal(err)
	}
	tableRow(t, out, "main.main")
	if !strings.Contains(out, "/proc/"+itoa(os.Getpid())+"/exe") {
		t.Errorf("summary doesn't name the binary:\n%s", out)
	}
}

func TestListErrors(t *testing.T) {
	notGo := filepath.Join(t.TempDir(), "script.sh")
	if err := os.WriteFile(notGo, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"pid out of range", []string{"--pid", "2147483647"}, []string{"--pid 2147483647 is out of range"}},
		{"missing pid", []string{"--pid", itoa(exitedPid(t))}, []string{"no such process"}},
		{"not Go", []string{"--binary", notGo}, []string{"is not a Go program"}},
		{"no such file", []string{"--binary", "/nonexistent/app"}, []string{"/nonexistent/app"}},
		{"neither", nil, []string{"pid", "binary"}},
		{"both", []string{"--pid", "1", "--binary", "/bin/true"}, []string{"pid", "binary"}},
		{"format", []string{"--binary", "/bin/true", "--format", "yaml"}, []string{`--format "yaml"`}},
	}
	if _, err := os.Stat("/bin/sh"); err == nil {
		tests = append(tests, struct {
			name string
			args []string
			want []string
		}{"ELF not Go", []string{"--binary", "/bin/sh"}, []string{"is not a Go program"}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runListCmd(t, tt.args...)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestListNoMatch(t *testing.T) {
	bin := listFixture(t, "")
	_, err := runListCmd(t, "--binary", bin, "-f", "main.Fetch*")
	if err == nil {
		t.Fatal("no error")
	}
	want := `pattern "main.Fetch*" matches no function in ` + bin + `; did you mean: main.fetchUser`
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "(run 'obs-agent list --binary "+bin+"' to see all)") {
		t.Errorf("error %q\nwant it to contain %q", err, want)
	}
}

func TestListShortName(t *testing.T) {
	long := "sync/atomic.(*Pointer[go.shape.struct { internal/sync.node = internal/sync.node[go.shape.interface {},go.shape.interface {}]; dead sync/atomic.Bool }]).Load"
	if got, want := listShortName(long), "sync/atomic.(*Pointer[...]).Load"; got != want {
		t.Errorf("listShortName = %q, want %q", got, want)
	}
	if short := "main.Map[go.shape.int]"; listShortName(short) != short {
		t.Errorf("short name changed: %q", listShortName(short))
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestListMethodErrorsWithoutDWARF: in the Go distribution's gofmt, which
// has no DWARF, the error results of methods come from their type
// descriptors, and list says so; plain functions stay unknown.
func TestListMethodErrorsWithoutDWARF(t *testing.T) {
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Skipf("go env GOROOT: %v", err)
	}
	gofmt := filepath.Join(strings.TrimSpace(string(goroot)), "bin", "gofmt")
	out, err := runListCmd(t, "--binary", gofmt, "-f", "os.(*File).Read", "-f", "os.(*File).Name", "-f", "os.ReadFile")
	if err != nil {
		t.Skipf("%s: %v", gofmt, err)
	}
	if strings.Contains(out, "DWARF yes") {
		t.Skipf("%s has DWARF", gofmt)
	}
	for name, want := range map[string]string{
		"os.(*File).Read": "yes error result from the method's type descriptor",
		"os.(*File).Name": "no error result from the method's type descriptor",
		"os.ReadFile":     "unknown",
	} {
		if got := strings.Join(tableRow(t, out, name)[3:], " "); got != want {
			t.Errorf("%s: ERROR and NOTE %q, want %q", name, got, want)
		}
	}
	if !strings.Contains(out, "(2 of the 3 listed functions, ERROR yes/no)") {
		t.Errorf("no coverage count in the notes:\n%s", out)
	}
}
