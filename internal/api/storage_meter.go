package api

import (
	"context"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/metering"
)

// The storage half of the usage ledger: what workspaces keep stored is read every period and
// recorded as GiB-seconds per object (metering.StorageRecords), priced per storage class.
// gust reads two classes itself: the uploads each workspace's images keep (add_local files,
// function code: blob_owners) and its Dicts' and Queues' contents. Volumes add theirs with
// MeterStorage.

// StorageSource lists stored objects and their sizes now. It is called once a period, from
// one goroutine; an error skips its objects for that period (they are not billed then).
type StorageSource func(ctx context.Context) ([]metering.StorageObject, error)

// storageMeter holds the sources.
type storageMeter struct {
	mu      sync.Mutex
	sources []StorageSource
}

// MeterStorage adds a source of stored objects to the ledger; it may be called at any time,
// and meters from the next period on. The volumes feature registers one that lists each
// volume (ID, workspace, metering.StorageVolume, name, bytes, created time as Since).
func (a *API) MeterStorage(src StorageSource) {
	a.storage.mu.Lock()
	a.storage.sources = append(a.storage.sources, src)
	a.storage.mu.Unlock()
}

// RunStorageMeter reads every source at each multiple of period (on the Unix clock, so that
// slots have the same bounds across restarts and servers) and records what they hold, until
// ctx ends.
func (a *API) RunStorageMeter(ctx context.Context, period time.Duration) {
	for {
		now := time.Now()
		next := now.Truncate(period).Add(period)
		select {
		case <-ctx.Done():
			return
		case <-time.After(next.Sub(now)):
		}
		a.meterStorage(ctx, metering.StorageSlot(next, period), period)
	}
}

// meterStorage records slot k of every source's objects.
func (a *API) meterStorage(ctx context.Context, k int64, period time.Duration) {
	a.storage.mu.Lock()
	sources := append([]StorageSource{a.storedBytes}, a.storage.sources...)
	a.storage.mu.Unlock()
	var objs []metering.StorageObject
	for _, src := range sources {
		o, err := src(ctx)
		if err != nil {
			a.log.Printf("storage metering: %v (not billed this period)", err)
			continue
		}
		objs = append(objs, o...)
	}
	recs := metering.StorageRecords(objs, k, period)
	fresh, err := a.store.RecordUsage(ctx, recs)
	if err != nil {
		a.log.Printf("storage metering: %v", err)
		return
	}
	a.meters.recorded(fresh, len(recs), 0, a.cfg.Prices, time.Now())
}

// storedBytes is gust's own source: each workspace's image uploads and Dict/Queue contents.
func (a *API) storedBytes(ctx context.Context) ([]metering.StorageObject, error) {
	byClass, err := a.store.StoredBytes(ctx)
	if err != nil {
		return nil, err
	}
	names := map[string]string{metering.StorageImage: "image uploads", metering.StorageDictQueu: "Dicts and Queues"}
	var out []metering.StorageObject
	for class, byWS := range byClass {
		for ws, n := range byWS {
			out = append(out, metering.StorageObject{ID: ws + "/" + class, WorkspaceID: ws, Class: class, Name: names[class], Bytes: n})
		}
	}
	return out, nil
}
