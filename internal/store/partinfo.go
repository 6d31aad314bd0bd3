package store

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// Partition sizes that stay cheap on a big store (the UI's Store page,
// `query partitions`). Counting rows (count(*) walks every leaf page of a
// table) and sizing tables with SQLite's dbstat (which reads and decodes
// every page of the file) took 70 ms and 650-900 ms of CPU on the 6-hour,
// 6-million-call benchmark store; both grow with the store. Instead:
//
//   - rows: partitions.rows, added to by the writer in the transaction that
//     inserts the rows (addRows), so it is exact at every snapshot. Gaps
//     partitions (upserted, a handful of rows) and partitions from before
//     schema 5 keep NULL there and are counted.
//   - bytes: the pages of the partition's b-trees (its table, indexes and
//     side tables) counted from the interior pages alone: every leaf of a
//     b-tree is at the same depth, so the level above the leaves tells how
//     many there are. That reads a few pages per million rows
//     (sqlite_dbpage, through the same read snapshot) instead of all of
//     them. Overflow pages, which only a row of over ~16 KB (a table) or
//     ~4 KB (an index or WITHOUT ROWID table) would have, are not seen; no
//     partition has such rows (error texts are capped at 1 KiB), and
//     TestPartitionBytesMatchDbstat checks the total against dbstat.

// initialRows is the partitions.rows of a new partition: 0 when the writer
// keeps its count, NULL when readers count it.
func initialRows(kind string) any {
	if kind == KindGaps {
		return nil
	}
	return int64(0)
}

// addRows adds n inserted rows to table's count.
func (tx *wtx) addRows(table string, n int) error {
	st, err := tx.stmt(`UPDATE partitions SET rows = rows + ? WHERE name = ?`)
	if err != nil {
		return err
	}
	_, err = st.ExecContext(tx.ctx, int64(n), table)
	return err
}

