package fleet

// WorkerStat is one worker's capacity and use, for the operator's metrics.
type WorkerStat struct {
	ID, Name    string
	CPU         float64
	MemoryMiB   int
	GPUs        int
	GPUsInUse   int
	Containers  int
	ReservedMiB int
}

// WorkerStats returns the registered workers' capacity and use.
func (f *Fleet) WorkerStats() []WorkerStat {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]WorkerStat, 0, len(f.workers))
	for _, wc := range f.workers {
		out = append(out, WorkerStat{ID: wc.id, Name: wc.reg.Name, CPU: wc.reg.CPU, MemoryMiB: wc.reg.MemoryMiB, GPUs: len(wc.reg.GPUs),
			GPUsInUse: len(wc.gpuHolder), Containers: wc.running, ReservedMiB: wc.reservedMiB})
	}
	return out
}
