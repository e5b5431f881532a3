package gust

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// Dicts and Queues, as Modal's: named (or ephemeral) objects of the workspace whose keys and
// values are opaque bytes. The Python SDK pickles what it stores; Go programs that share a
// Dict or Queue with Python code store pickles too (PickleString makes one of a string), or
// agree on another encoding among themselves.

// ErrQueueEmpty is what a blocking Queue get returns when its timeout passes with no item
// (Modal's queue.Empty).
var ErrQueueEmpty = errors.New("gust: the Queue partition stayed empty until the timeout")

// ephemeralHeartbeat is how often an ephemeral object's holder tells the server it is alive
// (the server drops it 15 minutes after the last beat).
const ephemeralHeartbeat = 5 * time.Minute

// kvObject is what a Dict and a Queue share.
type kvObject struct {
	Name      string    `json:"name,omitempty"`
	Ephemeral bool      `json:"ephemeral,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`

	c    *Client
	stop chan struct{} // closes the heartbeat of an ephemeral object
	once sync.Once
}

// Dict is a distributed dictionary of the workspace.
type Dict struct {
	ID string `json:"dict_id"`
	kvObject
}

// Queue is a distributed FIFO queue of the workspace, in partitions.
type Queue struct {
	ID string `json:"queue_id"`
	kvObject
	// Partitions and TotalSize are filled by ListQueues only.
	Partitions int `json:"num_partitions,omitempty"`
	TotalSize  int `json:"total_size,omitempty"`
}

// DictEntry is a key and its value, both as stored (pickled, for Python's use).
type DictEntry struct {
	Key   []byte `json:"key"`
	Value []byte `json:"value,omitempty"`
}

// QueueItem is an item read in place by Queue.Items.
type QueueItem struct {
	ID    string `json:"entry_id"`
	Value []byte `json:"value"`
}

// ObjectListOptions narrows ListDicts and ListQueues: at most Limit (0: all), created before
// CreatedBefore (zero: any time).
type ObjectListOptions struct {
	Limit         int
	CreatedBefore time.Time
}

func (o ObjectListOptions) query() url.Values {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if !o.CreatedBefore.IsZero() {
		q.Set("created_before", o.CreatedBefore.UTC().Format(time.RFC3339Nano))
	}
	return q
}

// kvCreate, kvLookup, kvGet are the shared calls of both kinds; route is dicts or queues.
func (c *Client) kvCreate(ctx context.Context, route string, body map[string]any, out any) error {
	return c.call(ctx, request{method: http.MethodPost, path: "/v1/" + route, json: body}, out)
}

// beat starts the heartbeat of an ephemeral object at path.
func (o *kvObject) beat(path string) {
	o.stop = make(chan struct{})
	go func() {
		t := time.NewTicker(ephemeralHeartbeat)
		defer t.Stop()
		for {
			select {
			case <-o.stop:
				return
			case <-t.C:
				// A failed beat is retried at the next tick; the server keeps the object 15 minutes.
				_ = o.c.call(context.Background(), request{method: http.MethodPost, path: path + "/heartbeat"}, nil)
			}
		}
	}()
}

func (o *kvObject) close(ctx context.Context, path string) error {
	o.once.Do(func() {
		if o.stop != nil {
			close(o.stop)
		}
	})
	return o.c.call(ctx, request{method: http.MethodDelete, path: path}, nil)
}

// CreateDict makes a named Dict; an existing name is an error satisfying
// errors.Is(err, ErrConflict) unless allowExisting.
func (c *Client) CreateDict(ctx context.Context, name string, allowExisting bool) (*Dict, error) {
	d := &Dict{}
	if err := c.kvCreate(ctx, "dicts", map[string]any{"name": name, "allow_existing": allowExisting}, d); err != nil {
		return nil, fmt.Errorf("create Dict %q: %w", name, err)
	}
	d.c = c
	return d, nil
}

// EphemeralDict makes an anonymous Dict that lives until Close (or 15 minutes after this
// process stops beating for it).
func (c *Client) EphemeralDict(ctx context.Context) (*Dict, error) {
	d := &Dict{}
	if err := c.kvCreate(ctx, "dicts", map[string]any{"ephemeral": true}, d); err != nil {
		return nil, fmt.Errorf("create an ephemeral Dict: %w", err)
	}
	d.c = c
	d.beat(d.path(""))
	return d, nil
}

// DictFromName looks up a named Dict (Modal's Dict.from_name), creating it if createIfMissing.
func (c *Client) DictFromName(ctx context.Context, name string, createIfMissing bool) (*Dict, error) {
	d := &Dict{}
	body := map[string]any{"name": name, "create_if_missing": createIfMissing}
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/dicts/lookup", json: body}, d); err != nil {
		return nil, fmt.Errorf("look up Dict %q: %w", name, err)
	}
	d.c = c
	return d, nil
}

