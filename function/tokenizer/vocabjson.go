package tokenizer

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// A language model's vocabulary and merges are most of its tokenizer.json
// (Gemma 3's: 262k tokens, 515k merges, 33 MB): they are read here in one
// pass each, with no value per entry beyond the map's, where a generic
// decoder would build a string pair per merge first.

var errJSON = errors.New("malformed JSON")

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// readString appends the JSON string at b[i] (a quote) to dst, decoded,
// and returns the index after it.
func readString(dst, b []byte, i int) ([]byte, int, error) {
	if i >= len(b) || b[i] != '"' {
		return dst, i, errJSON
	}
	i++
	for {
		start := i
		for i < len(b) && b[i] != '"' && b[i] != '\\' {
			i++
		}
		dst = append(dst, b[start:i]...)
		if i >= len(b) {
			return dst, i, errJSON
		}
		if b[i] == '"' {
			return dst, i + 1, nil
		}
		if i+1 >= len(b) {
			return dst, i, errJSON
		}
		c := b[i+1]
		i += 2
		switch c {
		case '"', '\\', '/':
			dst = append(dst, c)
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, n, ok := hex4(b, i)
			if !ok {
				return dst, i, errJSON
			}
			i = n
			if utf16.IsSurrogate(r) {
				if r2, n2, ok := hex4(b, i+2); ok && i+1 < len(b) && b[i] == '\\' && b[i+1] == 'u' {
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						r, i = d, n2
					} else {
						r = utf8.RuneError
					}
				} else {
					r = utf8.RuneError
				}
			}
			dst = utf8.AppendRune(dst, r)
		default:
			return dst, i, errJSON
		}
	}
}

func hex4(b []byte, i int) (rune, int, bool) {
	if i+4 > len(b) {
		return 0, i, false
	}
	v, err := strconv.ParseUint(string(b[i:i+4]), 16, 16)
	return rune(v), i + 4, err == nil
}

// readVocab reads {"token": id, ...}; key maps each token to the map's key
// (for byte-level files, the bytes it stands for). It also returns each
// id's token as the file spells it, and its key.
func readVocab(b []byte, key func([]byte) string) (vocab map[string]int32, pieces, keys []string, err error) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, nil, nil, fmt.Errorf("vocab: want an object")
	}
	vocab = make(map[string]int32, len(b)/16)
	var buf []byte
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return vocab, nil, nil, nil
	}
	for {
		i = skipSpace(b, i)
		if buf, i, err = readString(buf[:0], b, i); err != nil {
			return nil, nil, nil, fmt.Errorf("vocab: at byte %d: %w", i, err)
		}
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != ':' {
			return nil, nil, nil, fmt.Errorf("vocab: at byte %d: %w", i, errJSON)
		}
		i = skipSpace(b, i+1)
		j := i
		for j < len(b) && (b[j] >= '0' && b[j] <= '9' || b[j] == '-') {
			j++
		}
		id, perr := strconv.ParseInt(string(b[i:j]), 10, 32)
		if perr != nil || id < 0 || id > 1<<28 {
			return nil, nil, nil, fmt.Errorf("vocab: token %q: id %q is not a token id", buf, b[i:j])
		}
		i = j
		tok := string(buf)
		k := tok
		if key != nil {
			k = key(buf)
		}
		vocab[k] = int32(id)
		for int(id) >= len(pieces) {
			pieces, keys = append(pieces, ""), append(keys, "")
		}
		pieces[id], keys[id] = tok, k
		i = skipSpace(b, i)
		if i < len(b) && b[i] == ',' {
			i++
			continue
		}
		if i < len(b) && b[i] == '}' {
			return vocab, pieces, keys, nil
		}
		return nil, nil, nil, fmt.Errorf("vocab: at byte %d: %w", i, errJSON)
	}
}

// readMerges calls add with each merge's two tokens, written as "a b" or
// as ["a", "b"]; the slices are reused between calls.
func readMerges(b []byte, add func(a, b []byte) error) error {
	i := skipSpace(b, 0)
	if i >= len(b) {
		return nil
	}
	if b[i] != '[' {
		return fmt.Errorf("merges: want an array")
	}
	var x, y []byte
	var err error
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return nil
	}
	for {
		i = skipSpace(b, i)
		if i >= len(b) {
			return fmt.Errorf("merges: %w", errJSON)
		}
		if b[i] == '"' {
			if x, i, err = readString(x[:0], b, i); err != nil {
				return fmt.Errorf("merges: at byte %d: %w", i, err)
			}
			sp := -1
			for k, c := range x {
				if c == ' ' {
					if sp >= 0 {
						sp = -2
						break
					}
					sp = k
				}
			}
			if sp < 0 {
				return fmt.Errorf("BPE merge %q: want two tokens", x)
			}
			if err := add(x[:sp], x[sp+1:]); err != nil {
				return err
			}
		} else if b[i] == '[' {
			i = skipSpace(b, i+1)
			if x, i, err = readString(x[:0], b, i); err != nil {
				return fmt.Errorf("merges: at byte %d: %w", i, err)
			}
			i = skipSpace(b, i)
			if i >= len(b) || b[i] != ',' {
				return fmt.Errorf("merges: at byte %d: want a pair", i)
			}
			i = skipSpace(b, i+1)
			if y, i, err = readString(y[:0], b, i); err != nil {
				return fmt.Errorf("merges: at byte %d: %w", i, err)
			}
			i = skipSpace(b, i)
			if i >= len(b) || b[i] != ']' {
				return fmt.Errorf("merges: at byte %d: want a pair", i)
			}
			i++
			if err := add(x, y); err != nil {
				return err
			}
		} else {
			return fmt.Errorf("merges: at byte %d: %w", i, errJSON)
		}
		i = skipSpace(b, i)
		if i < len(b) && b[i] == ',' {
			i++
			continue
		}
		if i < len(b) && b[i] == ']' {
			return nil
		}
		return fmt.Errorf("merges: at byte %d: %w", i, errJSON)
	}
}
