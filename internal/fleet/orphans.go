package fleet

import (
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

// StopOrphan asks worker workerID to stop container id, whose record has already ended with
// status (a server that restarted marked it failed, while its worker kept it running): a
// container nobody can reach any more must not run, and bill, on. It reports whether the
// worker is connected to be asked.
func (f *Fleet) StopOrphan(workerID, id string, status sandbox.Status) bool {
	f.mu.Lock()
	wc := f.workers[workerID]
	f.mu.Unlock()
	if wc == nil {
		return false
	}
	f.assign(wc, workerproto.Assignment{Op: workerproto.OpTerminate, ContainerID: id, EndStatus: status,
		Reason: "its record had ended (the server restarted while it ran)"})
	return true
}
