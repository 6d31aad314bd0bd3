package otlp

import (
	"bytes"
	"compress/gzip"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/obs-agent/obs-agent/internal/record"
)

// gunzip decodes a gzip body with the standard library, as a receiver
// would.
func gunzip(t testing.TB, body []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("gzip header: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gzip body: %v", err)
	}
	return out
}

// TestAppendGzip: the encoder's gzip decodes, with the standard library,
// to exactly its request bytes: for flood spans, for spans of several
// functions interleaved, for long error texts (two-byte span lengths),
// for one span and for none; and it stays well compressed on a flood.
func TestAppendGzip(t *testing.T) {
	p := Process{SessionID: 3, SessionStart: 1_800_000_000_000_000_000, PID: 42, Executable: "/usr/bin/app", ServiceName: "app"}
	e := NewEncoder(&p, "1.0")
	rng := rand.New(rand.NewPCG(1, 2))
	fns := []string{"main.work", "main.(*Server).handle", "net/http.(*conn).serve", "x"}
	cases := map[string][]record.Call{
		"flood": floodCalls(2048, 1<<40+1),
		"none":  nil,
		"one":   floodCalls(1, 7),
		"mixed": func() []record.Call {
			calls := make([]record.Call, 3000)
			for i := range calls {
				c := &calls[i]
				c.ID, c.ParentID, c.GoID = uint64(3)<<40+uint64(i)+1, uint64(rng.IntN(i+1)), rng.Uint64N(1<<20)
				c.Function = fns[rng.IntN(len(fns))]
				c.Start, c.Duration = rng.Int64N(1<<62), rng.Int64N(1<<30)
				switch rng.IntN(10) {
				case 0:
					c.Status, c.ErrorType, c.Error = record.StatusError, "*fmt.wrapError", strings.Repeat("é", rng.IntN(600))
				case 1:
					c.Status, c.ErrorTruncated = record.StatusPanic, true
				case 2:
					c.Status = record.StatusUnfinished
				}
			}
			return calls
		}(),
	}
	for name, calls := range cases {
		e.Reset()
		for i := range calls {
			e.Add(&calls[i], calls[i].ID-calls[i].ID%5)
		}
		raw := append([]byte(nil), e.Bytes()...)
		body := e.AppendGzip([]byte("prefix"))
		if !bytes.HasPrefix(body, []byte("prefix")) {
			t.Fatalf("%s: dst not kept", name)
		}
		if got := gunzip(t, body[len("prefix"):]); !bytes.Equal(got, raw) {
			t.Fatalf("%s: gzip decodes to %d bytes that differ from the %d of the request", name, len(got), len(raw))
		}
		if name == "flood" && len(body)*2 > len(raw) {
			t.Errorf("flood: %d bytes gzipped from %d: less than half off", len(body), len(raw))
		}
		t.Logf("%s: %d spans, %d bytes, gzipped %d", name, len(calls), len(raw), len(body)-len("prefix"))
	}
}

// FuzzAppendGzip: any bytes, cut into spans anywhere, compress to a gzip
// member that decodes to them.
func FuzzAppendGzip(f *testing.F) {
	f.Add([]byte("abcabcabcabcabcabc"), []byte{3, 3, 3})
	f.Add(bytes.Repeat([]byte{0}, 1000), []byte{0, 200, 255, 1})
	f.Fuzz(func(t *testing.T, raw, cuts []byte) {
		var starts []int
		at := 0
		for _, c := range cuts {
			at += int(c)
			if at > len(raw) {
				break
			}
			starts = append(starts, at)
		}
		var st deflateState
		body := appendGzip(nil, raw, starts, &st)
		if got := gunzip(t, body); !bytes.Equal(got, raw) {
			t.Fatalf("decodes to %x, want %x", got, raw)
		}
	})
}

// TestDistCode: the distance code computed for every distance is the one
// deflate's table of base distances gives it.
func TestDistCode(t *testing.T) {
	for d := uint32(1); d <= maxDist; d++ {
		c := 0
		for c+1 < len(distBase) && distBase[c+1] <= d {
			c++
		}
		want := code{rev(uint32(c), 5) | (d-distBase[c])<<5, 5 + distExtra[c]}
		if got := distCode(d); got != want {
			t.Fatalf("distance %d: code %+v, want %+v (code %d)", d, got, want, c)
		}
	}
}

// TestAppendGzipLongRuns: a span equal to the one before it for longer
// than deflate's longest match (258 bytes) is written as several matches,
// none shorter than 3 bytes, for every remainder; it decodes exactly and
// costs a few bytes, not a literal each.
func TestAppendGzipLongRuns(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{4, 5, 8, 63, 64, 65, 255, 256, 257, 258, 259, 260, 261, 262, 516, 517, 518, 519, 1000} {
		span := make([]byte, n)
		for i := range span {
			span[i] = byte(rng.Uint32())
		}
		raw := bytes.Repeat(span, 4)
		starts := []int{0, n, 2 * n, 3 * n}
		var st deflateState
		body := appendGzip(nil, raw, starts, &st)
		if got := gunzip(t, body); !bytes.Equal(got, raw) {
			t.Fatalf("%d-byte spans: decode to %d bytes that differ", n, len(got))
		}
		// The first span in literals (at most 9 bits a byte), each of the
		// other three in matches of at most 31 bits per 258 bytes.
		limit := 10 + 8 + (9*n+7)/8 + 3*4*(n/258+2) + 4
		if len(body) > limit {
			t.Errorf("%d-byte spans: %d bytes gzipped, want at most %d", n, len(body), limit)
		}
	}
}
