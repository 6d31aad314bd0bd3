package agent

import (
	"sync"

	"github.com/obs-agent/obs-agent/internal/otlp"
	"github.com/obs-agent/obs-agent/internal/queue"
	"github.com/obs-agent/obs-agent/internal/record"
)

// A host's sinks take the records of every target, and their ledgers
// (the queue's) are per function name, which two targets' binaries may
// share (main.main). Each target's account of each sink is made apart:
// the sink's writer counts what it wrote per session (sessionCounts), the
// target counts what it handed to the sinks (session.handed), and, once
// the sinks have drained, what a target handed and the sink did not write
// is what that sink lost of it.

// sessionCounts counts the records a sink wrote, per session and
// function, and the error records among them.
type sessionCounts struct {
	mu            sync.Mutex
	written, errs map[sessionFunc]uint64
}

type sessionFunc struct {
	session  uint64
	function string
}

func newSessionCounts() *sessionCounts {
	return &sessionCounts{written: map[sessionFunc]uint64{}, errs: map[sessionFunc]uint64{}}
}

func (n *sessionCounts) add(calls []record.Call) {
	n.mu.Lock()
	defer n.mu.Unlock()
	// One map update per run of records of one session and function
	// (a flood's batch is a few runs), as the queue's ledger does.
	for i := 0; i < len(calls); {
		k := sessionFunc{otlp.SessionOf(calls[i].ID), calls[i].Function}
		var errs uint64
		j := i
		for ; j < len(calls) && otlp.SessionOf(calls[j].ID) == k.session && calls[j].Function == k.function; j++ {
			if calls[j].IsError() {
				errs++
			}
		}
		n.written[k] += uint64(j - i)
		if errs > 0 {
			n.errs[k] += errs
		}
		i = j
	}
}

func (n *sessionCounts) get(session uint64, function string) (written, errs uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := sessionFunc{session, function}
	return n.written[k], n.errs[k]
}

// countingWriter is a sink's writer that counts what it wrote per session.
type countingWriter struct {
	queue.Writer
	n *sessionCounts
}

func (w countingWriter) WriteCalls(c []record.Call) error {
	if err := w.Writer.WriteCalls(c); err != nil {
		return err // a failed write wrote nothing
	}
	w.n.add(c)
	return nil
}

// countSessions makes the sink count what it writes per session; before
// start.
func (k *queueSink) countSessions() *sessionCounts {
	n := newSessionCounts()
	k.w = countingWriter{k.w, n}
	return n
}

// targetLedgers are target ht's accounts of the host's sinks, once they
// have drained. Every record a target handed to a sink was then written
// or lost, but for the store's error records still in its spill journal
// (for the next run), which it does not tell by session: when the journal
// holds records, the store's account of each target gives what it wrote
// and no loss (the host's line, from the sink's own ledger, has them).
func (h *host) targetLedgers(ht *hosted, storeExact bool) []Ledger {
	s := ht.s
	out := make([]Ledger, len(h.sinks))
	for i, k := range h.sinks {
		l := Ledger{Sink: k.Name(), Written: map[string]uint64{}, Dropped: map[string]uint64{}, ErrorsLost: map[string]uint64{}}
		exact := storeExact || k.Name() != storeSinkName
		for fid, name := range s.fnames() {
			handed, handedErr := s.handed[fid].Load(), s.handedErr[fid].Load()
			written, writtenErr := h.counts[i].get(s.sess.ID, name)
			if written > 0 {
				l.Written[name] = written
			}
			if !exact {
				continue
			}
			if handed > written {
				l.Dropped[name] = handed - written
			}
			if handedErr > writtenErr {
				l.ErrorsLost[name] = handedErr - writtenErr
			}
		}
		out[i] = l
	}
	return out
}

// storeTargetAccounts gives each target its accounts of the sinks, in its
// result (the exit line's lines per target) and in the store
// (session_sinks, for `query stats`).
func (h *host) storeTargetAccounts() {
	_, _, journal := h.store.q.Depth()
	if journal > 0 {
		h.log.Warn("the store's spill journal holds error records for the next run: each target's account of the store gives what was stored, the host's what is still in the journal", "records", journal)
	}
	for _, ht := range h.targets {
		s := ht.s
		s.result.Sinks = h.targetLedgers(ht, journal == 0)
		s.result.ErrorsLost = s.result.Sinks[0].ErrorsLost
		s.storeSinkAccounts()
	}
}
