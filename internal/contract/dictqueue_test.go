package contract

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

// dictQueueSteps drives the Go SDK's Dicts and Queues against the real handler and store.
func dictQueueSteps(ctx context.Context, t *testing.T, c *gust.Client) {
	d, err := c.CreateDict(ctx, "kv", false)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(d.ID, "di-") || d.Name != "kv" || d.CreatedAt.IsZero() {
		t.Fatalf("created Dict %+v", d)
	}
	if _, err := c.CreateDict(ctx, "kv", false); !errors.Is(err, gust.ErrConflict) {
		t.Fatalf("creating it again: %v, want the SDK's conflict", err)
	}
	if _, err := c.DictFromName(ctx, "nope", false); !errors.Is(err, gust.ErrNotFound) {
		t.Fatalf("a missing Dict: %v, want the SDK's not found", err)
	}
	k, v := gust.PickleString("k"), gust.PickleString("v")
	if created, err := d.Put(ctx, k, v, false); err != nil || !created {
		t.Fatalf("put: %v %v", created, err)
	}
	if created, err := d.Put(ctx, k, gust.PickleString("w"), true); err != nil || created {
		t.Fatalf("put with skipIfExists: %v %v", created, err)
	}
	if got, found, err := d.Get(ctx, k); err != nil || !found || string(got) != string(v) {
		t.Fatalf("get: %q %v %v", got, found, err)
	}
	if ok, err := d.Contains(ctx, gust.PickleString("other")); err != nil || ok {
		t.Fatalf("contains a missing key: %v %v", ok, err)
	}
	if err := d.Update(ctx, []gust.DictEntry{{Key: gust.PickleString("a"), Value: v}, {Key: gust.PickleString("b"), Value: v}}); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for e, err := range d.Entries(ctx, false) {
		if err != nil {
			t.Fatal(err)
		}
		s, _ := gust.Unpickle(e.Key)
		keys = append(keys, s.(string))
	}
	if !slices.Equal(keys, []string{"a", "b", "k"}) {
		t.Fatalf("keys: %q", keys)
	}
	if got, found, err := d.Pop(ctx, k); err != nil || !found || string(got) != string(v) {
		t.Fatalf("pop: %q %v %v", got, found, err)
	}
	if n, err := d.Len(ctx); err != nil || n != 2 {
		t.Fatalf("len: %d %v", n, err)
	}
	if ds, err := c.ListDicts(ctx, gust.ObjectListOptions{}); err != nil || len(ds) != 1 || ds[0].ID != d.ID {
		t.Fatalf("list: %v %v", ds, err)
	}
	if err := c.DeleteDict(ctx, "kv", false); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteDict(ctx, "kv", true); err != nil {
		t.Fatalf("delete with allowMissing: %v", err)
	}

	q, err := c.EphemeralQueue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close(context.Background())
	got := make(chan [][]byte, 1)
	go func() {
		vals, err := q.Get(ctx, 5, gust.QueueGetOptions{Timeout: 10 * time.Second})
		if err != nil {
			t.Error(err)
		}
		got <- vals
	}()
	time.Sleep(50 * time.Millisecond)
	if err := q.Put(ctx, [][]byte{v, v}, gust.QueuePutOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case vals := <-got:
		if len(vals) != 2 {
			t.Fatalf("blocked get: %d values", len(vals))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a blocked get was not woken by the put")
	}
	if _, err := q.Get(ctx, 1, gust.QueueGetOptions{Timeout: 50 * time.Millisecond}); !errors.Is(err, gust.ErrQueueEmpty) {
		t.Fatalf("get with a timeout from an empty queue: %v", err)
	}
	if vals, err := q.Get(ctx, 1, gust.QueueGetOptions{NoBlock: true}); err != nil || len(vals) != 0 {
		t.Fatalf("non-blocking get: %v %v", vals, err)
	}
	full := make([][]byte, 5000)
	for i := range full {
		full[i] = v
	}
	if err := q.Put(ctx, full, gust.QueuePutOptions{Partition: "p"}); err != nil {
		t.Fatal(err)
	}
	if err := q.Put(ctx, [][]byte{v}, gust.QueuePutOptions{Partition: "p", NoBlock: true}); !errors.Is(err, gust.ErrResourceExhausted) {
		t.Fatalf("put into a full partition: %v, want the SDK's resource exhausted", err)
	}
	if err := q.Put(ctx, [][]byte{make([]byte, 1<<20+1)}, gust.QueuePutOptions{}); !errors.Is(err, gust.ErrTooLarge) {
		t.Fatalf("an item over 1 MiB: %v, want the SDK's too large", err)
	}
	if items, err := q.Items(ctx, "p", "", 0); err != nil || len(items) != 100 {
		t.Fatalf("items: %d %v", len(items), err)
	}
	if n, err := q.Len(ctx, "", true); err != nil || n != 5000 {
		t.Fatalf("len total: %d %v", n, err)
	}
	if err := q.Clear(ctx, "", true); err != nil {
		t.Fatal(err)
	}
	if n, _ := q.Len(ctx, "p", false); n != 0 {
		t.Fatalf("len after clear: %d", n)
	}
	named, err := c.QueueFromName(ctx, "jobs", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := named.Put(ctx, [][]byte{v}, gust.QueuePutOptions{Partition: "x"}); err != nil {
		t.Fatal(err)
	}
	qs, err := c.ListQueues(ctx, gust.ObjectListOptions{})
	if err != nil || len(qs) != 1 || qs[0].Name != "jobs" || qs[0].Partitions != 1 || qs[0].TotalSize != 1 {
		t.Fatalf("list Queues: %+v %v", qs, err)
	}
	if err := c.DeleteQueue(ctx, "jobs", false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.QueueFromID(ctx, named.ID); !errors.Is(err, gust.ErrNotFound) {
		t.Fatalf("a deleted Queue: %v", err)
	}
}