// DictFromID returns a Dict by its ID.
func (c *Client) DictFromID(ctx context.Context, id string) (*Dict, error) {
	d := &Dict{}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/dicts/" + pathEscape(id)}, d); err != nil {
		return nil, fmt.Errorf("get Dict %s: %w", id, err)
	}
	d.c = c
	return d, nil
}

// ListDicts returns the named Dicts, newest first.
func (c *Client) ListDicts(ctx context.Context, o ObjectListOptions) ([]*Dict, error) {
	var out struct {
		Dicts []*Dict `json:"dicts"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/dicts", query: o.query()}, &out); err != nil {
		return nil, fmt.Errorf("list Dicts: %w", err)
	}
	for _, d := range out.Dicts {
		d.c = c
	}
	return out.Dicts, nil
}

// DeleteDict deletes a named Dict and its entries; a missing one is an error satisfying
// errors.Is(err, ErrNotFound) unless allowMissing.
func (c *Client) DeleteDict(ctx context.Context, name string, allowMissing bool) error {
	d, err := c.DictFromName(ctx, name, false)
	if err != nil {
		if allowMissing && errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	return d.Delete(ctx)
}

func (d *Dict) path(suffix string) string { return "/v1/dicts/" + pathEscape(d.ID) + suffix }

func keyPath(key []byte) string { return "/entries/" + base64.RawURLEncoding.EncodeToString(key) }

// Delete deletes the Dict and its entries.
func (d *Dict) Delete(ctx context.Context) error {
	if err := d.close(ctx, d.path("")); err != nil {
		return fmt.Errorf("delete Dict %s: %w", d.ID, err)
	}
	return nil
}

// Close deletes an ephemeral Dict (and stops its heartbeat).
func (d *Dict) Close(ctx context.Context) error { return d.Delete(ctx) }

// Put sets key to value. With skipIfExists an existing key is left alone; created reports
// whether the value was written.
func (d *Dict) Put(ctx context.Context, key, value []byte, skipIfExists bool) (created bool, err error) {
	var out struct {
		Created bool `json:"created"`
	}
	body := map[string]any{"entries": []DictEntry{{key, value}}, "skip_if_exists": skipIfExists}
	if err := d.c.call(ctx, request{method: http.MethodPost, path: d.path("/entries"), json: body}, &out); err != nil {
		return false, fmt.Errorf("Dict %s: put: %w", d.ID, err)
	}
	return out.Created, nil
}

// Update writes several entries in one request.
func (d *Dict) Update(ctx context.Context, entries []DictEntry) error {
	if err := d.c.call(ctx, request{method: http.MethodPost, path: d.path("/entries"), json: map[string]any{"entries": entries}}, nil); err != nil {
		return fmt.Errorf("Dict %s: update: %w", d.ID, err)
	}
	return nil
}

type entryAnswer struct {
	Found bool   `json:"found"`
	Value []byte `json:"value"`
}

// Get returns the value of key and whether it was there.
func (d *Dict) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	var out entryAnswer
	if err := d.c.call(ctx, request{method: http.MethodGet, path: d.path(keyPath(key))}, &out); err != nil {
		return nil, false, fmt.Errorf("Dict %s: get: %w", d.ID, err)
	}
	return out.Value, out.Found, nil
}

// Contains reports whether key is in the Dict.
func (d *Dict) Contains(ctx context.Context, key []byte) (bool, error) {
	var out entryAnswer
	if err := d.c.call(ctx, request{method: http.MethodGet, path: d.path(keyPath(key)), query: url.Values{"value": {"0"}}}, &out); err != nil {
		return false, fmt.Errorf("Dict %s: contains: %w", d.ID, err)
	}
	return out.Found, nil
}

// Pop removes key, returning its value and whether it was there.
func (d *Dict) Pop(ctx context.Context, key []byte) ([]byte, bool, error) {
	var out entryAnswer
	if err := d.c.call(ctx, request{method: http.MethodDelete, path: d.path(keyPath(key))}, &out); err != nil {
		return nil, false, fmt.Errorf("Dict %s: pop: %w", d.ID, err)
	}
	return out.Value, out.Found, nil
}

// Len counts the entries (at most 100,000).
func (d *Dict) Len(ctx context.Context) (int, error) {
	var out struct {
		Len int `json:"len"`
	}
	if err := d.c.call(ctx, request{method: http.MethodGet, path: d.path("/len")}, &out); err != nil {
		return 0, fmt.Errorf("Dict %s: len: %w", d.ID, err)
	}
	return out.Len, nil
}

// Clear removes every entry.
func (d *Dict) Clear(ctx context.Context) error {
	if err := d.c.call(ctx, request{method: http.MethodPost, path: d.path("/clear")}, nil); err != nil {
		return fmt.Errorf("Dict %s: clear: %w", d.ID, err)
	}
	return nil
}

// Entries iterates over the entries, a page per request, in the order of their keys' bytes;
// without withValues only keys are fetched.
func (d *Dict) Entries(ctx context.Context, withValues bool) iter.Seq2[DictEntry, error] {
	return func(yield func(DictEntry, error) bool) {
		after := ""
		for {
			q := url.Values{"limit": {"100"}}
			if !withValues {
				q.Set("values", "0")
			}
			if after != "" {
				q.Set("after", after)
			}
			var page struct {
				Entries []DictEntry `json:"entries"`
				Next    string      `json:"next"`
			}
			if err := d.c.call(ctx, request{method: http.MethodGet, path: d.path("/entries"), query: q}, &page); err != nil {
				yield(DictEntry{}, fmt.Errorf("Dict %s: entries: %w", d.ID, err))
				return
			}
			for _, e := range page.Entries {
				if !yield(e, nil) {
					return
				}
			}
			if page.Next == "" {
				return
			}
			after = page.Next
		}
	}
}

// CreateQueue makes a named Queue; an existing name is an error satisfying
// errors.Is(err, ErrConflict) unless allowExisting.
func (c *Client) CreateQueue(ctx context.Context, name string, allowExisting bool) (*Queue, error) {
	q := &Queue{}
	if err := c.kvCreate(ctx, "queues", map[string]any{"name": name, "allow_existing": allowExisting}, q); err != nil {
		return nil, fmt.Errorf("create Queue %q: %w", name, err)
	}
	q.c = c
	return q, nil
}

// EphemeralQueue makes an anonymous Queue that lives until Close.
func (c *Client) EphemeralQueue(ctx context.Context) (*Queue, error) {
	q := &Queue{}
	if err := c.kvCreate(ctx, "queues", map[string]any{"ephemeral": true}, q); err != nil {
		return nil, fmt.Errorf("create an ephemeral Queue: %w", err)
	}
	q.c = c
	q.beat(q.path(""))
	return q, nil
}

// QueueFromName looks up a named Queue (Modal's Queue.from_name), creating it if createIfMissing.
func (c *Client) QueueFromName(ctx context.Context, name string, createIfMissing bool) (*Queue, error) {
	q := &Queue{}
	body := map[string]any{"name": name, "create_if_missing": createIfMissing}
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/queues/lookup", json: body}, q); err != nil {
		return nil, fmt.Errorf("look up Queue %q: %w", name, err)
	}
	q.c = c
	return q, nil
}

// QueueFromID returns a Queue by its ID.
func (c *Client) QueueFromID(ctx context.Context, id string) (*Queue, error) {
	q := &Queue{}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/queues/" + pathEscape(id)}, q); err != nil {
		return nil, fmt.Errorf("get Queue %s: %w", id, err)
	}
	q.c = c
	return q, nil
}

// ListQueues returns the named Queues, newest first, with their partitions and items.
func (c *Client) ListQueues(ctx context.Context, o ObjectListOptions) ([]*Queue, error) {
	var out struct {
		Queues []*Queue `json:"queues"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/queues", query: o.query()}, &out); err != nil {
		return nil, fmt.Errorf("list Queues: %w", err)
	}
	for _, q := range out.Queues {
		q.c = c
	}
	return out.Queues, nil
}

