package symbols

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildGoCmd builds a command of the Go distribution (cmd/gofmt, ...) with
// the local toolchain, with DWARF, once per test binary.
func buildGoCmd(t *testing.T, pkg string, flags ...string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go tool not in PATH: %v", err)
	}
	out := filepath.Join(fixtureDir, strings.ReplaceAll(pkg, "/", "_")+strings.Join(flags, "_"))
	if _, err := os.Stat(out); err == nil {
		return out
	}
	cmd := exec.Command(goBin, append(append([]string{"build", "-o", out}, flags...), pkg)...)
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOTOOLCHAIN=local", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// TestMethodErrorsMatchDWARF: on binaries with DWARF, every error result
// the type descriptors give (methods, used when there is no DWARF) must be
// exactly what DWARF says, including "none": a wrong location would record
// false errors.
func TestMethodErrorsMatchDWARF(t *testing.T) {
	bins := map[string]string{
		"fixture":     buildFixture(t, "fixture", ""),
		"fixture-pie": buildFixture(t, "fixture", "", "-buildmode=pie"),
		"errs":        buildFixture(t, "../../../testdata/errs", ""),
	}
	if !testing.Short() {
		bins["gofmt"] = buildGoCmd(t, "cmd/gofmt")
		bins["errs-go1.21"] = buildFixture(t, "../../../testdata/errs", "go1.21.13")
		bins["errs-go1.27"] = buildFixture(t, "../../../testdata/errs", "go1.27.4")
	}
	for name, path := range bins {
		t.Run(name, func(t *testing.T) {
			b := openT(t, path)
			if !b.HasDWARF {
				t.Fatal("no DWARF")
			}
			me := b.methodErrors()
			var withErr, dwarfUnknown int
			for f, er := range me {
				if er != nil {
					withErr++
				}
				if f.ErrResult == nil && er != nil {
					// DWARF could not size a type, or Go dropped the
					// subprogram: nothing to compare against.
					dwarfUnknown++
					continue
				}
				if !sameErrResult(f.ErrResult, er) {
					t.Errorf("%s: types say %+v, DWARF %+v", f.Name, er, f.ErrResult)
				}
			}
			t.Logf("%d methods located from type descriptors (%d with an error result; %d DWARF did not locate) of %d functions",
				len(me), withErr, dwarfUnknown, len(b.Funcs))
			if withErr == 0 {
				t.Error("no method with an error result found")
			}
			if dwarfUnknown > len(me)/20 {
				t.Errorf("%d of %d method results have no DWARF twin", dwarfUnknown, len(me))
			}
		})
	}
}

// TestStrippedMethodErrors: a stripped build locates the error results of
// methods from the type descriptors, as the DWARF build does, and leaves
// every other function unknown.
func TestStrippedMethodErrors(t *testing.T) {
	for _, pie := range []bool{false, true} {
		flags := []string{"-ldflags=-s -w"}
		if pie {
			flags = append(flags, "-buildmode=pie")
		}
		full := openT(t, buildFixture(t, "../../../testdata/errs", ""))
		strip := openT(t, buildFixture(t, "../../../testdata/errs", "", flags...))
		covered := 0
		for _, f := range strip.Funcs {
			switch f.ErrSource {
			case ErrSourceMethodType:
				covered++
				d := full.Lookup(f.Name)
				if d != nil && d.ErrResult == nil && f.ErrResult != nil {
					// DWARF did not locate it (as TestMethodErrorsMatchDWARF
					// counts): nothing to compare with.
					continue
				}
				if d == nil || !sameErrResult(d.ErrResult, f.ErrResult) {
					t.Errorf("%s: stripped %+v, DWARF build %+v", f.Name, f.ErrResult, d)
				}
			case "":
				if f.ErrResult != nil {
					t.Errorf("%s: error result %+v without a source", f.Name, f.ErrResult)
				}
			default:
				t.Errorf("%s: source %q in a stripped binary", f.Name, f.ErrSource)
			}
		}
		want := map[string]bool{"main.(*MyErr).Error": false, "os.(*File).Read": true, "(*PathError).Unwrap": true}
		for _, f := range strip.Funcs {
			for suffix, hasErr := range want {
				if strings.HasSuffix(f.Name, suffix) {
					if f.ErrSource != ErrSourceMethodType || (f.ErrResult != nil) != hasErr {
						t.Errorf("%s: source %q, error result %+v", f.Name, f.ErrSource, f.ErrResult)
					}
					delete(want, suffix)
				}
			}
		}
		if len(want) > 0 {
			t.Errorf("not found: %v", want)
		}
		t.Logf("pie=%v: %d of %d functions covered by method types", pie, covered, len(strip.Funcs))
	}
}
