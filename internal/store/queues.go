package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gust-run/gust/internal/errdefs"
)

// Modal's limits of a Queue (modal.Queue's documentation).
const (
	QueueMaxPartitions    = 100_000
	QueueMaxItems         = 5_000   // per partition
	QueueMaxItemBytes     = 1 << 20 // per item, as pickled
	QueueMaxPartitionKey  = 64      // bytes of UTF-8
	QueueDefaultTTL       = 24 * time.Hour
	QueueMaxPartitionTTL  = 24 * time.Hour
	QueueLenCap           = 100_000 // what len() counts at most, as Modal caps it
	queueIteratePageItems = 100
	// queuePageBytes bounds what one get or iterate answers (at least one item): 5,000 items
	// of 1 MiB must not become one 5 GiB answer in the server's memory.
	queuePageBytes = 16 << 20
)

// QueueItem is an item that Queue.iterate() reads without taking it.
type QueueItem struct {
	ID    string `json:"entry_id"`
	Value []byte `json:"value"`
}

// CreateQueue makes a named Queue of workspace ws, or an ephemeral one when name is "".
func (s *Store) CreateQueue(ctx context.Context, ws, name, createdBy string, allowExisting bool) (KVObject, error) {
	return s.kvCreate(ctx, queueKind, ws, name, createdBy, allowExisting)
}

// LookupQueue finds a named Queue of workspace ws, creating it when create is set.
func (s *Store) LookupQueue(ctx context.Context, ws, name, createdBy string, create bool) (KVObject, error) {
	if err := CheckObjectName(name, queueKind.what); err != nil {
		return KVObject{}, err
	}
	if create {
		return s.kvCreate(ctx, queueKind, ws, name, createdBy, true)
	}
	return s.kvLookup(ctx, queueKind, ws, name)
}

// GetQueue returns a Queue of workspace ws by ID.
func (s *Store) GetQueue(ctx context.Context, ws, id string) (KVObject, error) {
	return s.kvGet(ctx, queueKind, ws, id)
}

// ListQueues returns the named Queues of workspace ws, newest first.
func (s *Store) ListQueues(ctx context.Context, ws string, limit int, before time.Time) ([]KVObject, error) {
	return s.kvList(ctx, queueKind, ws, limit, before)
}

// HeartbeatQueue keeps an ephemeral Queue alive.
func (s *Store) HeartbeatQueue(ctx context.Context, ws, id string) error {
	return s.kvHeartbeat(ctx, queueKind, ws, id)
}

// QueueStats is what `gust queue list` shows of a Queue beside its name.
type QueueStats struct {
	Partitions int `json:"num_partitions"`
	TotalSize  int `json:"total_size"`
}