// DeleteQueue deletes a named Queue and its items; a missing one is an error satisfying
// errors.Is(err, ErrNotFound) unless allowMissing.
func (c *Client) DeleteQueue(ctx context.Context, name string, allowMissing bool) error {
	q, err := c.QueueFromName(ctx, name, false)
	if err != nil {
		if allowMissing && errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	return q.Delete(ctx)
}

func (q *Queue) path(suffix string) string { return "/v1/queues/" + pathEscape(q.ID) + suffix }

// Delete deletes the Queue and its items.
func (q *Queue) Delete(ctx context.Context) error {
	if err := q.close(ctx, q.path("")); err != nil {
		return fmt.Errorf("delete Queue %s: %w", q.ID, err)
	}
	return nil
}

// Close deletes an ephemeral Queue (and stops its heartbeat).
func (q *Queue) Close(ctx context.Context) error { return q.Delete(ctx) }

// maxWait is the longest one request waits; longer waits ask again.
const maxWait = 50 * time.Second

// QueuePutOptions are the options of Queue.Put, as Modal's put(block, timeout, partition,
// partition_ttl).
type QueuePutOptions struct {
	Partition    string        // "" is the default partition
	PartitionTTL time.Duration // 0: 24 hours, the most
	NoBlock      bool          // a full partition fails at once
	Timeout      time.Duration // how long a blocking put waits for room (0: without end)
}

// Put appends values to a partition. A full partition (5,000 items) gives an error satisfying
// errors.Is(err, ErrResourceExhausted) once the wait for room ends (at once with NoBlock).
func (q *Queue) Put(ctx context.Context, values [][]byte, o QueuePutOptions) error {
	var deadline time.Time
	if o.Timeout > 0 {
		deadline = time.Now().Add(o.Timeout)
	}
	for {
		wait := time.Duration(0)
		if !o.NoBlock {
			wait = maxWait
			if !deadline.IsZero() {
				wait = max(0, min(maxWait, time.Until(deadline)))
			}
		}
		body := map[string]any{"values": values, "partition": o.Partition, "timeout": wait.Seconds()}
		if o.PartitionTTL > 0 {
			body["partition_ttl"] = o.PartitionTTL.Seconds()
		}
		err := q.c.call(ctx, request{method: http.MethodPost, path: q.path("/put"), json: body}, nil)
		if err == nil {
			return nil
		}
		// Only a full partition is waited out; a quota or a rate limit is returned.
		var ae *APIError
		if !errors.As(err, &ae) || ae.Kind != KindResourceExhausted || o.NoBlock || !deadline.IsZero() && !time.Now().Before(deadline) {
			return fmt.Errorf("Queue %s: put: %w", q.ID, err)
		}
	}
}

// QueueGetOptions are the options of Queue.Get, as Modal's get(block, timeout, partition).
type QueueGetOptions struct {
	Partition string
	NoBlock   bool          // an empty partition answers no items at once
	Timeout   time.Duration // how long a blocking get waits (0: without end); then ErrQueueEmpty
}

// Get takes up to n items from the front of a partition. Blocking (the default), it waits
// for at least one: the server answers as soon as a put commits.
func (q *Queue) Get(ctx context.Context, n int, o QueueGetOptions) ([][]byte, error) {
	var deadline time.Time
	if o.Timeout > 0 {
		deadline = time.Now().Add(o.Timeout)
	}
	for {
		wait := time.Duration(0)
		if !o.NoBlock {
			wait = maxWait
			if !deadline.IsZero() {
				wait = max(0, min(maxWait, time.Until(deadline)))
			}
		}
		var out struct {
			Values [][]byte `json:"values"`
		}
		body := map[string]any{"partition": o.Partition, "n_values": n, "timeout": wait.Seconds()}
		if err := q.c.call(ctx, request{method: http.MethodPost, path: q.path("/get"), json: body}, &out); err != nil {
			return nil, fmt.Errorf("Queue %s: get: %w", q.ID, err)
		}
		if len(out.Values) > 0 || o.NoBlock {
			return out.Values, nil
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return nil, ErrQueueEmpty
		}
	}
}

// Len counts the items of a partition, or of every partition with total (at most 100,000).
func (q *Queue) Len(ctx context.Context, partition string, total bool) (int, error) {
	var out struct {
		Len int `json:"len"`
	}
	query := url.Values{"partition": {partition}}
	if total {
		query.Set("total", "1")
	}
	if err := q.c.call(ctx, request{method: http.MethodGet, path: q.path("/len"), query: query}, &out); err != nil {
		return 0, fmt.Errorf("Queue %s: len: %w", q.ID, err)
	}
	return out.Len, nil
}

// Clear empties a partition, or every partition with all.
func (q *Queue) Clear(ctx context.Context, partition string, all bool) error {
	if err := q.c.call(ctx, request{method: http.MethodPost, path: q.path("/clear"), json: map[string]any{"partition": partition, "all": all}}, nil); err != nil {
		return fmt.Errorf("Queue %s: clear: %w", q.ID, err)
	}
	return nil
}

// Items reads, without taking them, up to a page of a partition's items after the item after
// ("": from the front), waiting up to wait for one when there are none (Modal's iterate).
func (q *Queue) Items(ctx context.Context, partition, after string, wait time.Duration) ([]QueueItem, error) {
	var out struct {
		Items []QueueItem `json:"items"`
	}
	query := url.Values{"partition": {partition}, "after": {after}, "timeout": {strconv.FormatFloat(wait.Seconds(), 'f', -1, 64)}}
	if err := q.c.call(ctx, request{method: http.MethodGet, path: q.path("/items"), query: query}, &out); err != nil {
		return nil, fmt.Errorf("Queue %s: items: %w", q.ID, err)
	}
	return out.Items, nil
}
