package workerproto

import (
	"context"
	"errors"
	"net/http"

	"github.com/gust-run/gust/internal/metering"
)

// UsageReport is a batch of usage intervals a worker measured (POST /v1/workers/{wid}/usage).
// The server records each (container, seq) once, so a batch may be sent again safely.
type UsageReport struct {
	Intervals []metering.Interval `json:"intervals"`
}

// MaxUsageBatch bounds the intervals in one report.
const MaxUsageBatch = 1000

// SendUsage reports usage intervals.
func (c *ServerClient) SendUsage(ctx context.Context, ivs []metering.Interval) error {
	if c.WorkerID() == "" {
		return errors.New("not registered yet")
	}
	return c.api.Do(ctx, http.MethodPost, "/v1/workers/"+c.WorkerID()+"/usage", UsageReport{Intervals: ivs}, nil)
}
