package otlp

import (
	"encoding/binary"
	"hash/crc32"
	"math/bits"
)

// The live sink's gzip. A general deflate compressor searches every
// position of its input for an earlier match (hash tables, chains); that
// search was the largest part of what a span cost the agent (0.8 µs of
// about 1.3 at BestSpeed, klauspost/compress). The encoder knows more:
// its input is a run of spans of the same layout, in which everything
// but the ids, the times and the numbers is the same as in the span
// before it, byte for byte, at the distance of that span's start. So
// appendGzip compares each span only with the last span of the same
// length (of the same function, mostly), or else the span before it, and
// writes what matches as deflate back-references
// and the rest as literals, in one block of the fixed Huffman codes
// (RFC 1951, 3.2.6). The stream is ordinary gzip that any receiver
// decodes; it is somewhat larger than a general compressor's (the
// fixed codes, and no matches within a span), which the benchmark
// reports (BenchmarkGzip).

// Fixed Huffman codes, bit-reversed for an LSB-first bit writer.
var (
	fixedLit  [288]struct{ code, n uint32 }
	fixedDist [30]uint32 // 5 bits each
	// lengthSym is the length code (257-285) of a match length 3-258,
	// its extra bits and their count.
	lengthSym [259]struct{ code, n, extra, nExtra uint32 }
)

