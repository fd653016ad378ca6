package prompt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"

	"github.com/ardanlabs/jinja"
)

// Templates serialize tool definitions and call arguments with the tojson
// filter, and the model reads them token by token: a prompt with tools
// equals transformers.js's only if tojson writes what @huggingface/jinja's
// does, byte for byte. The engine's own tojson formats floats as Go does
// (1e-05, 1.2345675e+06 where JavaScript writes 0.00001 and 1234567.5) and
// escapes U+2028 and U+2029, and its filters cannot be replaced: a
// template's tojson is renamed to this one, which the engine finds among
// the render's variables.

// tojsonName is the variable the renamed filter is looked up by.
const tojsonName = "__sous_tojson"

var tojsonFilter = regexp.MustCompile(`\|\s*tojson\b`)

// renameTojson points a template's tojson filters at tojsonName.
func renameTojson(src string) string {
	return tojsonFilter.ReplaceAllString(src, "| "+tojsonName)
}

// tojson is @huggingface/jinja's tojson filter: Python json.dumps's
// defaults as that engine writes them (", " and ": ", or "," and ": "
// with indent; ensure_ascii false), numbers as JavaScript writes them.
func tojson(args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
	if len(args) == 0 {
		return jinja.NewString(""), nil
	}
	o := jsonOptions{item: ", ", key: ": "}
	if v, ok := kwargs["indent"]; ok && !v.IsNone() {
		if !v.IsInt() {
			return jinja.Undefined(), fmt.Errorf("tojson: indent must be a number")
		}
		o.indent = int(v.AsInt())
		if o.indent > 0 {
			o.item = ","
		}
	}
	for _, k := range []struct {
		name string
		to   *bool
	}{{"ensure_ascii", &o.ascii}, {"sort_keys", &o.sort}} {
		if v, ok := kwargs[k.name]; ok {
			if !v.IsBool() {
				return jinja.Undefined(), fmt.Errorf("tojson: %s must be a boolean", k.name)
			}
			*k.to = v.AsBool()
		}
	}
	if v, ok := kwargs["separators"]; ok && !v.IsNone() {
		if !v.IsList() || v.AsList().Len() != 2 || !v.AsList().Get(0).IsString() || !v.AsList().Get(1).IsString() {
			return jinja.Undefined(), fmt.Errorf("tojson: separators must be two strings")
		}
		o.item, o.key = v.AsList().Get(0).AsString(), v.AsList().Get(1).AsString()
	}
	var b strings.Builder
	if err := o.write(&b, args[0], 0); err != nil {
		return jinja.Undefined(), err
	}
	return jinja.NewString(b.String()), nil
}

type jsonOptions struct {
	item, key   string
	indent      int
	ascii, sort bool
}

func (o *jsonOptions) write(b *strings.Builder, v jinja.Value, depth int) error {
	switch {
	case v.IsUndefined(), v.IsNone():
		b.WriteString("null")
	case v.IsBool():
		b.WriteString(strconv.FormatBool(v.AsBool()))
	case v.IsInt():
		b.WriteString(jsNumber(float64(v.AsInt())))
	case v.IsFloat():
		f := v.AsFloat()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			b.WriteString("null") // as JSON.stringify writes them
		} else {
			b.WriteString(jsNumber(f))
		}
	case v.IsString():
		o.string(b, v.AsString())
	case v.IsList(), v.IsDict():
		pad := "\n" + strings.Repeat(" ", o.indent*depth)
		child := pad + strings.Repeat(" ", o.indent)
		// With indent, transformers.js (its bundled engine) pads an empty
		// list as "[\n<child>\n<pad>]" and an empty object as "{\n<pad>}",
		// where Python writes [] and {}: its form is the one held to.
		if v.IsList() {
			items := v.AsList().Items
			b.WriteByte('[')
			if o.indent > 0 {
				b.WriteString(child)
			}
			for i, it := range items {
				if i > 0 {
					b.WriteString(o.item)
					if o.indent > 0 {
						b.WriteString(child)
					}
				}
				if err := o.write(b, it, depth+1); err != nil {
					return err
				}
			}
			if o.indent > 0 {
				b.WriteString(pad)
			}
			b.WriteByte(']')
			return nil
		}
		d := v.AsDict()
		keys := d.OrderedKeys()
		if o.sort {
			slices.Sort(keys)
		}
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteString(o.item)
			}
			if o.indent > 0 {
				b.WriteString(child)
			}
			o.string(b, k)
			b.WriteString(o.key)
			if err := o.write(b, d.Data[k], depth+1); err != nil {
				return err
			}
		}
		if o.indent > 0 {
			b.WriteString(pad)
		}
		b.WriteByte('}')
	default:
		return fmt.Errorf("tojson: cannot convert a %s to JSON", v.String())
	}
	return nil
}

