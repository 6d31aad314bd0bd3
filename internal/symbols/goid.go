package symbols

import "fmt"

// goidRange is one row of the goid offset table: Go versions
// [fromMinor, toMinor] (Go 1.x) place runtime.g.goid at offset.
type goidRange struct {
	fromMinor, toMinor int
	amd64, arm64       uint64
}

// goidTable lists runtime.g.goid offsets by Go minor version. Every row
// is verified against the DWARF of real builds by TestToolchains (amd64;
// runtime.g has the same layout on every 64-bit architecture). It is a
// function so the table cannot be mutated.
func goidTable() []goidRange {
	return []goidRange{
		{17, 22, 152, 152},
		{23, 24, 160, 160},
		{25, 26, 152, 152},
	}
}

// goidOffsetFor returns the goid offset for a Go version without DWARF.
// Versions outside the verified table are an error: never guess.
func goidOffsetFor(version, arch string) (uint64, error) {
	maj, min, ok := parseGoVersion(version)
	if !ok || maj != 1 {
		return 0, fmt.Errorf("goid offset: no DWARF and go version %q unknown", version)
	}
	for _, r := range goidTable() {
		if min >= r.fromMinor && min <= r.toMinor {
			if arch == "arm64" {
				return r.arm64, nil
			}
			return r.amd64, nil
		}
	}
	return 0, fmt.Errorf("goid offset: no DWARF and go version %s is not in the verified table", version)
}
