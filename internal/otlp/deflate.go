package otlp

import (
	"encoding/binary"
	"hash/crc32"
	"math/bits"
	"slices"
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

// The fixed Huffman codes (RFC 1951, 3.2.6), bit-reversed for an
// LSB-first bit writer, each with its extra bits folded in: an entry's
// bits are written as one value of n bits.
type code struct {
	bits uint32
	n    uint32
}

var (
	// fixedLit is the code of each literal byte, and of end of block
	// (256).
	fixedLit [257]code
	// lengthSym is, for a match length 3-258, its length code (257-285)
	// followed by the code's extra bits.
	lengthSym [259]code
)

// Base lengths and distances of the deflate length and distance codes.
var (
	lengthBase  = [29]uint32{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [29]uint32{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    = [30]uint32{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra   = [30]uint32{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
)

// rev is code's n bits in reverse order: Huffman codes are packed from
// their most significant bit, into a stream written LSB first.
func rev(code, n uint32) uint32 { return bits.Reverse32(code) >> (32 - n) }

// fixedLitCode is the fixed code of literal/length symbol sym (0-287).
func fixedLitCode(sym uint32) code {
	switch {
	case sym < 144:
		return code{rev(0x30+sym, 8), 8}
	case sym < 256:
		return code{rev(0x190+sym-144, 9), 9}
	case sym < 280:
		return code{rev(sym-256, 7), 7}
	default:
		return code{rev(0xc0+sym-280, 8), 8}
	}
}

func init() {
	for sym := range fixedLit {
		fixedLit[sym] = fixedLitCode(uint32(sym))
	}
	for i := len(lengthBase) - 1; i >= 0; i-- {
		for l := lengthBase[i]; l < lengthBase[i]+1<<lengthExtra[i] && l <= 258; l++ {
			if lengthSym[l].n != 0 {
				continue // 258 is code 285, not 284 plus 31
			}
			sym := fixedLitCode(257 + uint32(i))
			lengthSym[l] = code{sym.bits | (l-lengthBase[i])<<sym.n, sym.n + lengthExtra[i]}
		}
	}
}

// distCode is the fixed code of distance d (1-32768), with its extra bits.
func distCode(d uint32) code {
	c := d - 1 // the codes of 1-4 have no extra bits
	if d > 4 {
		// Two codes per power of two: the top two bits of d-1.
		top := uint32(bits.Len32(d - 1))
		c = 2*(top-1) + (d-1)>>(top-2)&1
	}
	return code{rev(c, 5) | (d-distBase[c])<<5, 5 + distExtra[c]}
}

// bitWriter packs codes LSB first, as deflate does, into out, which is
// grown beforehand to hold all it will write and 8 bytes more: every
// write stores the whole accumulator, unaligned, and moves on by the
// bytes it completed. That keeps the writer's state in registers, and
// its cost to an add, a store and two shifts, with no branch.
type bitWriter struct {
	out []byte
	pos int    // bytes of out complete
	acc uint64 // the bits after them, fewer than 8
	n   uint
}

// put writes the n bits of v. Fewer than 8 bits are pending before
// (always, after a put), so v may hold up to 56.
func (w *bitWriter) put(v uint64, n uint32) {
	w.acc |= v << w.n
	w.n += uint(n)
	binary.LittleEndian.PutUint64(w.out[w.pos:], w.acc)
	w.pos += int(w.n >> 3)
	w.acc >>= w.n &^ 7
	w.n &= 7
}

// literals writes raw as literals, six at a time (six codes of at most
// 9 bits, after at most 7 pending, fill at most 61) to each store.
func (w *bitWriter) literals(raw []byte) {
	acc, n := w.acc, w.n
	out, pos := w.out, w.pos
	for len(raw) > 0 {
		k := min(len(raw), 6)
		for _, b := range raw[:k] {
			c := fixedLit[b]
			acc |= uint64(c.bits) << n
			n += uint(c.n)
		}
		raw = raw[k:]
		binary.LittleEndian.PutUint64(out[pos:], acc)
		pos += int(n >> 3)
		acc >>= n &^ 7
		n &= 7
	}
	w.acc, w.n, w.pos = acc, n, pos
}

// maxBytes bounds the bytes appendGzip writes for raw bytes: no code
// costs more than 9 bits a byte (a literal at most 9; a match of at
// least minMatch bytes at most 31), plus the block's header and end.
func maxBytes(raw int) int { return (9*raw+3+7)/8 + 1 }

// minMatch is the shortest run written as a back-reference: three bytes
// as a match cost about as many bits as three literals.
const minMatch = 4

// maxDist is deflate's window.
const maxDist = 32768

// deflateState is what appendGzip keeps between calls, so that it
// allocates nothing in the steady state.
type deflateState struct {
	// seen remembers, by span length (modulo its size), where the last
	// span of that length started.
	seen [256]struct{ n, start int }
	// eq is a span's equality mask: bit x is set when the span's byte x
	// equals the byte d before it (equalMask).
	eq []uint64
}

// appendGzip appends to dst the gzip member of raw, whose spans start at
// the offsets starts (in order; everything before the first is written
// as literals).
func appendGzip(dst, raw []byte, starts []int, st *deflateState) []byte {
	// The gzip header: no name, no time, OS unknown (as compress/gzip).
	dst = append(dst, 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff)
	w := bitWriter{out: slices.Grow(dst, maxBytes(len(raw))+8), pos: len(dst)}
	w.out = w.out[:cap(w.out)]
	w.put(1|1<<1, 3) // BFINAL, BTYPE 01: fixed Huffman codes
	st.seen = [256]struct{ n, start int }{}
	head := len(raw)
	if len(starts) > 0 {
		head = starts[0]
	}
	w.literals(raw[:head])
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
		last := &st.seen[(end-start)%len(st.seen)]
		if last.n == end-start && start-last.start <= maxDist {
			d = start - last.start
		}
		last.n, last.start = end-start, start
		if d > maxDist {
			d = 0
		}
		st.deflateSpan(&w, raw, start, end, d)
	}
	w.put(uint64(fixedLit[256].bits), fixedLit[256].n) // end of block
	dst = w.out[:w.pos+int(w.n+7)/8]
	dst = binary.LittleEndian.AppendUint32(dst, crc32.ChecksumIEEE(raw))
	return binary.LittleEndian.AppendUint32(dst, uint32(len(raw)))
}

// deflateSpan writes raw[start:end] as matches at distance d (0: none)
// and literals. It first compares the span with the bytes d before it, a
// word at a time, into an equality mask (equalMask); the runs of at
// least minMatch equal bytes in it are the matches, and what lies between
// them the literals. A flood span of 144 bytes is 18 words compared and
// a dozen runs, where a byte-by-byte search would branch on every byte.
func (st *deflateState) deflateSpan(w *bitWriter, raw []byte, start, end, d int) {
	if d == 0 {
		w.literals(raw[start:end])
		return
	}
	span := raw[start:end]
	eq := st.equalMask(span, raw[start-d:end-d])
	dc := distCode(uint32(d))
	lit := 0 // the first byte not yet written
	for i := 0; i < len(span); {
		j := nextBit(eq, i, true, len(span))
		k := nextBit(eq, j, false, len(span))
		i = k
		if k-j < minMatch {
			continue // too short a run: its bytes are literals
		}
		w.literals(span[lit:j])
		w.match(k-j, dc)
		lit = k
	}
	w.literals(span[lit:])
}

// equalMask sets bit x of the mask it returns (in st.eq) when a[x] ==
// b[x], for the len(a) bytes of a; the bits past them are 0. For each
// 8-byte word it finds the bytes equal (zeroBytes of the XOR, their top
// bits) and gathers those 8 bits into one byte with a multiply.
func (st *deflateState) equalMask(a, b []byte) []uint64 {
	n := (len(a) + 63) / 64
	eq := slices.Grow(st.eq[:0], n)[:n]
	x := 0
	for k := range eq {
		// The bits of one 64-byte block, gathered in a register.
		var m uint64
		for sh := 0; sh < 64 && x+8 <= len(a); sh += 8 {
			z := zeroBytes(binary.LittleEndian.Uint64(a[x:]) ^ binary.LittleEndian.Uint64(b[x:]))
			m |= ((z >> 7) * 0x0102040810204080 >> 56) << sh
			x += 8
		}
		for ; x < len(a) && x < (k+1)*64; x++ {
			if a[x] == b[x] {
				m |= 1 << (x & 63)
			}
		}
		eq[k] = m
	}
	st.eq = eq
	return eq
}

// nextBit is the first x >= i, below n, whose bit in mask is set (set
// true) or clear (false); n when there is none.
func nextBit(mask []uint64, i int, set bool, n int) int {
	if i >= n {
		return n
	}
	flip := uint64(0)
	if !set {
		flip = ^uint64(0)
	}
	k := i >> 6
	if m := (mask[k] ^ flip) >> (i & 63); m != 0 {
		return min(i+bits.TrailingZeros64(m), n)
	}
	for k++; k < len(mask); k++ {
		if m := mask[k] ^ flip; m != 0 {
			return min(k*64+bits.TrailingZeros64(m), n)
		}
	}
	return n
}

// match writes a back-reference of n bytes (at least minMatch) at the
// distance whose code is dc: a length code and the distance code, as
// one value of at most 31 bits, for each piece of at most 258 bytes
// (deflate's longest), none left shorter than 3.
func (w *bitWriter) match(n int, dc code) {
	for n > 0 {
		l := min(n, 258)
		if r := n - l; r > 0 && r < 3 {
			l = n - 3
		}
		s := lengthSym[l]
		w.put(uint64(s.bits)|uint64(dc.bits)<<s.n, s.n+dc.n)
		n -= l
	}
}

// zeroBytes has the top bit of each byte of x that is zero set, and no
// other bit.
func zeroBytes(x uint64) uint64 {
	const low7 = 0x7f7f7f7f7f7f7f7f
	t := (x & low7) + low7
	return ^(t | x | low7)
}
