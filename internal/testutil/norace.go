//go:build !race

package testutil

// raceEnabled: this test binary is built with -race (see Matrix).
const raceEnabled = false
