package grammar

import (
	"errors"
	"fmt"
)

// ErrSchema is matched (errors.Is) by every error Compile returns for a
// schema it refuses: *UnsupportedError, *LimitError and *SchemaError. The
// edge turns it into a 400.
var ErrSchema = errors.New("grammar: schema refused")

// ErrRejected is returned by Matcher.Accept for a token (or byte) the grammar
// does not allow in the matcher's state; the matcher's state is unchanged.
var ErrRejected = errors.New("grammar: token rejected")

// UnsupportedError names a schema keyword the compiler cannot enforce. It is
// never ignored silently: the whole schema is refused.
type UnsupportedError struct {
	Keyword string // the keyword, e.g. "patternProperties"
	Path    string // JSON pointer of the schema that holds it, e.g. "#/properties/a"
	Reason  string // optional detail
}

func (e *UnsupportedError) Error() string {
	s := fmt.Sprintf("grammar: unsupported keyword %q at %s", e.Keyword, e.Path)
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Is makes errors.Is(err, ErrSchema) true.
func (e *UnsupportedError) Is(target error) bool { return target == ErrSchema }

// LimitError says which limit a schema exceeded.
type LimitError struct {
	Limit string // "schema bytes", "depth", "enum", "nfa states", "states", "compile time"
	Max   int64  // the limit's value (nanoseconds for compile time)
	Path  string // where it was exceeded, when known
}

func (e *LimitError) Error() string {
	s := fmt.Sprintf("grammar: schema over the %s limit (%d)", e.Limit, e.Max)
	if e.Path != "" {
		s += " at " + e.Path
	}
	return s
}

// Is makes errors.Is(err, ErrSchema) true.
func (e *LimitError) Is(target error) bool { return target == ErrSchema }

// SchemaError is a schema that is not valid JSON Schema (a keyword with a
// value of the wrong kind, a $ref that resolves nowhere) or that no JSON
// value satisfies within the compiler's bounds.
type SchemaError struct {
	Path string
	Msg  string
}

func (e *SchemaError) Error() string { return fmt.Sprintf("grammar: schema at %s: %s", e.Path, e.Msg) }

// Is makes errors.Is(err, ErrSchema) true.
func (e *SchemaError) Is(target error) bool { return target == ErrSchema }
