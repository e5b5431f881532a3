package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/workerproto"
)

func (s *Server) handleWorkerRegister(w http.ResponseWriter, r *http.Request) {
	var req workerproto.RegisterRequest
	if err := httpapi.DecodeJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	proxy, err := newProxy(req.Addr, s.cfg.Token)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	s.mu.Lock()
	if wc := s.workers[req.WorkerID]; wc != nil && req.WorkerID != "" {
		// Back after a blip: same worker, same sandboxes.
		wc.reg, wc.proxy, wc.lastPoll = req, proxy, time.Now()
		s.mu.Unlock()
		httpapi.WriteJSON(w, http.StatusOK, workerproto.RegisterResponse{WorkerID: wc.id})
		return
	}
	s.mu.Unlock()
	wc := &workerConn{id: ids.New(ids.Worker), reg: req, proxy: proxy, wake: make(chan struct{}), lastPoll: time.Now()}
	var gone []*workerConn
	s.mu.Lock()
	// A worker registering again under its name has restarted: what ran on it before is gone.
	for id, old := range s.workers {
		if old.reg.Name == req.Name {
			delete(s.workers, id)
			gone = append(gone, old)
		}
	}
	s.workers[wc.id] = wc
	s.mu.Unlock()
	for _, old := range gone {
		s.workerLost(old, "its worker restarted")
	}
	s.log.Printf("worker %s registered (%s at %s, %v cpu, %d MiB, runtimes %v)", wc.id, req.Name, req.Addr, req.CPU, req.MemoryMiB, req.Isolation)
	httpapi.WriteJSON(w, http.StatusOK, workerproto.RegisterResponse{WorkerID: wc.id})
}

func (s *Server) worker(id string) (*workerConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	wc := s.workers[id]
	if wc == nil {
		return nil, errdefs.NotFound("worker %s is not registered; register again", id)
	}
	return wc, nil
}

func (s *Server) handleWorkerAssignments(w http.ResponseWriter, r *http.Request) {
	wc, err := s.worker(r.PathValue("wid"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	wait, _ := strconv.ParseFloat(r.URL.Query().Get("wait"), 64)
	timeout := time.NewTimer(time.Duration(min(max(wait, 0), 60) * float64(time.Second)))
	defer timeout.Stop()
	s.mu.Lock()
	wc.polling++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		wc.polling--
		wc.lastPoll = time.Now()
		s.mu.Unlock()
	}()
	for {
		s.mu.Lock()
		q := wc.queue
		wc.queue = nil
		wake := wc.wake
		s.mu.Unlock()
		if len(q) > 0 {
			httpapi.WriteJSON(w, http.StatusOK, workerproto.Assignments{Assignments: q})
			return
		}
		select {
		case <-wake:
		case <-timeout.C:
			httpapi.WriteJSON(w, http.StatusOK, workerproto.Assignments{Assignments: []workerproto.Assignment{}})
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (s *Server) handleWorkerState(w http.ResponseWriter, r *http.Request) {
	if _, err := s.worker(r.PathValue("wid")); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	var st workerproto.StateReport
	if err := httpapi.DecodeJSON(r, &st, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if _, err := s.setState(r.Context(), r.PathValue("id"), st); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// workerTimeout is how long a worker may go without polling for assignments before the server
// gives up on it and on everything it ran.
const workerTimeout = 60 * time.Second

// expireWorkers drops workers that stopped polling (killed, or their machine gone).
func (s *Server) expireWorkers() {
	var gone []*workerConn
	s.mu.Lock()
	for id, wc := range s.workers {
		if wc.polling == 0 && time.Since(wc.lastPoll) > workerTimeout {
			delete(s.workers, id)
			gone = append(gone, wc)
		}
	}
	s.mu.Unlock()
	for _, wc := range gone {
		s.workerLost(wc, fmt.Sprintf("its worker stopped answering for %v", workerTimeout))
	}
}

// workerLost ends what a worker ran: its sandboxes fail, and its function containers' inputs
// are queued again without counting an attempt (they did not fail; their machine did).
func (s *Server) workerLost(wc *workerConn, why string) {
	s.log.Printf("worker %s (%s) is gone: %s", wc.id, wc.reg.Name, why)
	ctx := context.Background()
	sbs, err := s.store.ListSandboxes(ctx, store.SandboxFilter{Functions: true})
	if err != nil {
		s.log.Printf("listing the sandboxes of worker %s: %v", wc.id, err)
		return
	}
	code := sandbox.ExitTerminated
	for _, sb := range sbs {
		if sb.WorkerID != wc.id {
			continue
		}
		if sb.FunctionID != "" {
			s.fx.requeueContainer(sb.ID)
		}
		if _, err := s.setState(ctx, sb.ID, workerproto.StateReport{Status: sandbox.Failed, ExitCode: &code, Error: strPtr(why)}); err != nil {
			s.log.Printf("sandbox %s: %v", sb.ID, err)
		}
	}
}
