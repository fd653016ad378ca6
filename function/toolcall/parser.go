package toolcall

import (
	"encoding/json"
	"strings"

	"github.com/sous-ai/sous/function/prompt"
)

// Parser reads one reply as it grows: Push hands it the reply's text piece
// by piece, and it hands out, as soon as they are certain, the content
// (text outside calls) and each call once it is complete and valid. Text
// that may be the start of a call's markup is held back until it is
// known not to be, so no markup ever reaches the content; a call that
// turns out malformed (JSON that does not parse, no name, arguments that
// are no object, markup never closed) is content, its markup included.
// White space between and after calls is not content. A Parser is used by
// one goroutine.
type Parser struct {
	f      Format
	onText func(string)
	onCall func(prompt.ToolCall)
	max    int // most calls taken (0: any); later ones are dropped

	buf     string // text not yet handed out
	inCall  bool   // buf starts a call's markup (hermes, mistral)
	mode    mode
	pending string // white space after a call, held until text follows
	content strings.Builder
	calls   []prompt.ToolCall
}

type mode int

const (
	atStart   mode = iota // nothing but white space yet
	afterCall             // the last thing read was a call
	inText                // the reply is text from here (llama3), or text came first (mistral)
)

// NewParser reads a reply in f's format; onText (if set) gets content as
// it becomes final, onCall (if set) each call as it completes, ids given.
func (f Format) NewParser(onText func(string), onCall func(prompt.ToolCall)) *Parser {
	return &Parser{f: f, onText: onText, onCall: onCall}
}

// Most makes the parser take at most n calls (OpenAI's
// parallel_tool_calls false: n = 1); the calls after them are dropped,
// neither calls nor content. It returns p.
func (p *Parser) Most(n int) *Parser {
	p.max = n
	return p
}

// Parse reads a whole reply: its content and its calls.
func (f Format) Parse(reply string) (string, []prompt.ToolCall) {
	p := f.NewParser(nil, nil)
	p.Push(reply)
	return p.Finish()
}

// Push reads the next piece of the reply.
func (p *Parser) Push(piece string) {
	p.buf += piece
	p.scan(false)
}

// Finish ends the reply: what was held back is handed out, and the whole
// content and every call are returned.
func (p *Parser) Finish() (string, []prompt.ToolCall) {
	p.scan(true)
	return p.content.String(), p.calls
}

func (p *Parser) scan(final bool) {
	switch p.f {
	case Hermes:
		p.scanTagged(final, "<tool_call>", "</tool_call>")
	case Llama3:
		p.scanLlama3(final)
	case Mistral:
		p.scanMistral(final)
	}
}

const space = " \t\r\n"

// scanTagged reads calls in open ... close tags among text.
func (p *Parser) scanTagged(final bool, open, close string) {
	for {
		if !p.inCall {
			i := strings.Index(p.buf, open)
			if i < 0 {
				n := len(p.buf)
				if !final {
					n -= partialSuffix(p.buf, open)
				}
				p.text(p.buf[:n])
				p.buf = p.buf[n:]
				return
			}
			p.text(p.buf[:i])
			p.buf = p.buf[i:]
			p.inCall = true
		}
		j := strings.Index(p.buf, close)
		if j < 0 {
			if final {
				// A call cut off before its closing tag (the reply
				// ended) still counts when what came is one.
				if !p.call(p.buf[len(open):]) {
					p.text(p.buf)
				}
				p.buf, p.inCall = "", false
			}
			return
		}
		if !p.call(p.buf[len(open):j]) {
			p.text(p.buf[:j+len(close)])
		}
		p.buf, p.inCall = p.buf[j+len(close):], false
	}
}

// scanLlama3 reads a reply that is calls (JSON objects, ";" or white
// space between) or text.
func (p *Parser) scanLlama3(final bool) {
	for p.mode != inText {
		s := strings.TrimLeft(p.buf, space+";")
		if s == "" {
			if final && p.mode == atStart {
				p.text(p.buf)
				p.buf = ""
			}
			return
		}
		if s[0] != '{' {
			p.mode = inText
			break
		}
		n := jsonEnd(s)
		if n < 0 {
			if !final {
				return
			}
			p.mode = inText
			break
		}
		if !p.call(s[:n]) {
			p.mode = inText
			break
		}
		p.buf = s[n:]
	}
	p.text(p.buf)
	p.buf = ""
}

