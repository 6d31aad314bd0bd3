package symbols

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/arch/arm64/arm64asm"
	"golang.org/x/arch/x86/x86asm"
)

// scanRets linearly disassembles code (one function, starting at its entry)
// and returns the offsets of every RET instruction. Go never puts data in
// .text, so a linear sweep from the entry stays on instruction boundaries.
// Trailing padding (INT3 on amd64, zero words on arm64) is accepted. On an
// undecodable byte sequence it stops and returns its offset with an error:
// it never guesses past it.
func scanRets(arch string, code []byte) (rets []int, badOff int, err error) {
	switch arch {
	case "amd64":
		return scanRetsAMD64(code)
	case "arm64":
		return scanRetsARM64(code)
	default:
		return nil, 0, fmt.Errorf("scan rets: %w: %s", ErrUnsupportedArch, arch)
	}
}

func scanRetsAMD64(code []byte) ([]int, int, error) {
	var rets []int
	for off := 0; off < len(code); {
		if allBytes(code[off:], 0xcc) {
			break
		}
		inst, err := x86asm.Decode(code[off:], 64)
		// x86asm reports a dangling prefix or truncated opcode as a
		// successful decode with Op 0; that is a failure too.
		if err == nil && inst.Op == 0 {
			err = fmt.Errorf("incomplete instruction")
		}
		if err != nil || inst.Len <= 0 || inst.Len > len(code)-off {
			return rets, off, fmt.Errorf("decode amd64 at +%#x: %w", off, errOrTruncated(err))
		}
		// RET (C3), RET imm16 (C2), possibly with prefixes (REP RET).
		if inst.Op == x86asm.RET {
			rets = append(rets, off)
		}
		off += inst.Len
	}
	return rets, 0, nil
}

func scanRetsARM64(code []byte) ([]int, int, error) {
	var rets []int
	for off := 0; off < len(code); off += 4 {
		if len(code)-off < 4 {
			return rets, off, fmt.Errorf("decode arm64 at +%#x: %w", off, errOrTruncated(nil))
		}
		if allBytes(code[off:], 0) {
			break
		}
		inst, err := arm64asm.Decode(code[off : off+4])
		if err != nil {
			if isLSEAtomic(binary.LittleEndian.Uint32(code[off:])) {
				continue
			}
			return rets, off, fmt.Errorf("decode arm64 at +%#x: %w", off, err)
		}
		if inst.Op == arm64asm.RET {
			rets = append(rets, off)
		}
	}
	return rets, 0, nil
}

// isLSEAtomic reports whether w is an ARMv8.1 LSE atomic instruction
// (CAS*, CASP*, LDADD*, LDCLR*, LDEOR*, LDSET*, LD[SU]MAX/MIN*, SWP*), which
// arm64asm cannot decode. The Go compiler inlines them into ordinary
// functions (sync.Mutex.Lock, atomic.Add, runtime.newproc1), guarded by a
// CPU check beside a load/store-exclusive loop, so without this every such
// function would be refused on arm64. None of them changes control flow,
// and arm64 instructions are all 4 bytes, so accepting one never moves the
// sweep off an instruction boundary; any other undecodable word still
// stops it.
func isLSEAtomic(w uint32) bool {
	switch {
	case w&0x3fa07c00 == 0x08a07c00: // CAS, CASA, CASL, CASAL (B, H, W, X)
		return true
	case w&0xbfa07c00 == 0x08207c00: // CASP, CASPA, CASPL, CASPAL
		return true
	case w&0x3f200c00 == 0x38200000: // atomic memory operations: LD<op>, SWP, LDAPR
		return true
	}
	return false
}

func errOrTruncated(err error) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("truncated instruction")
}

func allBytes(b []byte, v byte) bool {
	for _, c := range b {
		if c != v {
			return false
		}
	}
	return true
}

// leavesByJump reports why a function without a RET cannot be traced by
// its entry alone, or "" when it can. Such a function only panics, ends in
// a call that never returns (os.Exit, log.Fatal), or loops forever: every
// jump in it stays inside it. A jump out of it is a tail call: the
// function's work ends there without a trace of it, and a frame opened at
// its entry would stay open under whatever runs next. An indirect jump
// could be either (or a jump table), so it is refused too.
func leavesByJump(arch string, code []byte) string {
	const (
		tail     = "no RET instruction: ends in a tail call"
		indirect = "no RET instruction, and an indirect jump that may leave the function"
	)
	switch arch {
	case "amd64":
		for off := 0; off < len(code); {
			if allBytes(code[off:], 0xcc) {
				break
			}
			inst, err := x86asm.Decode(code[off:], 64)
			if err != nil || inst.Len <= 0 {
				return indirect // scanRets decoded it already; never reached
			}
			if inst.Op == x86asm.JMP {
				rel, ok := inst.Args[0].(x86asm.Rel)
				if !ok {
					return indirect
				}
				if t := off + inst.Len + int(rel); t < 0 || t >= len(code) {
					return tail
				}
			}
			off += inst.Len
		}
	case "arm64":
		for off := 0; off+4 <= len(code); off += 4 {
			inst, err := arm64asm.Decode(code[off : off+4])
			if err != nil {
				continue // trailing padding; scanRets checked the rest
			}
			switch inst.Op {
			case arm64asm.BR:
				return indirect
			case arm64asm.B:
				rel, ok := inst.Args[0].(arm64asm.PCRel)
				if !ok {
					continue // B.cond has its target in another argument form
				}
				if t := off + int(rel); t < 0 || t >= len(code) {
					return tail
				}
			}
		}
	}
	return ""
}
