package gust

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Python's pickles, as far as a Go program needs them beside the Python SDK: PickleString
// makes the key that Python's pickle.dumps(s, protocol=4) makes (keys compare by their
// bytes, so it must be the same bytes), and Unpickle reads the plain values that programs
// usually store (None, bools, numbers, strings, bytes, lists, tuples, dicts, sets) for
// display; anything else (class instances, functions) is refused with ErrUnpicklable.

// ErrUnpicklable is what Unpickle returns for a pickle of something beyond plain values.
var ErrUnpicklable = errors.New("gust: this pickle holds more than plain values (it needs Python to read)")

// PickleString returns pickle.dumps(s, protocol=4) as CPython writes it.
func PickleString(s string) []byte {
	var body []byte
	if len(s) < 256 {
		body = append([]byte{0x8c, byte(len(s))}, s...) // SHORT_BINUNICODE
	} else {
		body = binary.LittleEndian.AppendUint32([]byte{'X'}, uint32(len(s))) // BINUNICODE
		body = append(body, s...)
	}
	body = append(body, 0x94, '.') // MEMOIZE, STOP
	out := []byte{0x80, 4}         // PROTO 4
	if len(body) >= 4 {
		out = append(out, 0x95) // FRAME
		out = binary.LittleEndian.AppendUint64(out, uint64(len(body)))
	}
	return append(out, body...)
}

// PyTuple, PyDict, PySet and PyFrozenSet are how Unpickle returns Python's tuples, dicts (in
// order), sets and frozensets; lists are []any, None is nil, ints are int64 or *big.Int.
type (
	PyTuple     []any
	PyDict      []PyPair
	PySet       []any
	PyFrozenSet []any
	PyPair      struct{ Key, Value any }
)

type pyMark struct{}

