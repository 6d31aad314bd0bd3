package queue

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/obs-agent/obs-agent/internal/record"
)

func sampleCalls() []record.Call {
	return []record.Call{
		{},
		{ID: 1, ParentID: 0, PID: 1, GoID: 1, Function: "main.main", Start: 1, Duration: 0, Status: record.StatusOK},
		{ID: ^uint64(0), ParentID: ^uint64(0) - 1, PID: ^uint32(0), GoID: 1 << 40, Function: "github.com/acme/api/v2.(*Server).Handle",
			Start: -5, Duration: 1 << 62, Status: record.StatusPanic, ErrorType: "runtime.Error", Error: "index out of range [3] with length 3", ErrorTruncated: true},
		{ID: 77, Function: "main.ünïcode", Status: record.StatusUnfinished, Error: strings.Repeat("x", 4096)},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	var b []byte
	want := sampleCalls()
	for i := range want {
		b = AppendRecord(b, &want[i])
	}
	for i := range want {
		c, n, err := DecodeRecord(b)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if c != want[i] {
			t.Fatalf("record %d = %+v, want %+v", i, c, want[i])
		}
		b = b[n:]
	}
	if len(b) != 0 {
		t.Fatalf("%d bytes left", len(b))
	}
}

func TestDecodeTornAndCorrupt(t *testing.T) {
	c := sampleCalls()[2]
	full := AppendRecord(nil, &c)
	for cut := 0; cut < len(full); cut++ {
		if _, _, err := DecodeRecord(full[:cut]); !errors.Is(err, ErrTorn) && !errors.Is(err, ErrBadRecord) {
			t.Fatalf("cut at %d: err = %v, want torn or bad", cut, err)
		}
	}
	for i := range full {
		b := append([]byte(nil), full...)
		b[i] ^= 0x40
		if got, _, err := DecodeRecord(b); err == nil && got == c {
			t.Fatalf("flipped byte %d not detected", i)
		}
	}
}

func TestOversizedErrorIsCut(t *testing.T) {
	c := record.Call{ID: 9, Function: "main.big", Status: record.StatusError, Error: strings.Repeat("é", maxPayload)}
	b := AppendRecord(nil, &c)
	got, n, err := DecodeRecord(b)
	if err != nil || n != len(b) {
		t.Fatalf("DecodeRecord: %v (n=%d of %d)", err, n, len(b))
	}
	if !got.ErrorTruncated || len(got.Error) >= len(c.Error) || !strings.HasPrefix(c.Error, got.Error) {
		t.Fatalf("error not cut at a rune boundary and marked: len %d, truncated %v", len(got.Error), got.ErrorTruncated)
	}
}

// FuzzDecodeRecord: the decoder reads files a crash may have torn or a
// disk may have damaged. It must never panic, never read past its input,
// and what it accepts must re-encode to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	for _, c := range sampleCalls() {
		b := AppendRecord(nil, &c)
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, n, err := DecodeRecord(b)
		if err != nil {
			if n != 0 {
				t.Fatalf("n = %d with error %v", n, err)
			}
			if !errors.Is(err, ErrTorn) && !errors.Is(err, ErrBadRecord) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if n < frameHeader || n > len(b) {
			t.Fatalf("n = %d for %d bytes", n, len(b))
		}
		if re := AppendRecord(nil, &c); string(re) != string(b[:n]) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", re, b[:n])
		}
	})
}

// FuzzDecodePayload gets past the checksum: it frames arbitrary payloads
// correctly, so the field decoder itself is exercised.
func FuzzDecodePayload(f *testing.F) {
	for _, c := range sampleCalls() {
		b := AppendRecord(nil, &c)
		f.Add(b[frameHeader:])
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		if len(p) == 0 || len(p) > maxPayload {
			return
		}
		b := make([]byte, frameHeader, frameHeader+len(p))
		binary.LittleEndian.PutUint32(b, uint32(len(p)))
		binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(p, castagnoli))
		b = append(b, p...)
		c, n, err := DecodeRecord(b)
		if err != nil {
			if !errors.Is(err, ErrBadRecord) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if n != len(b) {
			t.Fatalf("n = %d, want %d", n, len(b))
		}
		again, _, err := DecodeRecord(AppendRecord(nil, &c))
		if err != nil || again != c {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, c)
		}
	})
}
