package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
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

// checkOffsets fails unless every token of text's encoding has offsets
// inside it, in order.
func checkOffsets(t *testing.T, e Encoding, text string) {
	t.Helper()
	n := utf8.RuneCountInString(text)
	last := 0
	for i, o := range e.Offsets {
		if e.Sequence[i] < 0 {
			continue
		}
		if o[0] < last || o[0] > o[1] || o[1] > n {
			t.Fatalf("token %d (id %d): offsets %v (previous start %d, text %d chars)", i, e.IDs[i], o, last, n)
		}
		last = o[0]
	}
}

func fuzzSeeds(f *testing.F) {
	for _, s := range []string{"hello world", "<|im_start|>user\nhi<|im_end|>", " \u00a0\u3000\t\n x  y", "日本語 👩‍👩‍👧 e\u0301",
		"it's 12345 ſ", "\xff\xfe invalid", "", "<bos><unused0>\n\n\t", "[LSTRIP]  word [RSTRIP] Hello"} {
		f.Add(s)
	}
}

// Byte-level files: any text encodes without panicking, with offsets in
// order inside it, and valid UTF-8 decodes back to itself (NFC-normalized
// where the file normalizes so; GPT-2's style, which adds prefix spaces,
// aside).
func FuzzEncodeByteLevel(f *testing.F) {
	var toks []*Tokenizer
	for _, n := range []string{"qwen3", "llama3", "gpt4o", "bytelevel-gpt2"} {
		toks = append(toks, loadAny(f, n))
	}
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, text string) {
		for i, tok := range toks {
			e := tok.Encode(text)
			checkOffsets(t, e, text)
			if !utf8.ValidString(text) || i == 3 {
				continue // GPT-2's style adds a space before each piece
			}
			want := text
			if i == 0 {
				want = norm.NFC.String(text)
			}
			if got := tok.DecodeWith(tok.IDs(text), false); got != want {
				t.Fatalf("tokenizer %d: decode(encode(%q)) = %q", i, text, got)
			}
		}
	})
}

// BPE files with byte fallback (Llama 2, Gemma 3): any text encodes
// without panicking, with offsets in order inside it; Gemma 3's, which adds
// no prefix space, decodes valid UTF-8 without ▁ back to itself.
func FuzzEncodeSentencePiece(f *testing.F) {
	llama2, gemma3 := loadLLM(f, "llama2"), loadLLM(f, "gemma3")
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, text string) {
		checkOffsets(t, llama2.Encode(text), text)
		checkOffsets(t, gemma3.Encode(text), text)
		if utf8.ValidString(text) && !strings.Contains(text, "▁") {
			if got := gemma3.DecodeWith(gemma3.IDs(text), false); got != text {
				t.Fatalf("gemma3: decode(encode(%q)) = %q", text, got)
			}
		}
	})
}

// Unigram files: any text encodes without panicking, with offsets in
// order inside it, and decodes without panicking.
func FuzzEncodeUnigram(f *testing.F) {
	var toks []*Tokenizer
	for _, n := range []string{"unigram-metaspace", "unigram-fallback"} {
		toks = append(toks, loadAny(f, n))
	}
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, text string) {
		for _, tok := range toks {
			e := tok.Encode(text)
			checkOffsets(t, e, text)
			tok.Decode(e.IDs)
		}
	})
}
