package store

import (
	"context"
	"database/sql"
	"net/url"
)

// Watcher tells that the store has changed, whoever changed it: this
// process's writer, an agent in another process, or `retention run`. It is
// SQLite's PRAGMA data_version on a connection of its own, which changes
// whenever another connection commits; reading it looks at the WAL index
// in shared memory, so it is cheap enough to ask every 100 ms. The UI
// pushes a change event to open pages when it moves.
type Watcher struct {
	db   *sql.DB
	conn *sql.Conn
}

// Watch opens a Watcher on the store's file (its own read-only
// connection: data_version is per connection, so it can't come from the
// pool the reads share).
func (s *Store) Watch(ctx context.Context) (*Watcher, error) {
	p := url.Values{}
	p.Set("mode", "ro")
	p.Add("_pragma", "query_only(1)")
	db, err := sql.Open("sqlite", dsn(s.path, p))
	if err != nil {
		return nil, classify("watch "+s.path, err)
	}
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, classify("watch "+s.path, err)
	}
	return &Watcher{db: db, conn: conn}, nil
}

// Version is a number that differs from the last one read when another
// connection has committed since.
func (w *Watcher) Version(ctx context.Context) (int64, error) {
	v, err := dataVersion(ctx, w.conn)
	return v, classify("watch", err)
}

// Close releases the connection.
func (w *Watcher) Close() error {
	w.conn.Close()
	return w.db.Close()
}
