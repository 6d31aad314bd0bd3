package symbols

import (
	"encoding/binary"
	"testing"
)

// TestLeavesByJump checks how a function without a RET is classified: one
// whose jumps all stay inside it (a loop, a call that never returns) is
// traced by its entry alone; a jump out of it (a tail call) or an indirect
// jump refuses it.
func TestLeavesByJump(t *testing.T) {
	arm := func(words ...uint32) []byte {
		b := make([]byte, 4*len(words))
		for i, w := range words {
			binary.LittleEndian.PutUint32(b[4*i:], w)
		}
		return b
	}
	for _, c := range []struct {
		name, arch string
		code       []byte
		refused    bool
	}{
		{"amd64 call then loop", "amd64", []byte{0xe8, 0, 0, 0, 0, 0xeb, 0xfe, 0xcc, 0xcc}, false},
		{"amd64 call, never returns", "amd64", []byte{0xe8, 0, 0, 0, 0, 0xcc, 0xcc}, false},
		{"amd64 tail call", "amd64", []byte{0xe8, 0, 0, 0, 0, 0xe9, 0x10, 0, 0, 0}, true},
		{"amd64 jump back before entry", "amd64", []byte{0x90, 0xeb, 0xf0}, true},
		{"amd64 indirect jump", "amd64", []byte{0xff, 0xe0}, true},
		{"arm64 loop", "arm64", arm(0xd503201f, 0x17ffffff), false},                                  // NOP; B -4
		{"arm64 tail call", "arm64", arm(0xd503201f, 0x14000004), true},                              // NOP; B +16
		{"arm64 indirect jump", "arm64", arm(0xd503201f, 0xd61f0000), true},                          // NOP; BR X0
		{"arm64 conditional branch inside", "arm64", arm(0x54000020, 0xd503201f, 0x17ffffff), false}, // B.EQ +4; NOP; B -4
	} {
		got := leavesByJump(c.arch, c.code)
		if (got != "") != c.refused {
			t.Errorf("%s: leavesByJump = %q, want refused=%v", c.name, got, c.refused)
		}
	}
}
