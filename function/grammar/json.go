package grammar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
)

// object is a JSON object that keeps its keys in document order: property
// order in the output follows the schema's.
type object struct {
	keys []string
	m    map[string]any
}

func (o *object) get(k string) (any, bool) {
	v, ok := o.m[k]
	return v, ok
}

// parseJSON decodes one JSON document into nil, bool, json.Number, string,
// []any and *object, refusing nesting deeper than maxDepth.
func parseJSON(data []byte, maxDepth int) (any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	v, err := parseValue(d, 0, maxDepth)
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, &SchemaError{Path: "#", Msg: "trailing data after the schema"}
	}
	return v, nil
}

var errDepth = errors.New("depth")

func parseValue(d *json.Decoder, depth, maxDepth int) (any, error) {
	t, err := d.Token()
	if err != nil {
		return nil, &SchemaError{Path: "#", Msg: "not JSON: " + err.Error()}
	}
	switch t := t.(type) {
	case json.Delim:
		if depth >= maxDepth {
			return nil, errDepth
		}
		switch t {
		case '{':
			o := &object{m: map[string]any{}}
			for d.More() {
				kt, err := d.Token()
				if err != nil {
					return nil, &SchemaError{Path: "#", Msg: "not JSON: " + err.Error()}
				}
				k := kt.(string)
				v, err := parseValue(d, depth+1, maxDepth)
				if err != nil {
					return nil, err
				}
				if _, dup := o.m[k]; dup {
					return nil, &SchemaError{Path: "#", Msg: fmt.Sprintf("duplicate key %q", k)}
				}
				o.keys = append(o.keys, k)
				o.m[k] = v
			}
			if _, err := d.Token(); err != nil {
				return nil, &SchemaError{Path: "#", Msg: "not JSON: " + err.Error()}
			}
			return o, nil
		case '[':
			a := []any{}
			for d.More() {
				v, err := parseValue(d, depth+1, maxDepth)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			if _, err := d.Token(); err != nil {
				return nil, &SchemaError{Path: "#", Msg: "not JSON: " + err.Error()}
			}
			return a, nil
		}
		return nil, &SchemaError{Path: "#", Msg: "not JSON"}
	default:
		return t, nil
	}
}

// appendJSON writes v as compact JSON: the literal form enum and const emit.
func appendJSON(buf []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(buf, "null"...)
	case bool:
		if v {
			return append(buf, "true"...)
		}
		return append(buf, "false"...)
	case json.Number:
		return append(buf, v...)
	case string:
		return appendString(buf, v)
	case []any:
		buf = append(buf, '[')
		for i, e := range v {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendJSON(buf, e)
		}
		return append(buf, ']')
	case *object:
		buf = append(buf, '{')
		for i, k := range v.keys {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendString(buf, k)
			buf = append(buf, ':')
			buf = appendJSON(buf, v.m[k])
		}
		return append(buf, '}')
	}
	panic(fmt.Sprintf("grammar: appendJSON of %T", v))
}

func appendString(buf []byte, s string) []byte {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	_ = e.Encode(s) // a Go string always encodes
	return append(buf, bytes.TrimSuffix(b.Bytes(), []byte("\n"))...)
}

// jsonType is v's JSON Schema type; an integral number is "integer".
func jsonType(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case []any:
		return "array"
	case *object:
		return "object"
	case json.Number:
		if r, ok := new(big.Rat).SetString(strings.ToLower(string(v))); ok && r.IsInt() {
			return "integer"
		}
		return "number"
	}
	return ""
}