// Unpickle decodes a pickle of plain values.
func Unpickle(b []byte) (any, error) {
	var stack []any
	memo := map[int]any{}
	pos := 0
	need := func(n int) ([]byte, error) {
		if pos+n > len(b) || n < 0 {
			return nil, fmt.Errorf("gust: truncated pickle")
		}
		s := b[pos : pos+n]
		pos += n
		return s, nil
	}
	pop := func() (any, error) {
		if len(stack) == 0 {
			return nil, fmt.Errorf("gust: malformed pickle (empty stack)")
		}
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		return v, nil
	}
	popMark := func() ([]any, error) {
		for i := len(stack) - 1; i >= 0; i-- {
			if _, ok := stack[i].(pyMark); ok {
				items := append([]any(nil), stack[i+1:]...)
				stack = stack[:i]
				return items, nil
			}
		}
		return nil, fmt.Errorf("gust: malformed pickle (no mark)")
	}
	u := func(n int) (uint64, error) {
		s, err := need(n)
		if err != nil {
			return 0, err
		}
		var x uint64
		for i := n - 1; i >= 0; i-- {
			x = x<<8 | uint64(s[i])
		}
		return x, nil
	}
	for {
		op, err := need(1)
		if err != nil {
			return nil, err
		}
		switch op[0] {
		case 0x80: // PROTO
			if _, err := need(1); err != nil {
				return nil, err
			}
		case 0x95: // FRAME
			if _, err := need(8); err != nil {
				return nil, err
			}
		case '.': // STOP
			return pop()
		case 'N':
			stack = append(stack, nil)
		case 0x88:
			stack = append(stack, true)
		case 0x89:
			stack = append(stack, false)
		case 'J', 'K', 'M': // BININT, BININT1, BININT2
			n := map[byte]int{'J': 4, 'K': 1, 'M': 2}[op[0]]
			x, err := u(n)
			if err != nil {
				return nil, err
			}
			if n == 4 {
				stack = append(stack, int64(int32(uint32(x))))
			} else {
				stack = append(stack, int64(x))
			}
		case 0x8a, 0x8b: // LONG1, LONG4
			n, err := u(map[byte]int{0x8a: 1, 0x8b: 4}[op[0]])
			if err != nil {
				return nil, err
			}
			s, err := need(int(n))
			if err != nil {
				return nil, err
			}
			x := new(big.Int)
			be := make([]byte, len(s))
			for i := range s {
				be[len(s)-1-i] = s[i]
			}
			x.SetBytes(be)
			if len(s) > 0 && s[len(s)-1]&0x80 != 0 {
				x.Sub(x, new(big.Int).Lsh(big.NewInt(1), uint(8*len(s))))
			}
			if x.IsInt64() {
				stack = append(stack, x.Int64())
			} else {
				stack = append(stack, x)
			}
		case 'G': // BINFLOAT, big-endian
			s, err := need(8)
			if err != nil {
				return nil, err
			}
			stack = append(stack, math.Float64frombits(binary.BigEndian.Uint64(s)))
		case 0x8c, 'X', 0x8d, 'C', 'B', 0x8e: // strings and bytes
			n, err := u(map[byte]int{0x8c: 1, 'X': 4, 0x8d: 8, 'C': 1, 'B': 4, 0x8e: 8}[op[0]])
			if err != nil {
				return nil, err
			}
			s, err := need(int(n))
			if err != nil {
				return nil, err
			}
			if op[0] == 0x8c || op[0] == 'X' || op[0] == 0x8d {
				stack = append(stack, string(s))
			} else {
				stack = append(stack, append([]byte(nil), s...))
			}
		case ']':
			stack = append(stack, []any{})
		case '}':
			stack = append(stack, PyDict{})
		case ')':
			stack = append(stack, PyTuple{})
		case 0x8f: // EMPTY_SET
			stack = append(stack, PySet{})
		case '(':
			stack = append(stack, pyMark{})
		case 0x85, 0x86, 0x87: // TUPLE1..3
			n := int(op[0] - 0x84)
			if len(stack) < n {
				return nil, fmt.Errorf("gust: malformed pickle")
			}
			t := append(PyTuple(nil), stack[len(stack)-n:]...)
			stack = append(stack[:len(stack)-n], t)
		case 't': // TUPLE
			items, err := popMark()
			if err != nil {
				return nil, err
			}
			stack = append(stack, PyTuple(items))
		case 0x91: // FROZENSET
			items, err := popMark()
			if err != nil {
				return nil, err
			}
			stack = append(stack, PyFrozenSet(items))
		case 'a', 'e', 's', 'u', 0x90: // APPEND, APPENDS, SETITEM, SETITEMS, ADDITEMS
			var items []any
			if op[0] == 'a' || op[0] == 's' {
				n := map[byte]int{'a': 1, 's': 2}[op[0]]
				if len(stack) < n+1 {
					return nil, fmt.Errorf("gust: malformed pickle")
				}
				items = append(items, stack[len(stack)-n:]...)
				stack = stack[:len(stack)-n]
			} else if items, err = popMark(); err != nil {
				return nil, err
			}
			if len(stack) == 0 {
				return nil, fmt.Errorf("gust: malformed pickle")
			}
			// Containers are values here: the updated one replaces the top. (A memo entry keeps
			// the container as it was when memoized: a container shared within one pickle reads
			// back empty where it repeats. Display only; the bytes stored are never changed.)
			top := stack[len(stack)-1]
			switch c := top.(type) {
			case []any:
				if op[0] != 'a' && op[0] != 'e' {
					return nil, ErrUnpicklable
				}
				top = append(c, items...)
			case PySet:
				if op[0] != 0x90 {
					return nil, ErrUnpicklable
				}
				top = append(c, items...)
			case PyDict:
				if op[0] != 's' && op[0] != 'u' || len(items)%2 != 0 {
					return nil, ErrUnpicklable
				}
				for i := 0; i < len(items); i += 2 {
					c = append(c, PyPair{items[i], items[i+1]})
				}
				top = c
			default:
				return nil, ErrUnpicklable
			}
			stack[len(stack)-1] = top
		case 0x94: // MEMOIZE
			if len(stack) == 0 {
				return nil, fmt.Errorf("gust: malformed pickle")
			}
			memo[len(memo)] = stack[len(stack)-1]
		case 'q', 'r': // BINPUT, LONG_BINPUT
			n, err := u(map[byte]int{'q': 1, 'r': 4}[op[0]])
			if err != nil || len(stack) == 0 {
				return nil, fmt.Errorf("gust: malformed pickle")
			}
			memo[int(n)] = stack[len(stack)-1]
		case 'h', 'j': // BINGET, LONG_BINGET
			n, err := u(map[byte]int{'h': 1, 'j': 4}[op[0]])
			if err != nil {
				return nil, err
			}
			v, ok := memo[int(n)]
			if !ok {
				return nil, fmt.Errorf("gust: malformed pickle (memo %d)", n)
			}
			stack = append(stack, v)
		default:
			return nil, ErrUnpicklable
		}
	}
}

