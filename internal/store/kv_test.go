package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
)

func TestDictObjects(t *testing.T) {
	st, ctx := open(t), context.Background()
	if _, err := st.LookupDict(ctx, "ws-a", "d", "", false); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("lookup of a missing Dict: want not found, got %v", err)
	}
	d, err := st.LookupDict(ctx, "ws-a", "d", "tk-1", true)
	if err != nil {
		t.Fatal(err)
	}
	again, err := st.LookupDict(ctx, "ws-a", "d", "", true)
	if err != nil || again.ID != d.ID {
		t.Fatalf("second lookup: %v, %s != %s", err, again.ID, d.ID)
	}
	if _, err := st.CreateDict(ctx, "ws-a", "d", "", false); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("create of an existing name: want conflict, got %v", err)
	}
	if o, err := st.CreateDict(ctx, "ws-a", "d", "", true); err != nil || o.ID != d.ID {
		t.Fatalf("create with allow_existing: %v %v", o, err)
	}
	// Another workspace: its own namespace, and the first one's Dict is not found by ID.
	other, err := st.LookupDict(ctx, "ws-b", "d", "", true)
	if err != nil || other.ID == d.ID {
		t.Fatalf("same name in another workspace: %v %v", other, err)
	}
	if _, err := st.GetDict(ctx, "ws-b", d.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("another workspace's Dict by ID: want not found, got %v", err)
	}
	if _, err := st.DictUpdate(ctx, "ws-b", d.ID, []DictEntry{{Key: []byte("k"), Value: []byte("v")}}, false, 0); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("write into another workspace's Dict: want not found, got %v", err)
	}
	for _, bad := range []string{"", "a b", "x/y", "ap-0123456789012345678901", string(make([]byte, 65))} {
		if _, err := st.LookupDict(ctx, "ws-a", bad, "", true); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("name %q: want invalid, got %v", bad, err)
		}
	}
	eph, err := st.CreateDict(ctx, "ws-a", "", "", false)
	if err != nil || !eph.Ephemeral {
		t.Fatalf("ephemeral: %v %v", eph, err)
	}
	list, err := st.ListDicts(ctx, "ws-a", 0, time.Time{})
	if err != nil || len(list) != 1 || list[0].Name != "d" {
		t.Fatalf("list: want only the named Dict, got %v %v", list, err)
	}
	if err := st.DeleteDict(ctx, "ws-b", d.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("delete from another workspace: want not found, got %v", err)
	}
	if err := st.DeleteDict(ctx, "ws-a", d.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetDict(ctx, "ws-a", d.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("deleted Dict: want not found, got %v", err)
	}
}

func TestDictEntries(t *testing.T) {
	st, ctx := open(t), context.Background()
	d, err := st.LookupDict(ctx, "ws-a", "d", "", true)
	if err != nil {
		t.Fatal(err)
	}
	put := func(k, v string, skip bool) bool {
		t.Helper()
		created, err := st.DictUpdate(ctx, "ws-a", d.ID, []DictEntry{{Key: []byte(k), Value: []byte(v)}}, skip, 0)
		if err != nil {
			t.Fatal(err)
		}
		return created
	}
	get := func(k string) (string, bool) {
		t.Helper()
		v, ok, err := st.DictGet(ctx, "ws-a", d.ID, []byte(k), true)
		if err != nil {
			t.Fatal(err)
		}
		return string(v), ok
	}
	if !put("a", "1", false) || !put("b", "2", false) {
		t.Fatal("a new key must report created")
	}
	if put("a", "x", true) {
		t.Fatal("skip_if_exists on an existing key must report not created")
	}
	if v, _ := get("a"); v != "1" {
		t.Fatalf("skip_if_exists overwrote: %q", v)
	}
	put("a", "3", false)
	if v, ok := get("a"); !ok || v != "3" {
		t.Fatalf("get a: %q %v", v, ok)
	}
	if _, ok := get("zz"); ok {
		t.Fatal("missing key found")
	}
	if _, ok, _ := st.DictGet(ctx, "ws-a", d.ID, []byte("b"), false); !ok {
		t.Fatal("contains b: false")
	}
	if n, err := st.DictLen(ctx, "ws-a", d.ID); err != nil || n != 2 {
		t.Fatalf("len: %d %v", n, err)
	}
	// Pages of items, in key order, never overlapping.
	for i := range 250 {
		put(fmt.Sprintf("k%03d", i), "v", false)
	}
	var seen int
	var after []byte
	for {
		page, err := st.DictEntries(ctx, "ws-a", d.ID, after, 100, true)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if after != nil && bytes.Compare(page[0].Key, after) <= 0 {
			t.Fatal("pages overlap")
		}
		seen += len(page)
		after = page[len(page)-1].Key
	}
	if seen != 252 {
		t.Fatalf("items: saw %d, want 252", seen)
	}
	v, ok, err := st.DictPop(ctx, "ws-a", d.ID, []byte("a"))
	if err != nil || !ok || string(v) != "3" {
		t.Fatalf("pop: %q %v %v", v, ok, err)
	}
	if _, ok, _ := st.DictPop(ctx, "ws-a", d.ID, []byte("a")); ok {
		t.Fatal("pop twice found it")
	}
	if err := st.DictClear(ctx, "ws-a", d.ID); err != nil {
		t.Fatal(err)
	}
	if n, _ := st.DictLen(ctx, "ws-a", d.ID); n != 0 {
		t.Fatalf("len after clear: %d", n)
	}
	if used, _ := st.KVUsage(ctx, "ws-a"); used != 0 {
		t.Fatalf("usage after clear: %d bytes", used)
	}
}