// scanMistral reads [TOOL_CALLS] and a JSON list of calls; since
// decoding leaves the special token out, a list that opens the reply is
// read as calls too.
func (p *Parser) scanMistral(final bool) {
	const marker = "[TOOL_CALLS]"
	for {
		if !p.inCall {
			if i := strings.Index(p.buf, marker); i >= 0 {
				p.text(p.buf[:i])
				p.buf = p.buf[i:]
				p.inCall = true
				continue
			}
			if p.mode == atStart {
				s := strings.TrimLeft(p.buf, space)
				if s == "" {
					if final {
						p.text(p.buf)
						p.buf = ""
					}
					return
				}
				if s[0] == '[' {
					p.inCall = true
					continue
				}
				p.mode = inText
			}
			n := len(p.buf)
			if !final {
				n -= partialSuffix(p.buf, marker)
			}
			p.text(p.buf[:n])
			p.buf = p.buf[n:]
			return
		}
		trimmed := strings.TrimLeft(strings.TrimPrefix(strings.TrimLeft(p.buf, space), marker), space)
		skip := len(p.buf) - len(trimmed)
		n := -1
		if trimmed != "" && trimmed[0] == '[' {
			n = jsonEnd(trimmed)
		} else if trimmed == "" && !final {
			return
		}
		if n < 0 {
			if !final && trimmed != "" && trimmed[0] == '[' {
				return
			}
			// Not a list: the marker and what follows are text.
			p.mode, p.inCall = inText, false
			p.text(p.buf)
			p.buf = ""
			return
		}
		if !p.callList(trimmed[:n]) {
			p.text(p.buf[:skip+n])
		}
		p.buf, p.inCall = p.buf[skip+n:], false
	}
}

// callList reads a JSON list of calls: all valid, or none taken.
func (p *Parser) callList(s string) bool {
	var items []json.RawMessage
	if json.Unmarshal([]byte(s), &items) != nil || len(items) == 0 {
		return false
	}
	type parsed struct{ name, args string }
	var cs []parsed
	for _, it := range items {
		name, args, ok := p.f.parseCall(it)
		if !ok {
			return false
		}
		cs = append(cs, parsed{name, args})
	}
	for _, c := range cs {
		p.add(c.name, c.args)
	}
	return true
}

// call reads one call's JSON, taking it if valid.
func (p *Parser) call(body string) bool {
	name, args, ok := p.f.parseCall([]byte(strings.TrimSpace(body)))
	if ok {
		p.add(name, args)
	}
	return ok
}

func (p *Parser) add(name, args string) {
	p.mode, p.pending = afterCall, ""
	if p.max > 0 && len(p.calls) >= p.max {
		return
	}
	c := prompt.ToolCall{ID: p.f.NewID(), Type: "function", Function: prompt.FunctionCall{Name: name, Arguments: args}}
	p.calls = append(p.calls, c)
	if p.onCall != nil {
		p.onCall(c)
	}
}

// text hands out content; white space right after a call is held until
// text follows it (and dropped if none does).
func (p *Parser) text(s string) {
	if s == "" {
		return
	}
	if p.mode == afterCall {
		if strings.TrimLeft(s, space) == "" {
			p.pending += s
			return
		}
		s, p.pending = p.pending+s, ""
		if p.f != Llama3 {
			p.mode = inText
		}
	} else if p.mode == atStart && p.f != Llama3 && strings.TrimLeft(s, space) != "" {
		p.mode = inText
	}
	p.content.WriteString(s)
	if p.onText != nil {
		p.onText(s)
	}
}

// partialSuffix is the length of the longest end of s that begins
// marker (and may be completed by the next piece).
func partialSuffix(s, marker string) int {
	for n := min(len(s), len(marker)-1); n > 0; n-- {
		if strings.HasSuffix(s, marker[:n]) {
			return n
		}
	}
	return 0
}
