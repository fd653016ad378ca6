package generate

import (
	"bytes"
	"strings"
	"unicode/utf8"
)

// Decoder turns token ids into text: AppendDecoded appends one token's
// text to the text decoded so far, as decoding the ids together would (a
// tokenizer).
type Decoder interface {
	AppendDecoded(text []byte, id int64) []byte
}

// detok is one sequence's incremental detokenizer, as vLLM's: the text
// grows a token at a time, and what is handed out is final. A piece never
// ends inside a UTF-8 character (a byte-level token may carry part of
// one), and while stop strings are set the last (longest stop - 1)
// characters are held back, since they may be the start of a stop string
// that the next tokens complete: a stream never shows a stop string, or a
// piece of one, that the final text then cuts.
type detok struct {
	dec   Decoder
	stops [][]byte
	hold  int // characters held back: the longest stop's, less one
	text  []byte
	sent  int             // bytes of text handed out
	shown strings.Builder // what was handed out, invalid UTF-8 replaced
	stop  int             // byte offset of the first stop string in text; -1 if none yet
}

func newDetok(dec Decoder, stops []string) *detok {
	d := &detok{dec: dec, stop: -1}
	for _, s := range stops {
		d.stops = append(d.stops, []byte(s))
		d.hold = max(d.hold, utf8.RuneCountInString(s)-1)
	}
	return d
}

func (d *detok) stopped() bool { return d.stop >= 0 }

// add appends token id's text and hands out (to out, if set) what became
// final.
func (d *detok) add(id int64, out func(string)) {
	if d.stopped() {
		return
	}
	before := len(d.text)
	d.text = d.dec.AppendDecoded(d.text, id)
	for _, s := range d.stops {
		// A stop string not in the text before can only end in the new
		// piece.
		from := max(0, before-len(s)+1)
		if i := bytes.Index(d.text[from:], s); i >= 0 && (d.stop < 0 || from+i < d.stop) {
			d.stop = from + i
		}
	}
	end := d.stop
	if end < 0 {
		end = d.safe()
	}
	d.send(end, out)
}

// safe is how far the text may be handed out while no stop string has
// been found: short of a trailing partial character and of the last hold
// characters.
func (d *detok) safe() int {
	end := len(d.text)
	// Back over a trailing incomplete UTF-8 sequence (at most 3 bytes).
	for i := 1; i <= min(3, end-d.sent); i++ {
		c := d.text[end-i]
		if c < 0x80 {
			break
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(d.text[end-i:]) {
				end -= i
			}
			break
		}
	}
	for n := 0; n < d.hold && end > d.sent; n++ {
		_, size := utf8.DecodeLastRune(d.text[d.sent:end])
		end -= size
	}
	return end
}

func (d *detok) send(end int, out func(string)) {
	if end > d.sent {
		piece := strings.ToValidUTF8(string(d.text[d.sent:end]), "\uFFFD")
		d.shown.WriteString(piece)
		if out != nil {
			out(piece)
		}
		d.sent = end
	}
}

// flush ends the text: everything up to a stop string, or all of it, is
// handed out, and the whole text returned: the pieces together. Bytes that
// are not UTF-8 (or never completed a character: the generation ended
// inside one) become U+FFFD, in the pieces and the text alike.
func (d *detok) flush(out func(string)) string {
	end := len(d.text)
	if d.stopped() {
		end = d.stop
	}
	d.send(end, out)
	return d.shown.String()
}