func TestDictExpiryAndQuota(t *testing.T) {
	st, ctx := open(t), context.Background()
	d, _ := st.LookupDict(ctx, "ws-a", "d", "", true)
	if _, err := st.DictUpdate(ctx, "ws-a", d.ID, []DictEntry{{Key: []byte("old"), Value: []byte("v")}, {Key: []byte("new"), Value: []byte("v")}}, false, 0); err != nil {
		t.Fatal(err)
	}
	// Age one entry past the TTL by hand: it reads as missing at once, and the sweep removes it.
	if _, err := st.db.ExecContext(ctx, `UPDATE dict_entries SET touched = ? WHERE key = ?`, time.Now().Add(-DictEntryTTL-time.Minute).UnixNano(), []byte("old")); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := st.DictGet(ctx, "ws-a", d.ID, []byte("old"), true); ok {
		t.Fatal("an entry untouched for 7 days is still there")
	}
	if created, _ := st.DictUpdate(ctx, "ws-a", d.ID, []DictEntry{{Key: []byte("old"), Value: []byte("w")}}, true, 0); !created {
		t.Fatal("skip_if_exists over an expired entry must write it")
	}
	if _, err := st.db.ExecContext(ctx, `UPDATE dict_entries SET touched = ? WHERE key = ?`, time.Now().Add(-DictEntryTTL-time.Minute).UnixNano(), []byte("old")); err != nil {
		t.Fatal(err)
	}
	if n, err := st.ExpireKV(ctx, time.Now()); err != nil || n != 1 {
		t.Fatalf("expire: %d %v", n, err)
	}
	if used, _ := st.KVUsage(ctx, "ws-a"); used != int64(len("new")+len("v")) {
		t.Fatalf("usage after expiry: %d", used)
	}
	// A workspace quota of 1 KiB.
	big := bytes.Repeat([]byte("x"), 600)
	if _, err := st.DictUpdate(ctx, "ws-a", d.ID, []DictEntry{{Key: []byte("b1"), Value: big}}, false, 1024); err != nil {
		t.Fatal(err)
	}
	if _, err := st.DictUpdate(ctx, "ws-a", d.ID, []DictEntry{{Key: []byte("b2"), Value: big}}, false, 1024); !errors.Is(err, errdefs.ErrQuota) {
		t.Fatalf("over quota: want quota_exceeded, got %v", err)
	}
	// Replacing a value with a smaller one is allowed over any quota.
	if _, err := st.DictUpdate(ctx, "ws-a", d.ID, []DictEntry{{Key: []byte("b1"), Value: []byte("s")}}, false, 1); err != nil {
		t.Fatalf("shrinking write refused: %v", err)
	}
}

