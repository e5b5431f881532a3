package autoscaler

import (
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	now := time.Unix(1000, 0)
	idle := func(id string, ago time.Duration) Container { return Container{ID: id, IdleSince: now.Add(-ago)} }
	busy := func(id string, n int) Container { return Container{ID: id, Inflight: n} }
	win := 60 * time.Second
	tests := []struct {
		name  string
		cfg   Config
		st    State
		start int
		stop  []string
	}{
		{"zero stays zero", Config{Target: 1, ScaledownWindow: win}, State{}, 0, nil},
		{"first input scales from zero", Config{Target: 1, ScaledownWindow: win}, State{Queued: 1}, 1, nil},
		{"queue grows", Config{Target: 1, ScaledownWindow: win}, State{Queued: 5, Containers: []Container{busy("a", 1)}}, 5, nil},
		{"capped by max", Config{Max: 3, Target: 1, ScaledownWindow: win}, State{Queued: 50, Containers: []Container{busy("a", 1)}}, 2, nil},
		{"concurrency packs inputs", Config{Target: 4, ScaledownWindow: win}, State{Queued: 9}, 3, nil},
		{"buffer while active", Config{Buffer: 2, Target: 1, ScaledownWindow: win}, State{Queued: 1}, 3, nil},
		{"no buffer when idle", Config{Buffer: 2, Target: 1, ScaledownWindow: win}, State{Containers: []Container{idle("a", 2*win)}}, 0, []string{"a"}},
		{"min containers warm", Config{Min: 2, Target: 1, ScaledownWindow: win}, State{}, 2, nil},
		{"min containers kept", Config{Min: 1, Target: 1, ScaledownWindow: win}, State{Containers: []Container{idle("a", time.Hour), idle("b", 2*time.Hour)}}, 0, []string{"b"}},
		{"not before the window", Config{Target: 1, ScaledownWindow: win}, State{Containers: []Container{idle("a", win/2)}}, 0, nil},
		{"busy containers stay", Config{Target: 1, ScaledownWindow: win}, State{Containers: []Container{busy("a", 1), idle("b", time.Hour)}}, 0, []string{"b"}},
		{"quick inputs need few containers", Config{Target: 1, ScaledownWindow: win, AvgRun: time.Millisecond}, State{Queued: 10000}, 10, nil},
		{"slow inputs need many", Config{Max: 10, Target: 1, ScaledownWindow: win, AvgRun: time.Second}, State{Queued: 100}, 10, nil},
		{"starting containers count", Config{Target: 1, ScaledownWindow: win}, State{Queued: 2, Containers: []Container{{ID: "s", Starting: true}}}, 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.st.Now = now
			d := Decide(tt.cfg, tt.st)
			if d.Start != tt.start || len(d.Stop) != len(tt.stop) {
				t.Fatalf("got start %d stop %v (%s), want start %d stop %v", d.Start, d.Stop, d.Reason, tt.start, tt.stop)
			}
			for i := range tt.stop {
				if d.Stop[i] != tt.stop[i] {
					t.Fatalf("stop %v, want %v", d.Stop, tt.stop)
				}
			}
			if d.Reason == "" {
				t.Fatal("no reason given")
			}
		})
	}
}