// string writes s as JSON.stringify does (only quotes, backslashes and
// control characters escaped), and with ensure_ascii every UTF-16 unit
// from 0x7f up as \uXXXX, as @huggingface/jinja does.
func (o *jsonOptions) string(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20:
			fmt.Fprintf(b, `\u%04x`, r)
		case o.ascii && r >= 0x7f:
			if r > 0xffff {
				r1, r2 := utf16.EncodeRune(r)
				fmt.Fprintf(b, `\u%04x\u%04x`, r1, r2)
			} else {
				fmt.Fprintf(b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}

// jsNumber writes a finite number as JavaScript's Number.prototype.toString
// does: the shortest digits that round-trip, in plain notation from 1e-7
// up to (not including) 1e21, in exponent notation outside.
func jsNumber(f float64) string {
	if f == 0 {
		return "0"
	}
	sign := ""
	if f < 0 {
		sign, f = "-", -f
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±XX
	mant, exp, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	x, _ := strconv.Atoi(exp)
	k, n := len(digits), x+1 // value = 0.digits × 10^n
	switch {
	case k <= n && n <= 21:
		return sign + digits + strings.Repeat("0", n-k)
	case 0 < n && n <= 21:
		return sign + digits[:n] + "." + digits[n:]
	case -6 < n && n <= 0:
		return sign + "0." + strings.Repeat("0", -n) + digits
	}
	es := "+"
	if n-1 < 0 {
		es = "-"
	}
	m := digits[:1]
	if k > 1 {
		m += "." + digits[1:]
	}
	return sign + m + "e" + es + strconv.Itoa(abs(n-1))
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// jsonValue reads JSON into the template's values as transformers.js hands
// them to its engine (JSON.parse, then its conversion): numbers are
// JavaScript's (an integer up to 2^53 is an int, any other a float); an
// object's keys in JavaScript's order, array indices ("0", "1", ...)
// first, ascending, then the other keys as they came; a repeated key keeps
// its first place and its last value.
func jsonValue(raw []byte) (jinja.Value, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	v, err := readValue(d)
	if err != nil {
		return jinja.Undefined(), err
	}
	if _, err := d.Token(); err == nil {
		return jinja.Undefined(), fmt.Errorf("json: trailing data")
	}
	return v, nil
}

func readValue(d *json.Decoder) (jinja.Value, error) {
	tok, err := d.Token()
	if err != nil {
		return jinja.Undefined(), err
	}
	switch t := tok.(type) {
	case nil:
		return jinja.None(), nil
	case bool:
		return jinja.NewBool(t), nil
	case string:
		return jinja.NewString(t), nil
	case json.Number:
		f, err := strconv.ParseFloat(string(t), 64)
		if err != nil && !math.IsInf(f, 0) {
			return jinja.Undefined(), err
		}
		return number(f), nil
	case json.Delim:
		if t == '[' {
			var items []jinja.Value
			for d.More() {
				v, err := readValue(d)
				if err != nil {
					return jinja.Undefined(), err
				}
				items = append(items, v)
			}
			_, err := d.Token()
			return jinja.NewList(items), err
		}
		var index, other []string
		vals := map[string]jinja.Value{}
		for d.More() {
			kt, err := d.Token()
			if err != nil {
				return jinja.Undefined(), err
			}
			k := kt.(string)
			v, err := readValue(d)
			if err != nil {
				return jinja.Undefined(), err
			}
			if _, seen := vals[k]; !seen {
				if arrayIndex(k) {
					index = append(index, k)
				} else {
					other = append(other, k)
				}
			}
			vals[k] = v
		}
		if _, err := d.Token(); err != nil {
			return jinja.Undefined(), err
		}
		slices.SortFunc(index, func(a, b string) int {
			x, _ := strconv.ParseUint(a, 10, 32)
			y, _ := strconv.ParseUint(b, 10, 32)
			return int(int64(x) - int64(y))
		})
		out := jinja.NewDict()
		for _, k := range append(index, other...) {
			out.AsDict().Set(k, vals[k])
		}
		return out, nil
	}
	return jinja.Undefined(), fmt.Errorf("json: unexpected %v", tok)
}

// number is a JavaScript number as the engine's value.
func number(f float64) jinja.Value {
	if f == math.Trunc(f) && math.Abs(f) <= 1<<53 {
		return jinja.NewInt(int64(f))
	}
	return jinja.NewFloat(f)
}

// arrayIndex reports whether JavaScript orders key k as an array index:
// the canonical decimal form of an integer below 2^32 - 1.
func arrayIndex(k string) bool {
	if k == "" || len(k) > 10 || (len(k) > 1 && k[0] == '0') {
		return false
	}
	n, err := strconv.ParseUint(k, 10, 64)
	return err == nil && n < 1<<32-1
}