func TestQueueFIFOAndPartitions(t *testing.T) {
	st, ctx := open(t), context.Background()
	q, err := st.LookupQueue(ctx, "ws-a", "q", "", true)
	if err != nil {
		t.Fatal(err)
	}
	vals := func(s ...string) [][]byte {
		var out [][]byte
		for _, v := range s {
			out = append(out, []byte(v))
		}
		return out
	}
	if err := st.QueuePut(ctx, "ws-a", q.ID, "", vals("1", "2", "3"), 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := st.QueuePut(ctx, "ws-a", q.ID, "p", vals("x"), 10*time.Second, 0, 0); err != nil {
		t.Fatal(err)
	}
	got, err := st.QueueGet(ctx, "ws-a", q.ID, "", 2, 0)
	if err != nil || len(got) != 2 || string(got[0]) != "1" || string(got[1]) != "2" {
		t.Fatalf("get 2: %q %v", got, err)
	}
	if n, _ := st.QueueLen(ctx, "ws-a", q.ID, "", false); n != 1 {
		t.Fatalf("len default: %d", n)
	}
	if n, _ := st.QueueLen(ctx, "ws-a", q.ID, "", true); n != 2 {
		t.Fatalf("len total: %d", n)
	}
	items, err := st.QueueItems(ctx, "ws-a", q.ID, "p", "", 0)
	if err != nil || len(items) != 1 || string(items[0].Value) != "x" {
		t.Fatalf("iterate: %v %v", items, err)
	}
	if more, _ := st.QueueItems(ctx, "ws-a", q.ID, "p", items[0].ID, 0); len(more) != 0 {
		t.Fatalf("iterate after the last: %v", more)
	}
	// The partition's TTL passes: it reads as empty.
	if _, err := st.db.ExecContext(ctx, `UPDATE queue_partitions SET expires = ? WHERE partition = 'p'`, time.Now().Add(-time.Second).UnixNano()); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.QueueGet(ctx, "ws-a", q.ID, "p", 1, 0); len(got) != 0 {
		t.Fatalf("expired partition gave %q", got)
	}
	if err := st.QueueClear(ctx, "ws-a", q.ID, "p", true); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("clear with partition and all: want invalid, got %v", err)
	}
	if err := st.QueueClear(ctx, "ws-a", q.ID, "", true); err != nil {
		t.Fatal(err)
	}
	if n, _ := st.QueueLen(ctx, "ws-a", q.ID, "", true); n != 0 {
		t.Fatalf("len after clear all: %d", n)
	}
	if used, _ := st.KVUsage(ctx, "ws-a"); used != 0 {
		t.Fatalf("usage after clear: %d", used)
	}
	// Limits.
	if err := st.QueuePut(ctx, "ws-a", q.ID, "", [][]byte{make([]byte, QueueMaxItemBytes+1)}, 0, 0, 0); !errors.Is(err, errdefs.ErrTooLarge) {
		t.Fatalf("item over 1 MiB: want too_large, got %v", err)
	}
	if err := st.QueuePut(ctx, "ws-a", q.ID, string(make([]byte, 65)), vals("x"), 0, 0, 0); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("partition key over 64 bytes: want invalid, got %v", err)
	}
	many := make([][]byte, QueueMaxItems)
	for i := range many {
		many[i] = []byte("i")
	}
	if err := st.QueuePut(ctx, "ws-a", q.ID, "", many, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := st.QueuePut(ctx, "ws-a", q.ID, "", vals("one more"), 0, 0, 0); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("put into a full partition: want resource_exhausted, got %v", err)
	}
	// A blocked put gets in once a get makes room.
	done := make(chan error, 1)
	go func() { done <- st.QueuePut(ctx, "ws-a", q.ID, "", vals("late"), 0, 5*time.Second, 0) }()
	time.Sleep(50 * time.Millisecond)
	if _, err := st.QueueGet(ctx, "ws-a", q.ID, "", 1, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("blocked put: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a blocked put was not woken by a get that made room")
	}
	// Another workspace sees none of it.
	if _, err := st.QueueGet(ctx, "ws-b", q.ID, "", 1, 0); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get from another workspace's Queue: want not found, got %v", err)
	}
}

