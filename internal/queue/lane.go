package queue

import "github.com/obs-agent/obs-agent/internal/record"

// chunkLen is the number of records in one chunk of a lane (64 KiB of
// records).
const chunkLen = 512

// maxSpare bounds the emptied chunks a lane keeps for reuse: enough for
// the records of a flood between two batches, while a burst's chunks are
// let go once it has drained.
const maxSpare = 32

// lane is a FIFO of records in chunks of chunkLen. The ok lane of a sink
// that falls behind a flood holds tens of thousands of records; as one
// slice, it was copied into an array twice its size each time it grew
// (every record moved again, and the old array left to the collector),
// and taking a batch moved the rest to the array's front. Records are
// appended to the last chunk only; a chunk emptied by take is kept for
// reuse (up to maxSpare).
type lane struct {
	chunks [][]record.Call // chunks[0] holds the lane's first records from head on
	head   int
	n      int
	spare  [][]record.Call
}

// len is the number of records in the lane.
func (l *lane) len() int { return l.n }

// push appends a copy of c.
func (l *lane) push(c *record.Call) {
	last := len(l.chunks) - 1
	if last < 0 || len(l.chunks[last]) == cap(l.chunks[last]) {
		l.chunks = append(l.chunks, l.newChunk())
		last++
	}
	l.chunks[last] = append(l.chunks[last], *c)
	l.n++
}

func (l *lane) newChunk() []record.Call {
	if k := len(l.spare); k > 0 {
		c := l.spare[k-1]
		l.spare[k-1] = nil
		l.spare = l.spare[:k-1]
		return c
	}
	return make([]record.Call, 0, chunkLen)
}

// recycle keeps an emptied chunk for reuse, or lets it go.
func (l *lane) recycle(c []record.Call) {
	if len(l.spare) < maxSpare && cap(c) == chunkLen {
		l.spare = append(l.spare, c[:0])
	}
}

// take moves the first m records (at most len) to the end of dst. Their
// slots are cleared, so the lane holds no references to their strings.
func (l *lane) take(dst []record.Call, m int) []record.Call {
	m = min(m, l.n)
	for m > 0 {
		c := l.chunks[0]
		k := min(m, len(c)-l.head)
		dst = append(dst, c[l.head:l.head+k]...)
		clear(c[l.head : l.head+k])
		l.head += k
		l.n -= k
		m -= k
		if l.head == len(c) {
			l.head = 0
			if len(l.chunks) == 1 {
				l.chunks[0] = c[:0] // the last chunk: appended to again
				break
			}
			l.recycle(c)
			l.chunks[0] = nil
			l.chunks = l.chunks[1:]
		}
	}
	return dst
}

// pushFront puts recs, in order, before the lane's records.
func (l *lane) pushFront(recs []record.Call) {
	if len(recs) == 0 {
		return
	}
	// The first chunk's records move to its front, so that every chunk
	// but the first starts at 0.
	if l.head > 0 {
		c := l.chunks[0]
		n := copy(c, c[l.head:])
		clear(c[n:])
		l.chunks[0], l.head = c[:n], 0
	}
	front := make([][]record.Call, 0, (len(recs)+chunkLen-1)/chunkLen+len(l.chunks))
	for i := 0; i < len(recs); i += chunkLen {
		front = append(front, append(l.newChunk(), recs[i:min(i+chunkLen, len(recs))]...))
	}
	if len(l.chunks) == 1 && len(l.chunks[0]) == 0 {
		l.recycle(l.chunks[0])
		l.chunks = nil
	}
	l.chunks = append(front, l.chunks...)
	l.n += len(recs)
}

// each calls f for every record, in order.
func (l *lane) each(f func(*record.Call)) {
	for k, c := range l.chunks {
		from := 0
		if k == 0 {
			from = l.head
		}
		for i := from; i < len(c); i++ {
			f(&c[i])
		}
	}
}

// reset empties the lane and lets its chunks go.
func (l *lane) reset() { *l = lane{} }
