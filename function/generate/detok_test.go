package generate

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// byteDecoder decodes each id as one byte: a byte-level vocabulary, in
// which a token may carry part of a character.
type byteDecoder struct{}

func (byteDecoder) AppendDecoded(text []byte, id int64) []byte { return append(text, byte(id)) }

// pieceDecoder decodes id i as pieces[i].
type pieceDecoder []string

func (p pieceDecoder) AppendDecoded(text []byte, id int64) []byte { return append(text, p[id]...) }

func feed(d *detok, ids []int64) (pieces []string, text string) {
	out := func(s string) { pieces = append(pieces, s) }
	for _, id := range ids {
		if d.stopped() {
			break
		}
		d.add(id, out)
	}
	return pieces, d.flush(out)
}

func TestDetokStopStringHoldback(t *testing.T) {
	dec := pieceDecoder{"Hel", "lo", " wo", "rld", "<", "|", "end", "|>", " after", "é", "!"}
	for _, tc := range []struct {
		name  string
		ids   []int64
		stops []string
		want  string
	}{
		{"stop split over four tokens", []int64{0, 1, 4, 5, 6, 7, 8}, []string{"<|end|>"}, "Hello"},
		{"no stop appears", []int64{0, 1, 2, 3}, []string{"<|end|>"}, "Hello world"},
		{"a partial stop that never completes is shown", []int64{0, 4, 5, 2}, []string{"<|end|>"}, "Hel<| wo"},
		{"earliest of two stops", []int64{0, 1, 2, 3, 4}, []string{"rld", "lo w"}, "Hel"},
		{"stop inside one token", []int64{0, 8, 1}, []string{"aft"}, "Hel "},
		{"no stops", []int64{9, 10}, nil, "é!"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pieces, text := feed(newDetok(dec, tc.stops), tc.ids)
			if text != tc.want {
				t.Errorf("text = %q, want %q", text, tc.want)
			}
			if got := strings.Join(pieces, ""); got != text {
				t.Errorf("pieces %q join to %q, not the text %q", pieces, got, text)
			}
			for _, s := range tc.stops {
				// No piece shown before the end may hold a stop string or
				// the start of one that the text then cuts.
				shown := ""
				for _, p := range pieces {
					shown += p
					if !strings.HasPrefix(text, shown) {
						t.Errorf("stream showed %q, which the final text %q retracts", shown, text)
					}
				}
				if strings.Contains(shown, s) {
					t.Errorf("stream %q carries stop string %q", shown, s)
				}
			}
		})
	}
}

func TestDetokNeverSplitsACharacter(t *testing.T) {
	text := "naïve 日本語 👩‍👩‍👧 ok"
	var ids []int64
	for _, b := range []byte(text) {
		ids = append(ids, int64(b))
	}
	for _, stops := range [][]string{nil, {"語 👩"}, {"zz"}} {
		pieces, got := feed(newDetok(byteDecoder{}, stops), ids)
		for _, p := range pieces {
			if !utf8.ValidString(p) {
				t.Errorf("stops %q: piece %q is not whole UTF-8", stops, p)
			}
		}
		if joined := strings.Join(pieces, ""); joined != got {
			t.Errorf("stops %q: pieces join to %q, text is %q", stops, joined, got)
		}
		want := text
		if len(stops) > 0 {
			if i := strings.Index(text, stops[0]); i >= 0 {
				want = text[:i]
			}
		}
		if got != want {
			t.Errorf("stops %q: text %q, want %q", stops, got, want)
		}
	}
	// A generation that ends inside a character: the broken bytes become
	// U+FFFD, in the last piece and the text alike.
	pieces, got := feed(newDetok(byteDecoder{}, nil), []int64{'a', 0xe6, 0x97})
	if got != "a\uFFFD" || strings.Join(pieces, "") != got {
		t.Errorf("cut character: text %q pieces %q, want \"a\\uFFFD\"", got, pieces)
	}
}