// QueueStats counts the live partitions and items of a Queue of workspace ws.
func (s *Store) QueueStats(ctx context.Context, ws, id string) (QueueStats, error) {
	if _, err := s.GetQueue(ctx, ws, id); err != nil {
		return QueueStats{}, err
	}
	var st QueueStats
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(n), 0) FROM queue_partitions WHERE queue_id = ? AND expires >= ?`,
		id, time.Now().UnixNano()).Scan(&st.Partitions, &st.TotalSize)
	if err != nil {
		return st, fmt.Errorf("store: Queue %s: stats: %w", id, err)
	}
	return st, nil
}

// DeleteQueue removes a Queue of workspace ws and its items; a get blocked on it returns
// not found.
func (s *Store) DeleteQueue(ctx context.Context, ws, id string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: delete Queue %s: %w", id, err)
	}
	defer rollback(tx)
	res, err := tx.ExecContext(ctx, `DELETE FROM queues WHERE id = ? AND workspace_id = ?`, id, ws)
	if err != nil {
		return fmt.Errorf("store: delete Queue %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errdefs.NotFound("Queue %q not found", id)
	}
	for _, q := range []string{`DELETE FROM queue_items WHERE queue_id = ?`, `DELETE FROM queue_partitions WHERE queue_id = ?`} {
		if _, err := tx.ExecContext(ctx, q, id); err != nil {
			return fmt.Errorf("store: delete Queue %s: %w", id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: delete Queue %s: %w", id, err)
	}
	s.kvWaits.wakeQueue(id)
	return nil
}

// CheckPartition refuses a partition key Modal refuses. "" is the default partition.
func CheckPartition(partition string) error {
	if len(partition) > QueueMaxPartitionKey || !utf8.ValidString(partition) {
		return errdefs.Invalid("Queue partition key must be between 1 and 64 characters.")
	}
	return nil
}

// queueTx begins a transaction on a Queue of workspace ws, checking that it exists there.
func (s *Store) queueTx(ctx context.Context, ws, id string) (*sql.Tx, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: Queue %s: %w", id, err)
	}
	var one int
	err = tx.QueryRowContext(ctx, `SELECT 1 FROM queues WHERE id = ? AND workspace_id = ?`, id, ws).Scan(&one)
	if err != nil {
		rollback(tx)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, errdefs.NotFound("Queue %q not found", id)
		}
		return nil, fmt.Errorf("store: Queue %s: %w", id, err)
	}
	return tx, nil
}

// livePartition returns a partition's item count and whether it exists, first clearing it if
// its TTL has passed (the sweep may not have come by yet).
func livePartition(ctx context.Context, tx *sql.Tx, id, partition string, now int64) (n int, exists bool, err error) {
	var bytes, expires int64
	err = tx.QueryRowContext(ctx, `SELECT n, bytes, expires FROM queue_partitions WHERE queue_id = ? AND partition = ?`, id, partition).Scan(&n, &bytes, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	if expires >= now {
		return n, true, nil
	}
	if err := dropPartition(ctx, tx, id, partition, bytes); err != nil {
		return 0, false, err
	}
	return 0, false, nil
}

// dropPartition deletes a partition and its items, which took bytes.
func dropPartition(ctx context.Context, tx *sql.Tx, id, partition string, bytes int64) error {
	for _, q := range []string{`DELETE FROM queue_items WHERE queue_id = ? AND partition = ?`, `DELETE FROM queue_partitions WHERE queue_id = ? AND partition = ?`} {
		if _, err := tx.ExecContext(ctx, q, id, partition); err != nil {
			return err
		}
	}
	_, err := tx.ExecContext(ctx, `UPDATE queues SET bytes = bytes - ? WHERE id = ?`, bytes, id)
	return err
}

// errQueueFull is what a put into a full partition gets; Modal's clients raise queue.Full.
func errQueueFull(partition string, n, adding int) error {
	where := "the default partition"
	if partition != "" {
		where = fmt.Sprintf("partition %q", partition)
	}
	return errdefs.WithKind(errdefs.ErrResourceExhausted, fmt.Sprintf("Queue is full: %s holds %d items and the limit is %d; this put adds %d (get items out, or wait with block=True)",
		where, n, QueueMaxItems, adding))
}

// QueuePut appends values to a partition of a Queue of workspace ws, waiting up to wait for
// room when the partition is full (then a resource_exhausted error). ttl (at most
// QueueMaxPartitionTTL) is how long the partition lives after this put. quota is the
// workspace's bytes of Dict and Queue contents (0: no limit).
func (s *Store) QueuePut(ctx context.Context, ws, id, partition string, values [][]byte, ttl, wait time.Duration, quota int64) error {
	if err := CheckPartition(partition); err != nil {
		return err
	}
	if len(values) == 0 {
		return nil
	}
	if len(values) > QueueMaxItems {
		return errdefs.Invalid("Queue.put_many of %d items is more than a partition holds (%d)", len(values), QueueMaxItems)
	}
	for i, v := range values {
		if len(v) > QueueMaxItemBytes {
			return errdefs.TooLarge("Queue item %d is %d bytes pickled; an item can be up to 1 MiB", i, len(v))
		}
	}
	ttl = min(ttl, QueueMaxPartitionTTL)
	if ttl <= 0 {
		ttl = QueueDefaultTTL
	}
	deadline := time.Now().Add(wait)
	for {
		room, done := s.kvWaits.watch(waitKey{id, partition, true})
		full, err := s.queuePut(ctx, ws, id, partition, values, ttl, quota)
		if err == nil {
			done()
			s.kvWaits.wake(waitKey{id, partition, false})
			return nil
		}
		left := time.Until(deadline)
		if !full || left <= 0 {
			done()
			return err
		}
		t := time.NewTimer(left)
		select {
		case <-room:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		done()
		if ctx.Err() != nil {
			return err
		}
	}
}

// queuePut is one try of QueuePut; full reports a partition without room.
func (s *Store) queuePut(ctx context.Context, ws, id, partition string, values [][]byte, ttl time.Duration, quota int64) (full bool, err error) {
	tx, err := s.queueTx(ctx, ws, id)
	if err != nil {
		return false, err
	}
	defer rollback(tx)
	now := time.Now().UnixNano()
	n, exists, err := livePartition(ctx, tx, id, partition, now)
	if err != nil {
		return false, fmt.Errorf("store: Queue %s: put: %w", id, err)
	}
	if n+len(values) > QueueMaxItems {
		return true, errQueueFull(partition, n, len(values))
	}
	if !exists {
		var parts int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM queue_partitions WHERE queue_id = ?`, id).Scan(&parts); err != nil {
			return false, fmt.Errorf("store: Queue %s: put: %w", id, err)
		}
		if parts >= QueueMaxPartitions {
			return false, errdefs.WithKind(errdefs.ErrResourceExhausted, fmt.Sprintf("Queue has %d partitions, the most a Queue may have; clear some (Queue.clear(partition=...)) or use fewer keys", parts))
		}
	}
	var size int64
	for _, v := range values {
		size += int64(len(v))
	}
	if err := checkKVQuota(ctx, tx, ws, size, quota); err != nil {
		return false, err
	}
	st, err := tx.PrepareContext(ctx, `INSERT INTO queue_items(queue_id, partition, value) VALUES (?, ?, ?)`)
	if err != nil {
		return false, fmt.Errorf("store: Queue %s: put: %w", id, err)
	}
	defer closeStmt(st)
	for _, v := range values {
		if v == nil {
			v = []byte{}
		}
		if _, err := st.ExecContext(ctx, id, partition, v); err != nil {
			return false, fmt.Errorf("store: Queue %s: put: %w", id, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO queue_partitions(queue_id, partition, n, bytes, expires) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT(queue_id, partition) DO UPDATE SET n = n + excluded.n, bytes = bytes + excluded.bytes, expires = excluded.expires`,
		id, partition, len(values), size, now+int64(ttl)); err != nil {
		return false, fmt.Errorf("store: Queue %s: put: %w", id, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE queues SET bytes = bytes + ? WHERE id = ?`, size, id); err != nil {
		return false, fmt.Errorf("store: Queue %s: put: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("store: Queue %s: put: %w", id, err)
	}
	return false, nil
}

// QueueGet takes up to n items from the front of a partition of a Queue of workspace ws. When
// it is empty it waits up to wait for a put into that partition: a blocked get is woken by
// the put's commit (kvWaits), not by polling. It returns no items when the wait ends first.
func (s *Store) QueueGet(ctx context.Context, ws, id, partition string, n int, wait time.Duration) ([][]byte, error) {
	if err := CheckPartition(partition); err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, errdefs.Invalid("n_values must be at least 1, got %d", n)
	}
	n = min(n, QueueMaxItems)
	deadline := time.Now().Add(wait)
	for {
		// Watch before looking, so that a put between the look and the wait is not missed.
		ready, done := s.kvWaits.watch(waitKey{id, partition, false})
		vals, err := s.queueTake(ctx, ws, id, partition, n)
		left := time.Until(deadline)
		if err != nil || len(vals) > 0 || left <= 0 {
			done()
			if len(vals) > 0 {
				s.kvWaits.wake(waitKey{id, partition, true})
			}
			return vals, err
		}
		t := time.NewTimer(left)
		select {
		case <-ready:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		done()
		if ctx.Err() != nil {
			return nil, nil
		}
	}
}

// queueTake is one try of QueueGet.
func (s *Store) queueTake(ctx context.Context, ws, id, partition string, n int) ([][]byte, error) {
	tx, err := s.queueTx(ctx, ws, id)
	if err != nil {
		return nil, err
	}
	defer rollback(tx)
	have, _, err := livePartition(ctx, tx, id, partition, time.Now().UnixNano())
	if err != nil {
		return nil, fmt.Errorf("store: Queue %s: get: %w", id, err)
	}
	if have == 0 {
		// Committing the expiry livePartition may have done.
		if err := tx.Commit(); err != nil {
			return nil, fmt.Errorf("store: Queue %s: get: %w", id, err)
		}
		return nil, nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT seq, value FROM queue_items WHERE queue_id = ? AND partition = ? ORDER BY seq LIMIT ?`, id, partition, n)
	if err != nil {
		return nil, fmt.Errorf("store: Queue %s: get: %w", id, err)
	}
	var vals [][]byte
	var last, size int64
	for rows.Next() {
		var v []byte
		if err := rows.Scan(&last, &v); err != nil {
			closeRows(rows)
			return nil, fmt.Errorf("store: Queue %s: get: %w", id, err)
		}
		if v == nil {
			v = []byte{}
		}
		size += int64(len(v))
		vals = append(vals, v)
		if size >= queuePageBytes {
			break // the rest waits for the next get
		}
	}
	err = rows.Err()
	closeRows(rows)
	if err != nil {
		return nil, fmt.Errorf("store: Queue %s: get: %w", id, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM queue_items WHERE queue_id = ? AND partition = ? AND seq <= ?`, id, partition, last); err != nil {
		return nil, fmt.Errorf("store: Queue %s: get: %w", id, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE queue_partitions SET n = n - ?, bytes = bytes - ? WHERE queue_id = ? AND partition = ?`, len(vals), size, id, partition); err != nil {
		return nil, fmt.Errorf("store: Queue %s: get: %w", id, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE queues SET bytes = bytes - ? WHERE id = ?`, size, id); err != nil {
		return nil, fmt.Errorf("store: Queue %s: get: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: Queue %s: get: %w", id, err)
	}
	return vals, nil
}

// QueueLen counts the items of a partition of a Queue of workspace ws, or of all its
// partitions with total; at most QueueLenCap.
func (s *Store) QueueLen(ctx context.Context, ws, id, partition string, total bool) (int, error) {
	if err := CheckPartition(partition); err != nil {
		return 0, err
	}
	if total && partition != "" {
		return 0, errdefs.Invalid("Partition must be null when requesting total length.")
	}
	if _, err := s.GetQueue(ctx, ws, id); err != nil {
		return 0, err
	}
	q := `SELECT COALESCE(SUM(n), 0) FROM queue_partitions WHERE queue_id = ? AND expires >= ?`
	args := []any{id, time.Now().UnixNano()}
	if !total {
		q += ` AND partition = ?`
		args = append(args, partition)
	}
	var n int
	if err := s.db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: Queue %s: len: %w", id, err)
	}
	return min(n, QueueLenCap), nil
}

// QueueClear empties a partition of a Queue of workspace ws, or all of them with all.
func (s *Store) QueueClear(ctx context.Context, ws, id, partition string, all bool) error {
	if err := CheckPartition(partition); err != nil {
		return err
	}
	if all && partition != "" {
		return errdefs.Invalid("Partition must be null when requesting to clear all.")
	}
	tx, err := s.queueTx(ctx, ws, id)
	if err != nil {
		return err
	}
	defer rollback(tx)
	if all {
		for _, q := range []string{`DELETE FROM queue_items WHERE queue_id = ?`, `DELETE FROM queue_partitions WHERE queue_id = ?`, `UPDATE queues SET bytes = 0 WHERE id = ?`} {
			if _, err := tx.ExecContext(ctx, q, id); err != nil {
				return fmt.Errorf("store: Queue %s: clear: %w", id, err)
			}
		}
	} else {
		var bytes int64
		err := tx.QueryRowContext(ctx, `SELECT bytes FROM queue_partitions WHERE queue_id = ? AND partition = ?`, id, partition).Scan(&bytes)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("store: Queue %s: clear: %w", id, err)
		}
		if err == nil {
			if err := dropPartition(ctx, tx, id, partition, bytes); err != nil {
				return fmt.Errorf("store: Queue %s: clear: %w", id, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: Queue %s: clear: %w", id, err)
	}
	if all {
		s.kvWaits.wakeQueue(id)
	} else {
		s.kvWaits.wake(waitKey{id, partition, true})
	}
	return nil
}

// QueueItems reads, without taking them, up to a page of the items of a partition of a Queue
// of workspace ws that come after the item after ("" from the front). When there are none it
// waits up to wait for a put, as QueueGet does. This is Modal's Queue.iterate().
func (s *Store) QueueItems(ctx context.Context, ws, id, partition, after string, wait time.Duration) ([]QueueItem, error) {
	if err := CheckPartition(partition); err != nil {
		return nil, err
	}
	var from int64
	if after != "" {
		var err error
		if from, err = strconv.ParseInt(after, 10, 64); err != nil || from < 0 {
			return nil, errdefs.Invalid("last_entry_id %q is not an entry ID this server gave", after)
		}
	}
	deadline := time.Now().Add(wait)
	for {
		ready, done := s.kvWaits.watch(waitKey{id, partition, false})
		items, err := s.queueItems(ctx, ws, id, partition, from)
		left := time.Until(deadline)
		if err != nil || len(items) > 0 || left <= 0 {
			done()
			return items, err
		}
		t := time.NewTimer(left)
		select {
		case <-ready:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		done()
		if ctx.Err() != nil {
			return nil, nil
		}
	}
}

func (s *Store) queueItems(ctx context.Context, ws, id, partition string, from int64) ([]QueueItem, error) {
	if _, err := s.GetQueue(ctx, ws, id); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT i.seq, i.value FROM queue_items i JOIN queue_partitions p ON p.queue_id = i.queue_id AND p.partition = i.partition
		WHERE i.queue_id = ? AND i.partition = ? AND i.seq > ? AND p.expires >= ? ORDER BY i.seq LIMIT ?`,
		id, partition, from, time.Now().UnixNano(), queueIteratePageItems)
	if err != nil {
		return nil, fmt.Errorf("store: Queue %s: iterate: %w", id, err)
	}
	defer closeRows(rows)
	out := []QueueItem{}
	size := 0
	for rows.Next() && size < queuePageBytes {
		var seq int64
		var it QueueItem
		if err := rows.Scan(&seq, &it.Value); err != nil {
			return nil, fmt.Errorf("store: Queue %s: iterate: %w", id, err)
		}
		it.ID = strconv.FormatInt(seq, 10)
		size += len(it.Value)
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: Queue %s: iterate: %w", id, err)
	}
	return out, nil
}

// expireQueuePartitions drops the partitions whose TTL has passed.
func (s *Store) expireQueuePartitions(ctx context.Context, now time.Time) (int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT queue_id, partition FROM queue_partitions WHERE expires < ? LIMIT 1000`, now.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("store: expire Queue partitions: %w", err)
	}
	var parts [][2]string
	for rows.Next() {
		var p [2]string
		if err := rows.Scan(&p[0], &p[1]); err != nil {
			closeRows(rows)
			return 0, fmt.Errorf("store: expire Queue partitions: %w", err)
		}
		parts = append(parts, p)
	}
	err = rows.Err()
	closeRows(rows)
	if err != nil {
		return 0, fmt.Errorf("store: expire Queue partitions: %w", err)
	}
	var total int64
	for _, p := range parts {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return total, fmt.Errorf("store: expire Queue partitions: %w", err)
		}
		// livePartition drops it if it is still expired (a put may have renewed it since).
		if _, _, err := livePartition(ctx, tx, p[0], p[1], now.UnixNano()); err != nil {
			rollback(tx)
			return total, fmt.Errorf("store: expire Queue partitions: %w", err)
		}
		if err := tx.Commit(); err != nil {
			return total, fmt.Errorf("store: expire Queue partitions: %w", err)
		}
		s.kvWaits.wake(waitKey{p[0], p[1], true})
		total++
	}
	return total, nil
}

// waitKey names what a blocked call waits for: items in (room false) or room in (room true)
// a partition of a Queue.
type waitKey struct {
	queue, partition string
	room             bool
}

// notifier wakes the calls blocked on a Queue partition when a commit changes it. It holds an
// entry only while someone waits, so its memory is bounded by the blocked calls.
type notifier struct {
	mu sync.Mutex
	m  map[waitKey]*waitSlot
}

type waitSlot struct {
	ch   chan struct{} // closed to wake every watcher at once
	refs int
}

// watch returns a channel that is closed at the next wake of k, and the function that stops
// watching (call it once).
func (n *notifier) watch(k waitKey) (<-chan struct{}, func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = map[waitKey]*waitSlot{}
	}
	sl := n.m[k]
	if sl == nil {
		sl = &waitSlot{ch: make(chan struct{})}
		n.m[k] = sl
	}
	sl.refs++
	return sl.ch, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		sl.refs--
		if sl.refs == 0 && n.m[k] == sl {
			delete(n.m, k)
		}
	}
}

// wake wakes the watchers of k.
func (n *notifier) wake(k waitKey) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if sl := n.m[k]; sl != nil {
		close(sl.ch)
		sl.ch = make(chan struct{})
	}
}

// wakeQueue wakes every watcher of a Queue (it was deleted or cleared).
func (n *notifier) wakeQueue(queue string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, sl := range n.m {
		if k.queue == queue {
			close(sl.ch)
			sl.ch = make(chan struct{})
		}
	}
}

// waiting is how many keys have watchers (for tests of the notifier's memory).
func (n *notifier) waiting() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.m)
}