// PyStr formats v as Python's str() would (strings bare, containers with reprs inside).
func PyStr(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return PyRepr(v)
}

// PyRepr formats v as Python's repr() would, near enough to read.
func PyRepr(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case bool:
		if x {
			return "True"
		}
		return "False"
	case int64:
		return strconv.FormatInt(x, 10)
	case *big.Int:
		return x.String()
	case float64:
		switch {
		case math.IsInf(x, 1):
			return "inf"
		case math.IsInf(x, -1):
			return "-inf"
		case math.IsNaN(x):
			return "nan"
		}
		s := strconv.FormatFloat(x, 'g', -1, 64)
		if !strings.ContainsAny(s, ".en") {
			s += ".0"
		}
		return s
	case string:
		return pyQuote(x)
	case []byte:
		var sb strings.Builder
		sb.WriteString("b'")
		for _, c := range x {
			switch {
			case c == '\\' || c == '\'':
				sb.WriteString("\\" + string(c))
			case c >= 0x20 && c < 0x7f:
				sb.WriteByte(c)
			case c == '\n':
				sb.WriteString(`\n`)
			default:
				fmt.Fprintf(&sb, `\x%02x`, c)
			}
		}
		sb.WriteString("'")
		return sb.String()
	case []any:
		return "[" + joinRepr(x) + "]"
	case PyTuple:
		if len(x) == 1 {
			return "(" + PyRepr(x[0]) + ",)"
		}
		return "(" + joinRepr(x) + ")"
	case PySet:
		if len(x) == 0 {
			return "set()"
		}
		return "{" + joinRepr(x) + "}"
	case PyFrozenSet:
		if len(x) == 0 {
			return "frozenset()"
		}
		return "frozenset({" + joinRepr(x) + "})"
	case PyDict:
		parts := make([]string, len(x))
		for i, p := range x {
			parts[i] = PyRepr(p.Key) + ": " + PyRepr(p.Value)
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return fmt.Sprint(v)
}

func joinRepr(xs []any) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = PyRepr(x)
	}
	return strings.Join(parts, ", ")
}

func pyQuote(s string) string {
	q := "'"
	if strings.Contains(s, "'") && !strings.Contains(s, `"`) {
		q = `"`
	}
	var sb strings.Builder
	sb.WriteString(q)
	for _, r := range s {
		switch {
		case r == '\\':
			sb.WriteString(`\\`)
		case string(r) == q:
			sb.WriteString(`\` + q)
		case r == '\n':
			sb.WriteString(`\n`)
		case r == '\t':
			sb.WriteString(`\t`)
		case r == '\r':
			sb.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&sb, `\x%02x`, r)
		case r == utf8.RuneError:
			sb.WriteString(`\ufffd`)
		default:
			sb.WriteRune(r)
		}
	}
	sb.WriteString(q)
	return sb.String()
}