// Partitions lists every partition, oldest hour first, with its row count
// and size; see above for why both are cheap.
func (s *Store) Partitions(ctx context.Context) ([]Partition, error) {
	var out []Partition
	err := s.read(ctx, "list partitions", func(r *rtx) error {
		var version int
		if err := r.tx.QueryRowContext(r.ctx, `SELECT version FROM schema_version`).Scan(&version); err != nil {
			return err
		}
		rowsCol := "NULL"
		if version >= 5 {
			rowsCol = "rows"
		}
		rows, err := r.tx.QueryContext(r.ctx, `SELECT name, kind, start_ns, end_ns, created_ns, `+rowsCol+` FROM partitions ORDER BY start_ns, name`)
		if err != nil {
			return err
		}
		var counted []sql.NullInt64
		for rows.Next() {
			var p Partition
			var st, en, cr int64
			var n sql.NullInt64
			if err := rows.Scan(&p.Name, &p.Kind, &st, &en, &cr, &n); err != nil {
				rows.Close()
				return err
			}
			p.Start, p.End, p.Created = time.Unix(0, st).UTC(), time.Unix(0, en).UTC(), time.Unix(0, cr).UTC()
			out = append(out, p)
			counted = append(counted, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		sizes, err := partitionBytes(r.ctx, r.tx)
		if err != nil {
			return err
		}
		for i := range out {
			if _, _, ok := ParsePartitionName(out[i].Name); !ok {
				return fmt.Errorf("%w: bad partition name %q in catalog", ErrCorrupt, out[i].Name)
			}
			out[i].Rows = counted[i].Int64
			if !counted[i].Valid {
				if err := r.tx.QueryRowContext(r.ctx, `SELECT count(*) FROM `+out[i].Name).Scan(&out[i].Rows); err != nil {
					return err
				}
			}
			out[i].Bytes = -1
			if sizes != nil {
				out[i].Bytes = sizes[out[i].Name]
			}
		}
		return nil
	})
	return out, err
}

// partitionBytes returns the bytes of the b-trees of each table, side
// tables and indexes counted with the partition they belong to (side
// structures are named <partition>__<side>); nil when the SQLite build has
// no sqlite_dbpage.
func partitionBytes(ctx context.Context, tx *sql.Tx) (map[string]int64, error) {
	var pageSize int64
	if err := tx.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&pageSize); err != nil {
		return nil, err
	}
	page, err := tx.PrepareContext(ctx, `SELECT data FROM sqlite_dbpage WHERE pgno = ?`)
	if err != nil {
		return nil, nil // no sqlite_dbpage: sizes unknown
	}
	defer page.Close()
	rows, err := tx.QueryContext(ctx, `SELECT tbl_name, rootpage FROM sqlite_master WHERE rootpage > 0`)
	if err != nil {
		return nil, err
	}
	type tree struct {
		owner string
		root  int64
	}
	var trees []tree
	for rows.Next() {
		var t tree
		if err := rows.Scan(&t.owner, &t.root); err != nil {
			rows.Close()
			return nil, err
		}
		if i := strings.Index(t.owner, "__"); i > 0 {
			t.owner = t.owner[:i]
		}
		if _, _, ok := ParsePartitionName(t.owner); ok {
			trees = append(trees, t)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	read := func(pgno int64) ([]byte, error) {
		var b []byte
		if err := page.QueryRowContext(ctx, pgno).Scan(&b); err != nil {
			return nil, fmt.Errorf("read page %d: %w", pgno, err)
		}
		return b, nil
	}
	out := map[string]int64{}
	for _, t := range trees {
		n, err := btreePages(read, t.root)
		if err != nil {
			return nil, err
		}
		out[t.owner] += n * pageSize
	}
	return out, nil
}

// B-tree page types (https://www.sqlite.org/fileformat.html, 1.6).
const (
	pageIndexInterior = 0x02
	pageTableInterior = 0x05
	pageIndexLeaf     = 0x0a
	pageTableLeaf     = 0x0d
)

// btreePages counts the pages of the b-tree rooted at root, overflow pages
// aside, reading its interior pages and one leaf.
func btreePages(read func(int64) ([]byte, error), root int64) (int64, error) {
	level := []int64{root}
	var total int64
	for depth := 0; ; depth++ {
		if depth > 64 {
			return 0, fmt.Errorf("%w: b-tree at page %d deeper than 64 levels", ErrCorrupt, root)
		}
		// All leaves are at one depth: when the level's first page is
		// a leaf, the whole level is, and its pages need no reading.
		first, err := read(level[0])
		if err != nil {
			return 0, err
		}
		if t, err := pageType(first, level[0]); err != nil {
			return 0, err
		} else if t == pageTableLeaf || t == pageIndexLeaf {
			return total + int64(len(level)), nil
		}
		total += int64(len(level))
		var next []int64
		for i, pg := range level {
			b := first
			if i > 0 {
				if b, err = read(pg); err != nil {
					return 0, err
				}
			}
			if next, err = appendChildren(next, b, pg); err != nil {
				return 0, err
			}
		}
		level = next
	}
}

// pageType returns the b-tree page type of page pgno (page 1 starts after
// the 100-byte file header).
func pageType(b []byte, pgno int64) (byte, error) {
	h := 0
	if pgno == 1 {
		h = 100
	}
	if len(b) < h+12 {
		return 0, fmt.Errorf("%w: page %d is %d bytes", ErrCorrupt, pgno, len(b))
	}
	switch t := b[h]; t {
	case pageIndexInterior, pageTableInterior, pageIndexLeaf, pageTableLeaf:
		return t, nil
	default:
		return 0, fmt.Errorf("%w: page %d has b-tree page type %#x", ErrCorrupt, pgno, t)
	}
}

// appendChildren appends the child page numbers of interior page pgno: the
// left child at the start of each cell, then the right-most pointer.
func appendChildren(out []int64, b []byte, pgno int64) ([]int64, error) {
	t, err := pageType(b, pgno)
	if err != nil {
		return nil, err
	}
	if t != pageTableInterior && t != pageIndexInterior {
		return nil, fmt.Errorf("%w: page %d is a leaf above an interior page's level", ErrCorrupt, pgno)
	}
	h := 0
	if pgno == 1 {
		h = 100
	}
	cells := int(binary.BigEndian.Uint16(b[h+3:]))
	if h+12+2*cells > len(b) {
		return nil, fmt.Errorf("%w: page %d claims %d cells", ErrCorrupt, pgno, cells)
	}
	for i := range cells {
		off := int(binary.BigEndian.Uint16(b[h+12+2*i:]))
		if off+4 > len(b) {
			return nil, fmt.Errorf("%w: page %d has a cell at %d", ErrCorrupt, pgno, off)
		}
		out = append(out, int64(binary.BigEndian.Uint32(b[off:])))
	}
	return append(out, int64(binary.BigEndian.Uint32(b[h+8:]))), nil
}