// TestQueueLongPoll checks that a blocked get returns as soon as a put commits (not at the
// end of a poll interval), that it times out empty, that a delete wakes it, and that the
// notifier forgets keys once nobody waits.
func TestQueueLongPoll(t *testing.T) {
	st, ctx := open(t), context.Background()
	q, _ := st.LookupQueue(ctx, "ws-a", "q", "", true)

	start := time.Now()
	got, err := st.QueueGet(ctx, "ws-a", q.ID, "", 1, 150*time.Millisecond)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty get: %q %v", got, err)
	}
	if el := time.Since(start); el < 140*time.Millisecond || el > 2*time.Second {
		t.Fatalf("empty get with a 150 ms wait returned after %v", el)
	}

	var wg sync.WaitGroup
	lat := make(chan time.Duration, 3)
	var putAt time.Time
	var mu sync.Mutex
	for _, part := range []string{"", "", "other"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := st.QueueGet(ctx, "ws-a", q.ID, part, 1, 10*time.Second)
			if err != nil || len(got) != 1 {
				t.Errorf("blocked get in %q: %q %v", part, got, err)
				return
			}
			mu.Lock()
			lat <- time.Since(putAt)
			mu.Unlock()
		}()
	}
	for st.kvWaits.waiting() < 2 {
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	putAt = time.Now()
	mu.Unlock()
	if err := st.QueuePut(ctx, "ws-a", q.ID, "", [][]byte{[]byte("a"), []byte("b")}, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case d := <-lat:
			if d > 500*time.Millisecond {
				t.Errorf("a blocked get returned %v after the put", d)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a blocked get was not woken by the put")
		}
	}
	// The getter of "other" is still blocked: a put elsewhere did not wake it for good.
	select {
	case <-lat:
		t.Fatal("a get of another partition returned")
	case <-time.After(50 * time.Millisecond):
	}
	mu.Lock()
	putAt = time.Now()
	mu.Unlock()
	if err := st.QueuePut(ctx, "ws-a", q.ID, "other", [][]byte{[]byte("c")}, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if n := st.kvWaits.waiting(); n != 0 {
		t.Fatalf("the notifier keeps %d keys with nobody waiting", n)
	}

	// Deleting the Queue ends a blocked get with not found.
	errc := make(chan error, 1)
	go func() {
		_, err := st.QueueGet(ctx, "ws-a", q.ID, "", 1, 10*time.Second)
		errc <- err
	}()
	for st.kvWaits.waiting() < 1 {
		time.Sleep(time.Millisecond)
	}
	if err := st.DeleteQueue(ctx, "ws-a", q.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("get on a deleted Queue: want not found, got %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("deleting the Queue did not wake its blocked get")
	}
}

func TestEphemeralExpiry(t *testing.T) {
	st, ctx := open(t), context.Background()
	d, _ := st.CreateDict(ctx, "ws-a", "", "", false)
	q, _ := st.CreateQueue(ctx, "ws-a", "", "", false)
	named, _ := st.LookupQueue(ctx, "ws-a", "kept", "", true)
	if _, err := st.ExpireKV(ctx, time.Now().Add(EphemeralTTL/2)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetDict(ctx, "ws-a", d.ID); err != nil {
		t.Fatalf("ephemeral Dict gone before its TTL: %v", err)
	}
	if err := st.HeartbeatQueue(ctx, "ws-a", q.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ExpireKV(ctx, time.Now().Add(EphemeralTTL+time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetDict(ctx, "ws-a", d.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("ephemeral Dict without heartbeats: want gone, got %v", err)
	}
	if _, err := st.GetQueue(ctx, "ws-a", q.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("ephemeral Queue without heartbeats: want gone, got %v", err)
	}
	if _, err := st.GetQueue(ctx, "ws-a", named.ID); err != nil {
		t.Fatalf("a named Queue must not expire: %v", err)
	}
}

// TestQueuePagesBounded: a get of many large items answers at most about 16 MiB; the rest
// stays for the next get, in order.
func TestQueuePagesBounded(t *testing.T) {
	st, ctx := open(t), context.Background()
	q, _ := st.LookupQueue(ctx, "ws-a", "q", "", true)
	var vals [][]byte
	for i := range 20 {
		v := bytes.Repeat([]byte{byte(i)}, QueueMaxItemBytes)
		vals = append(vals, v)
	}
	if err := st.QueuePut(ctx, "ws-a", q.ID, "", vals, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	items, err := st.QueueItems(ctx, "ws-a", q.ID, "", "", 0)
	if err != nil || len(items) != 16 {
		t.Fatalf("iterate: %d items, %v; want 16 (16 MiB)", len(items), err)
	}
	first, err := st.QueueGet(ctx, "ws-a", q.ID, "", 20, 0)
	if err != nil || len(first) != 16 {
		t.Fatalf("get 20: %d items, %v; want 16", len(first), err)
	}
	rest, err := st.QueueGet(ctx, "ws-a", q.ID, "", 20, 0)
	if err != nil || len(rest) != 4 || rest[0][0] != 16 {
		t.Fatalf("next get: %d items, %v", len(rest), err)
	}
}
