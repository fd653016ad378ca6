package tokenizer

import (
	"testing"
	"unicode/utf8"
)

// Any text, and any pair, encodes without panicking, with offsets inside
// the text they index, in order, and the truncation respected.
func FuzzEncode(f *testing.F) {
	tok, err := Load("testdata/tokenizers/all-minilm-l6-v2.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"hello", "héllo [SEP] 日本", "a\u0000b\ufffd\u200b", "\u0301", ""} {
		f.Add(s, "pair", 10)
	}
	f.Fuzz(func(t *testing.T, text, pair string, maxLen int) {
		for _, p := range []*string{nil, &pair} {
			tr := &Truncation{MaxLength: 3 + abs(maxLen)%64, Strategy: "longest_first"}
			e, err := tok.EncodeWith(text, p, tr)
			if err != nil {
				t.Fatal(err)
			}
			if e.Len() > tr.MaxLength && e.Len() > tok.Added(p != nil) {
				t.Fatalf("%d tokens over max_length %d", e.Len(), tr.MaxLength)
			}
			lens := []int{utf8.RuneCountInString(text), utf8.RuneCountInString(pair)}
			last := [2]int{}
			for i, o := range e.Offsets {
				seq := e.Sequence[i]
				if seq < 0 {
					continue
				}
				if o[0] < last[seq] || o[0] > o[1] || o[1] > lens[seq] {
					t.Fatalf("token %d of sequence %d: offsets %v (previous start %d, text %d chars)", i, seq, o, last[seq], lens[seq])
				}
				last[seq] = o[0]
			}
		}
	})
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
