// Package wire holds the JSON encodings that records at several boundaries share. Go code
// works with time.Duration; the API, the SDKs and the store speak seconds as numbers, and
// Duration is the one place that converts. It imports nothing of gust's.
package wire

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Duration is a time.Duration that is a number of seconds in JSON (1.5 is 1500 ms).
type Duration time.Duration

// Seconds makes a Duration from seconds.
func Seconds(s float64) Duration { return Duration(s * float64(time.Second)) }

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Seconds returns the duration in seconds.
func (d Duration) Seconds() float64 { return time.Duration(d).Seconds() }

// String prints seconds as users wrote them ("300", "1.5").
func (d Duration) String() string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }

// MarshalJSON writes seconds.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.FormatFloat(d.Seconds(), 'f', -1, 64)), nil
}

// UnmarshalJSON reads seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s float64
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration must be a number of seconds, got %s", b)
	}
	if math.IsNaN(s) || math.IsInf(s, 0) || math.Abs(s) > float64(math.MaxInt64)/float64(time.Second) {
		return fmt.Errorf("a duration of %v seconds is out of range", s)
	}
	*d = Seconds(s)
	return nil
}
