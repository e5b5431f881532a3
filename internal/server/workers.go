package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/sandbox"
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
	wc := &workerConn{id: sandbox.NewID("wk"), reg: req, proxy: proxy, wake: make(chan struct{})}
	s.mu.Lock()
	s.workers[wc.id] = wc
	s.mu.Unlock()
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
