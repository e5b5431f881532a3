package gust

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// maxLine bounds one NDJSON line: a 64 MiB chunk of output in base64, and room around it.
const maxLine = 96 << 20

// lineReader reads an NDJSON stream one object at a time. Lines may be of any length up to
// maxLine; blank lines are skipped.
type lineReader struct {
	r *bufio.Reader
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// next decodes the next line into v. It returns io.EOF at a clean end of the stream and
// io.ErrUnexpectedEOF when the stream ends inside a line.
func (l *lineReader) next(v any) error {
	for {
		line, err := l.readLine()
		if len(bytes.TrimSpace(line)) == 0 {
			if err != nil {
				return err
			}
			continue
		}
		if err == io.EOF {
			// A last line without its newline is still a whole JSON object if it decodes.
			if jerr := json.Unmarshal(line, v); jerr != nil {
				return io.ErrUnexpectedEOF
			}
			return nil
		}
		if err != nil {
			return err
		}
		if err := json.Unmarshal(line, v); err != nil {
			return fmt.Errorf("bad line in the server's stream: %w", err)
		}
		return nil
	}
}

// readLine returns one line without its newline.
func (l *lineReader) readLine() ([]byte, error) {
	var long []byte
	for {
		frag, err := l.r.ReadSlice('\n')
		if err == nil {
			if long == nil {
				return frag[:len(frag)-1], nil
			}
			return append(long, frag[:len(frag)-1]...), nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return append(long, frag...), err
		}
		long = append(long, frag...)
		if len(long) > maxLine {
			return nil, fmt.Errorf("a line of the server's stream is longer than %d MiB", maxLine>>20)
		}
	}
}

// streamLine is any line of the API's NDJSON streams: an exec's or a log's output and exit, or
// an image build's log, result or error.
type streamLine struct {
	ExecID   string          `json:"exec_id"`
	Stream   string          `json:"stream"`
	Data     []byte          `json:"data"` // base64 in JSON
	ExitCode *int            `json:"exit_code"`
	Error    json.RawMessage `json:"error"` // a string on an exit line, an object on an error line
	Log      *string         `json:"log"`
	Image    *Image          `json:"image"`
}

// apiError returns the error an {"error": {...}} line carries, if it is one.
func (s *streamLine) apiError() *APIError {
	if len(s.Error) == 0 || s.Error[0] != '{' {
		return nil
	}
	var d errorDetail
	if json.Unmarshal(s.Error, &d) != nil {
		return nil
	}
	if d.Message == "" {
		d.Message = "the server reported an error of kind " + d.Kind
	}
	return d.apiError(0)
}

// errorText returns the text of an exit line's "error": "..." field.
func (s *streamLine) errorText() string {
	var t string
	if len(s.Error) > 0 && s.Error[0] == '"' {
		json.Unmarshal(s.Error, &t)
	}
	return t
}
