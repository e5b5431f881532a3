// Package initproto is the wire protocol between the worker and gust-init, the PID 1 of every
// container. It runs over the container's stdio pipes (worker → init on init's stdin, init →
// worker on init's stdout), because those work the same under runc and gVisor, where a host unix
// socket would not.
//
// Every message is a frame: a 9-byte header (type uint8, channel uint32 big-endian, payload
// length uint32 big-endian) then the payload. A channel names one exec or one file request; the
// worker chooses channel numbers, and channel 0 is the init process itself.
//
// Imported on the worker's side by internal/container (which speaks it) and internal/worker (which
// passes its requests and results on), and on init's side by internal/containerinit. Nothing else.
package initproto

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"sync"
)

// Type says what a frame carries.
type Type uint8

// Frames from the worker to init.
const (
	ExecStart  Type = 1 // payload: JSON ExecRequest
	Stdin      Type = 2 // payload: raw bytes for the exec's stdin
	StdinClose Type = 3 // no payload: close the exec's stdin
	Signal     Type = 4 // payload: JSON SignalRequest
	Resize     Type = 5 // payload: JSON ResizeRequest
	FileOp     Type = 6 // payload: Pack(FileRequest, data)
	Credit     Type = 7 // payload: uint32 big-endian, bytes of the exec's output the worker is done with
)

// Frames from init to the worker.
const (
	Ready    Type = 20 // channel 0, payload: JSON ReadyInfo; sent once at start
	Stdout   Type = 21 // raw bytes the exec wrote to stdout (or to its PTY)
	Stderr   Type = 22 // raw bytes the exec wrote to stderr
	Exit     Type = 23 // payload: JSON ExitInfo; the last frame of an exec channel
	FileDone Type = 24 // payload: Pack(FileResponse, data); answers a FileOp on the same channel
	Log      Type = 25 // channel 0, payload: a diagnostic line from init itself
)

// OutputWindow is the flow control of an exec's output: init sends at most this many bytes of
// an exec's Stdout and Stderr frames (together) beyond what the worker has given back with
// Credit frames, and otherwise stops reading the process's pipes, so that a process whose
// output nobody reads blocks in write, as it would on a terminal. The worker hands credit back
// as a reader takes the output (or at once, where it keeps a bounded window of it instead).
const OutputWindow = 1 << 20

// CreditPayload encodes the payload of a Credit frame.
func CreditPayload(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

// ParseCredit decodes the payload of a Credit frame.
func ParseCredit(p []byte) (uint32, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("initproto: credit payload of %d bytes, want 4", len(p))
	}
	return binary.BigEndian.Uint32(p), nil
}

// MaxPayload bounds one frame so that a corrupt header cannot make a reader allocate wildly.
// File contents larger than this never travel in one frame (the API caps them at 64 MiB too).
const MaxPayload = 64<<20 + 1<<16

// ExecRequest starts a process. When Main is set the process is the sandbox's own command:
// init exits (ending the container) once it has exited and its output is flushed.
type ExecRequest struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env"` // KEY=VALUE, complete (init adds nothing)
	Cwd  string   `json:"cwd,omitempty"`
	PTY  bool     `json:"pty,omitempty"`
	Rows uint16   `json:"rows,omitempty"`
	Cols uint16   `json:"cols,omitempty"`
	Main bool     `json:"main,omitempty"`
	// User runs the process as a user of the container ("name", "uid", "name:group",
	// "uid:gid"); empty is root.
	User string `json:"user,omitempty"`
	// Followed is the worker's alone (init never sees it): the worker reads this main
	// process's output itself as it comes (a function runner), so it stays under flow control
	// like an exec's and none of it is dropped. Other main processes keep only their latest
	// output, for they must not block when nobody reads them.
	Followed bool `json:"-"`
}

// SignalRequest delivers a signal to an exec's process group.
type SignalRequest struct {
	Signal int `json:"signal"`
}

// ResizeRequest changes an exec's PTY window size.
type ResizeRequest struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// ReadyInfo is init's greeting.
type ReadyInfo struct {
	PID int `json:"pid"`
}

// ExitInfo ends an exec channel. ExitCode follows the shell convention: 128+N for a process
// killed by signal N, 127 when the command was not found, 126 when it could not be executed.
type ExitInfo struct {
	ExitCode int    `json:"exit_code"`
	Signal   int    `json:"signal,omitempty"`
	Error    string `json:"error,omitempty"`
}

// File operations.
const (
	OpRead   = "read"   // Path, Offset, Length (0 = to end); data = bytes read
	OpWrite  = "write"  // Path, Append, Mode; data = bytes to write (creates or truncates)
	OpList   = "list"   // Path; response Entries
	OpStat   = "stat"   // Path; response Stat
	OpMkdir  = "mkdir"  // Path, Parents, Mode
	OpRemove = "remove" // Path, Recursive
)

