package ui

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/obs-agent/obs-agent/internal/store"
)

// Live updates. Open pages subscribe to /api/events, a Server-Sent Events
// stream that says "change" as soon as the store has changed; the page then
// re-reads what it shows. The change comes from the store itself (a
// store.Watcher: SQLite's data_version, read every watchEvery while a page
// is open), so it covers every writer alike: the agent of `run --ui` or
// `attach --ui` in this process, an agent in another process under
// `obs-agent ui`, and retention dropping an hour. The agent's writer
// commits a batch at least every 200 ms while calls arrive (the queue's
// flush), so a call is on the page about 200 + 100 ms plus one page read
// after it returned (TestLive in browsertest measures it).

// watchEvery is how often the store's version is read while a page listens.
const watchEvery = 100 * time.Millisecond

// heartbeatEvery keeps an idle stream from being closed by proxies and
// lets the server notice a page that went away.
const heartbeatEvery = 15 * time.Second

// hub watches the store while pages listen and tells each of them.
type hub struct {
	s    *Server
	mu   sync.Mutex
	subs map[chan struct{}]bool
	stop context.CancelFunc
}

// subscribe returns a channel that receives (coalesced) change signals,
// and starts watching if this is the first page.
func (h *hub) subscribe() chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := make(chan struct{}, 1)
	if h.subs == nil {
		h.subs = map[chan struct{}]bool{}
	}
	h.subs[c] = true
	if h.stop == nil {
		ctx, cancel := context.WithCancel(context.Background())
		h.stop = cancel
		go h.watch(ctx)
	}
	return c
}

// unsubscribe drops c and stops watching after the last page.
func (h *hub) unsubscribe(c chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, c)
	if len(h.subs) == 0 && h.stop != nil {
		h.stop()
		h.stop = nil
	}
}

func (h *hub) broadcast() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.subs {
		select {
		case c <- struct{}{}:
		default: // a change is already pending for that page
		}
	}
}

// watch reads the store's version every watchEvery until ctx ends. Until
// the store exists (`run --ui` serves before the agent creates it) it
// retries opening it; the first successful open is a change.
func (h *hub) watch(ctx context.Context) {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	var w *store.Watcher
	defer func() {
		if w != nil {
			w.Close()
		}
	}()
	last := int64(-1)
	missing := false // the store did not exist when the watch began
	for {
		if w == nil {
			q, err := h.s.layer()
			if err != nil {
				missing = true
			} else if w, err = q.Watch(ctx); err != nil {
				if ctx.Err() == nil {
					h.s.log.Warn("live updates: watch the store", "err", err)
				}
				w = nil
			}
		}
		if w != nil {
			v, err := w.Version(ctx)
			switch {
			case err != nil && ctx.Err() == nil:
				h.s.log.Warn("live updates: read the store's version", "err", err)
			case err == nil && v != last:
				if last != -1 || missing {
					h.broadcast()
				}
				last, missing = v, false
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// events serves /api/events: "event: change" whenever the store changed,
// and a comment line every heartbeatEvery.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	if err := allowOnly(r.URL.Query()); err != nil {
		bp := err.(*badParam)
		writeError(w, http.StatusBadRequest, bp.param, bp.msg)
		return
	}
	rc := http.NewResponseController(w)
	// The stream outlives the server's WriteTimeout.
	if err := rc.SetWriteDeadline(time.Time{}); err != nil {
		writeError(w, http.StatusInternalServerError, "", "live updates: "+err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	c := s.hub.subscribe()
	defer s.hub.unsubscribe(c)
	// retry: how long the browser waits before it reconnects.
	fmt.Fprint(w, "retry: 1000\n: obs-agent live updates\n\n")
	if err := rc.Flush(); err != nil {
		return
	}
	beat := time.NewTicker(heartbeatEvery)
	defer beat.Stop()
	for {
		var err error
		select {
		case <-r.Context().Done():
			return
		case <-s.streamsDone:
			return
		case <-c:
			_, err = fmt.Fprint(w, "event: change\ndata: {}\n\n")
		case <-beat.C:
			_, err = fmt.Fprint(w, ": heartbeat\n\n")
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			return
		}
	}
}