// Base lengths and distances of the deflate length and distance codes.
var (
	lengthBase  = [29]uint32{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [29]uint32{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    = [30]uint32{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra   = [30]uint32{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
)

func init() {
	rev := func(code, n uint32) uint32 { return bits.Reverse32(code) >> (32 - n) }
	for lit := uint32(0); lit < 288; lit++ {
		var code, n uint32
		switch {
		case lit < 144:
			code, n = 0x30+lit, 8
		case lit < 256:
			code, n = 0x190+lit-144, 9
		case lit < 280:
			code, n = lit-256, 7
		default:
			code, n = 0xc0+lit-280, 8
		}
		fixedLit[lit].code, fixedLit[lit].n = rev(code, n), n
	}
	for d := range fixedDist {
		fixedDist[d] = rev(uint32(d), 5)
	}
	for i := len(lengthBase) - 1; i >= 0; i-- {
		for l := lengthBase[i]; l < lengthBase[i]+1<<lengthExtra[i] && l <= 258; l++ {
			if lengthSym[l].n != 0 {
				continue // 258 is code 285, not 284 plus 31
			}
			sym := fixedLit[257+i]
			lengthSym[l] = struct{ code, n, extra, nExtra uint32 }{sym.code, sym.n, l - lengthBase[i], lengthExtra[i]}
		}
	}
}

// distCode is the deflate distance code of d (1-32768) and its extra bits.
func distCode(d uint32) (code, extra, nExtra uint32) {
	c := uint32(0)
	for c+1 < uint32(len(distBase)) && distBase[c+1] <= d {
		c++
	}
	return c, d - distBase[c], distExtra[c]
}

// bitWriter appends bits LSB first, as deflate packs them.
type bitWriter struct {
	out  []byte
	acc  uint64
	nacc uint
}

func (w *bitWriter) write(v uint32, n uint32) {
	w.acc |= uint64(v) << w.nacc
	w.nacc += uint(n)
	if w.nacc >= 32 {
		w.out = binary.LittleEndian.AppendUint32(w.out, uint32(w.acc))
		w.acc >>= 32
		w.nacc -= 32
	}
}

// flush writes the last bits, padded to a byte.
func (w *bitWriter) flush() {
	for w.nacc > 0 {
		w.out = append(w.out, byte(w.acc))
		w.acc >>= 8
		w.nacc = uint(max(int(w.nacc)-8, 0))
	}
}

func (w *bitWriter) literal(b byte) {
	s := fixedLit[b]
	w.write(s.code, s.n)
}

// minMatch is the shortest run written as a back-reference: three bytes
// as a match cost about as many bits as three literals.
const minMatch = 4

// maxDist is deflate's window.
const maxDist = 32768

// lengthSeen remembers, by span length (modulo its size), where the last
// span of that length started.
type lengthSeen [256]struct{ n, start int }

// appendGzip appends to dst the gzip member of raw, whose spans start at
// the offsets starts (in order; everything before the first is written
// as literals).
func appendGzip(dst, raw []byte, starts []int, seen *lengthSeen) []byte {
	// The gzip header: no name, no time, OS unknown (as compress/gzip).
	dst = append(dst, 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff)
	w := bitWriter{out: dst}
	w.write(1|1<<1, 3) // BFINAL, BTYPE 01: fixed Huffman codes
	*seen = lengthSeen{}
	head := len(raw)
	if len(starts) > 0 {
		head = starts[0]
	}
	for i := 0; i < head; i++ {
		w.literal(raw[i])
	}
	for k, start := range starts {
		end := len(raw)
		if k+1 < len(starts) {
			end = starts[k+1]
		}
		// The span to refer to: the last one of the same length (the
		// same function, mostly: the same layout, byte for byte), else
		// the one before.
		d := 0
		if k > 0 {
			d = start - starts[k-1]
		}
		last := &seen[(end-start)%len(seen)]
		if last.n == end-start && start-last.start <= maxDist {
			d = start - last.start
		}
		last.n, last.start = end-start, start
		if d > maxDist {
			d = 0
		}
		deflateSpan(&w, raw, start, end, d)
	}
	w.write(fixedLit[256].code, fixedLit[256].n) // end of block
	w.flush()
	dst = w.out
	dst = binary.LittleEndian.AppendUint32(dst, crc32.ChecksumIEEE(raw))
	return binary.LittleEndian.AppendUint32(dst, uint32(len(raw)))
}

// deflateSpan writes raw[start:end] as matches at distance d (0: none)
// and literals.
func deflateSpan(w *bitWriter, raw []byte, start, end, d int) {
	if d == 0 {
		for i := start; i < end; i++ {
			w.literal(raw[i])
		}
		return
	}
	code, extra, nExtra := distCode(uint32(d))
	for i := start; i < end; {
		if i+8 <= end {
			// Where, in the next 8 bytes, can a match of minMatch
			// begin? Before it, only literals.
			x := binary.LittleEndian.Uint64(raw[i:]) ^ binary.LittleEndian.Uint64(raw[i-d:])
			z := zeroBytes(x)
			q := z & (z >> 8) & (z >> 16) & (z >> 24) // minMatch zero bytes from there
			m := 5                                    // none begins in the first 5
			if q != 0 {
				m = bits.TrailingZeros64(q) / 8
			}
			for range m {
				w.literal(raw[i])
				i++
			}
			if m == 5 {
				continue
			}
		}
		l := matchLen(raw, i, i-d, end)
		if l < minMatch {
			w.literal(raw[i])
			i++
			continue
		}
		s := &lengthSym[l]
		w.write(s.code, s.n)
		if s.nExtra > 0 {
			w.write(s.extra, s.nExtra)
		}
		w.write(fixedDist[code], 5)
		if nExtra > 0 {
			w.write(extra, nExtra)
		}
		i += l
	}
}

// zeroBytes has the top bit of each byte of x that is zero set, and no
// other bit.
func zeroBytes(x uint64) uint64 {
	const low7 = 0x7f7f7f7f7f7f7f7f
	t := (x & low7) + low7
	return ^(t | x | low7)
}

// matchLen is how many bytes from raw[i] equal those from raw[j] (j < i),
// at most 258 (deflate's longest match) and not past end.
func matchLen(raw []byte, i, j, end int) int {
	limit := min(end-i, 258)
	n := 0
	for n+8 <= limit {
		x := binary.LittleEndian.Uint64(raw[i+n:]) ^ binary.LittleEndian.Uint64(raw[j+n:])
		if x != 0 {
			return n + bits.TrailingZeros64(x)/8
		}
		n += 8
	}
	for n < limit && raw[i+n] == raw[j+n] {
		n++
	}
	return n
}