// FileRequest is the JSON half of a FileOp frame.
type FileRequest struct {
	Op        string `json:"op"`
	Path      string `json:"path"`
	Offset    int64  `json:"offset,omitempty"`
	Length    int64  `json:"length,omitempty"`
	Append    bool   `json:"append,omitempty"`
	Mode      uint32 `json:"mode,omitempty"`
	Parents   bool   `json:"parents,omitempty"`
	Recursive bool   `json:"recursive,omitempty"`
}

// Error kinds in a FileResponse, mapped to HTTP statuses by the API edge.
const (
	ErrNotFound = "not_found"
	ErrInvalid  = "invalid"   // e.g. read of a directory, remove of a non-empty dir without Recursive
	ErrExists   = "conflict"  // mkdir of an existing non-directory
	ErrTooLarge = "too_large" // read above MaxFileBytes
	ErrOther    = "internal"
)

// MaxFileBytes is the most one read or write moves.
const MaxFileBytes = 64 << 20

// FileResponse is the JSON half of a FileDone frame.
type FileResponse struct {
	ErrorKind string     `json:"error_kind,omitempty"`
	Error     string     `json:"error,omitempty"`
	Stat      *FileStat  `json:"stat,omitempty"`
	Entries   []FileStat `json:"entries,omitempty"`
}

// FileStat describes one file.
type FileStat struct {
	Name  string `json:"name"`
	Path  string `json:"path"`
	Type  string `json:"type"` // file, directory, symlink, other
	Size  int64  `json:"size"`
	Mode  uint32 `json:"mode"`  // permission bits
	MTime int64  `json:"mtime"` // unix nanoseconds
}

// Frame is one decoded message.
type Frame struct {
	Type    Type
	Channel uint32
	Payload []byte
}

const headerLen = 9

// Writer writes frames; safe for concurrent use because execs write from many goroutines.
type Writer struct {
	mu sync.Mutex
	w  io.Writer
}

// NewWriter wraps w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write sends one frame.
func (fw *Writer) Write(t Type, channel uint32, payload []byte) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("initproto: frame payload of %d bytes exceeds %d", len(payload), MaxPayload)
	}
	var hdr [headerLen]byte
	hdr[0] = byte(t)
	binary.BigEndian.PutUint32(hdr[1:5], channel)
	binary.BigEndian.PutUint32(hdr[5:9], uint32(len(payload)))
	fw.mu.Lock()
	defer fw.mu.Unlock()
	// One write for small frames keeps a frame atomic on the pipe and halves syscalls.
	if len(payload) <= 32<<10 {
		buf := make([]byte, 0, headerLen+len(payload))
		buf = append(append(buf, hdr[:]...), payload...)
		_, err := fw.w.Write(buf)
		return err
	}
	if _, err := fw.w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := fw.w.Write(payload)
	return err
}

// WriteJSON sends a frame whose payload is v as JSON.
func (fw *Writer) WriteJSON(t Type, channel uint32, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return fw.Write(t, channel, b)
}

// Reader reads frames. Not safe for concurrent use: one goroutine owns it.
type Reader struct {
	r io.Reader
}

// NewReader wraps r (callers should give it a buffered reader).
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Read returns the next frame, or io.EOF at a clean end.
func (fr *Reader) Read() (Frame, error) {
	var hdr [headerLen]byte
	if _, err := io.ReadFull(fr.r, hdr[:]); err != nil {
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(hdr[5:9])
	if n > MaxPayload {
		return Frame{}, fmt.Errorf("initproto: frame payload of %d bytes exceeds %d", n, MaxPayload)
	}
	f := Frame{Type: Type(hdr[0]), Channel: binary.BigEndian.Uint32(hdr[1:5]), Payload: make([]byte, n)}
	if _, err := io.ReadFull(fr.r, f.Payload); err != nil {
		return Frame{}, fmt.Errorf("initproto: short frame: %w", err)
	}
	return f, nil
}

// Pack joins a JSON header and binary data into one payload: a uint32 JSON length, the JSON,
// then the data. File frames use it so contents need no base64.
func Pack(v any, data []byte) ([]byte, error) {
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 4, 4+len(j)+len(data))
	binary.BigEndian.PutUint32(out, uint32(len(j)))
	out = append(append(out, j...), data...)
	return out, nil
}

// Unpack splits a payload made by Pack, decoding the JSON into v and returning the data.
func Unpack(p []byte, v any) ([]byte, error) {
	if len(p) < 4 {
		return nil, fmt.Errorf("initproto: packed payload too short")
	}
	n := binary.BigEndian.Uint32(p)
	if uint64(n) > uint64(len(p)-4) {
		return nil, fmt.Errorf("initproto: packed JSON length %d beyond payload", n)
	}
	if err := json.Unmarshal(p[4:4+n], v); err != nil {
		return nil, fmt.Errorf("initproto: bad packed JSON: %w", err)
	}
	return p[4+n:], nil
}
