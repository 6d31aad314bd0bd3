package otlptest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
)

// The resource keys CheckProcesses reads besides those of CheckResources.
const (
	attrExecutablePath = "process.executable.path"
	attrSessionID      = "obs_agent.session_id"
)

// CheckProcesses asserts that every span came with the resource of its
// own call's process, for spans of several programs and processes sent by
// one agent: its session's program (service.name and
// process.executable.name the binary's file name,
// process.executable.path the binary, obs_agent.session_id the session
// of the call id) and the call's own pid. sessions are the store's
// session rows by id; calls the store's calls.
func (s *Spans) CheckProcesses(t testing.TB, calls []record.Call, sessions map[uint64]record.Session) {
	t.Helper()
	byID := map[uint64]*record.Call{}
	for i := range calls {
		byID[calls[i].ID] = &calls[i]
	}
	for k, sp := range s.ByID {
		v := Attr(sp.Attributes, attrCallID)
		c := byID[uint64(v.GetIntValue())]
		if c == nil {
			t.Errorf("span %s: call %d is not stored", k, v.GetIntValue())
			continue
		}
		sid := c.ID >> 40
		sess, ok := sessions[sid]
		if !ok {
			t.Errorf("span %s: call %d of session %d, which the store does not list", k, c.ID, sid)
			continue
		}
		r := s.Resources[k].GetAttributes()
		name := filepath.Base(sess.Binary)
		if Attr(r, attrServiceName).GetStringValue() != name || Attr(r, attrExecutableName).GetStringValue() != name ||
			Attr(r, attrExecutablePath).GetStringValue() != sess.Binary || Attr(r, attrProcessPID).GetIntValue() != int64(c.PID) ||
			Attr(r, attrSessionID).GetIntValue() != int64(sid) {
			t.Errorf("span %s (call %d, %s, pid %d, session %d of %s): resource %v", k, c.ID, c.Function, c.PID, sid, sess.Binary, r)
		}
	}
}

// CheckProcesses is Spans.CheckProcesses on what the receiver accepted so
// far.
func (r *Receiver) CheckProcesses(t testing.TB, calls []record.Call, sessions map[uint64]record.Session) {
	t.Helper()
	r.snapshot().CheckProcesses(t, calls, sessions)
}

// ReadStore opens the store at db read-only (closed when the test ends)
// and returns it, its calls and its session rows by id: what the checks
// here compare the received spans with.
func ReadStore(t testing.TB, db string) (*store.Store, []record.Call, map[uint64]record.Session) {
	t.Helper()
	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	calls, err := st.Calls(ctx, store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	rows, err := st.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sessions := map[uint64]record.Session{}
	for _, s := range rows {
		sessions[s.ID] = s
	}
	return st, calls, sessions
}
