package store

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// TestSessionSinks: each session keeps its sinks' accounts; storing them
// again replaces them; a read selects sessions.
func TestSessionSinks(t *testing.T) {
	s, _ := openTest(t, func() time.Time { return time.Unix(1_800_000_000, 0) })
	var ids []uint64
	for range 2 {
		id, err := s.BeginSession(record.Session{PID: 7, Start: time.Now().UnixNano()})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	first := []SinkAccount{{Sink: "otlp", Function: "main.a", Written: 1, Dropped: 9, ErrorsLost: 2}}
	if err := s.SetSessionSinks(ids[0], first); err != nil {
		t.Fatal(err)
	}
	want0 := []SinkAccount{
		{Session: ids[0], Sink: "otlp", Function: "main.a", Written: 5, Dropped: 3, ErrorsLost: 1},
		{Session: ids[0], Sink: "store", Function: "main.a", Written: 8},
	}
	if err := s.SetSessionSinks(ids[0], want0); err != nil {
		t.Fatal(err)
	}
	want1 := []SinkAccount{{Session: ids[1], Sink: "store", Function: "main.b", Written: 4, Dropped: 1}}
	if err := s.SetSessionSinks(ids[1], want1); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	got, err := s.SessionSinks(ctx, ids[0])
	if err != nil || !reflect.DeepEqual(got, want0) {
		t.Errorf("session %d: %+v, %v; want %+v", ids[0], got, err, want0)
	}
	all, err := s.SessionSinks(ctx)
	if err != nil || !reflect.DeepEqual(all, append(want0, want1...)) {
		t.Errorf("all sessions: %+v, %v", all, err)
	}
}
