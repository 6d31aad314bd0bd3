package query

import (
	"context"

	"github.com/obs-agent/obs-agent/internal/store"
)

// Watch opens a store.Watcher, which tells when the store has changed (the
// UI's live updates).
func (q *Layer) Watch(ctx context.Context) (*store.Watcher, error) { return q.s.Watch(ctx) }
