package symbols

import (
	"debug/elf"
	"encoding/hex"
	"fmt"
)

// BuildID is the executable's Go build id, else its GNU build id, else "":
// which build of a program it is. The agent stores it with each traced
// process, and `query stats --binary PATH` reads it from PATH to find the
// processes of that build whatever path they were traced under.
func BuildID(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	for _, sec := range []string{".note.go.buildid", ".note.gnu.build-id"} {
		if desc, err := noteDesc(f, sec); err == nil && len(desc) > 0 {
			if sec == ".note.go.buildid" {
				return string(desc)
			}
			return hex.EncodeToString(desc)
		}
	}
	return ""
}

// noteDesc returns the descriptor of the first note in an ELF note
// section: namesz, descsz, type, then the name and the descriptor, each
// padded to 4 bytes.
func noteDesc(f *elf.File, name string) ([]byte, error) {
	sec := f.Section(name)
	if sec == nil {
		return nil, fmt.Errorf("no %s section", name)
	}
	b, err := sec.Data()
	if err != nil {
		return nil, err
	}
	if len(b) < 12 {
		return nil, fmt.Errorf("%s: short note", name)
	}
	bo := f.ByteOrder
	namesz, descsz := uint64(bo.Uint32(b)), uint64(bo.Uint32(b[4:]))
	off := 12 + (namesz+3)&^3
	if off+descsz > uint64(len(b)) {
		return nil, fmt.Errorf("%s: note overruns its section", name)
	}
	return b[off : off+descsz], nil
}
