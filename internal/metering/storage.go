package metering

import (
	"math"
	"time"
)

// Storage is metered like a container, by size instead of cores: a stored object (a volume, a
// workspace's image uploads, its Dicts and Queues) is read every period, and each reading
// records the interval since the previous slot at the size read. Slots sit on a fixed grid
// (multiples of the period since the Unix epoch) and a slot's number is its sequence, so that
// an object's slot is recorded once however often it is read (two servers, a restart), and a
// slot the server was down for is not billed rather than guessed.

// KindStorage marks a storage record: its ContainerID is the object's ID, its AppName the
// object's name.
const KindStorage = "storage"

// Storage classes gust meters itself; the volumes feature adds StorageVolume objects.
const (
	StorageVolume   = "volume"
	StorageImage    = "image"      // a workspace's uploads kept for its images (add_local, code)
	StorageDictQueu = "dict_queue" // a workspace's Dict and Queue contents
)

// StorageObject is one stored object's size at a reading.
type StorageObject struct {
	// ID names it uniquely across the ledger (a volume's ID; "ws-…/images" for a
	// workspace's uploads).
	ID          string
	WorkspaceID string
	Class       string
	Name        string
	// AppID and Tags, when it has them, let reports and budgets attribute it like a container.
	AppID string
	Tags  map[string]string
	Bytes int64
	// Since is when it began to exist, if in the slot being read (zero: before it).
	Since time.Time
}

// StorageSlot is the number of the grid slot that ends at or before t: slot k covers
// [(k-1)·period, k·period).
func StorageSlot(t time.Time, period time.Duration) int64 {
	return t.UnixNano() / int64(period)
}

// StorageRecords are the records of a reading taken in the slot that ends at k·period: each
// object's size × the part of the slot it existed.
func StorageRecords(objs []StorageObject, k int64, period time.Duration) []Record {
	end := time.Unix(0, k*int64(period)).UTC()
	from := end.Add(-period)
	out := make([]Record, 0, len(objs))
	for _, o := range objs {
		start := from
		if o.Since.After(start) {
			start = o.Since.UTC()
		}
		if !end.After(start) || o.Bytes <= 0 || o.ID == "" {
			continue
		}
		iv := Interval{ContainerID: o.ID, Seq: k, Start: start, End: end, StorageClass: o.Class, StorageBytes: o.Bytes,
			StorageGiBSeconds: float64(o.Bytes) / GiB * end.Sub(start).Seconds()}
		out = append(out, Record{Interval: iv, WorkspaceID: o.WorkspaceID, Kind: KindStorage, AppID: o.AppID, AppName: o.Name, Tags: o.Tags})
	}
	return out
}

// StorageResource names a storage class in a cost breakdown: "storage:volume".
func StorageResource(class string) string { return "storage:" + class }

// StorageRate is the price of a GiB of a storage class for a second; a class the table lacks
// costs as the dearest listed one.
func (p Prices) StorageRate(class string) float64 {
	if r, ok := p.StoragePerGiBSecond[class]; ok {
		return r
	}
	dear := 0.0
	for _, r := range p.StoragePerGiBSecond {
		dear = math.Max(dear, r)
	}
	return dear
}
