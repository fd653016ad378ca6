package prompt

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Exchange is one stored turn of a conversation: its number, the user's
// text (or In: the turn's messages, such as tool results) and the reply
// (its text and calls of tools).
type Exchange struct {
	N         int
	User      string
	In        []Message
	Assistant string
	ToolCalls []ToolCall
}

// ErrContextLength: the request's own messages (every stored exchange
// left out) and the reply's tokens do not fit the model's positions.
var ErrContextLength = errors.New("prompt: the messages and max_tokens exceed the model's positions")

// ErrTemplate wraps a chat template that failed to render the
// conversation (a caller's messages the template refuses, e.g. roles out of
// order): the caller's to fix.
var ErrTemplate = errors.New("prompt: chat template")

// Builder renders and encodes prompts for one model.
type Builder struct {
	// Template is the model's chat template; nil renders "role: content"
	// lines.
	Template *Template
	// Encode tokenizes the rendered text (special tokens written in it
	// become their ids).
	Encode func(text string) []int64
	// Positions is the model's window: prompt and reply together.
	Positions int
}

// DropBlock is how many of the oldest exchanges a prompt too long for the
// window loses at a time.
const DropBlock = 4

// Build renders the stored exchanges and then messages, and encodes them,
// leaving room for maxTokens. A transcript too long for the window loses
// its oldest exchanges in blocks of DropBlock turns, counted by turn
// number: the prompt then starts at the same exchange for several turns,
// so a prefix cache keyed on the prompt's tokens still serves them
// (dropping one exchange a turn would change the prompt's start every
// turn). Messages are never cut: a prompt too long with no stored
// exchange left is ErrContextLength.
func (b *Builder) Build(history []Exchange, messages []Message, maxTokens int) ([]int64, error) {
	return b.BuildTools(history, messages, nil, maxTokens)
}

// BuildTools is Build with tool definitions for the template (a JSON
// list of OpenAI's tools; nil: none).
func (b *Builder) BuildTools(history []Exchange, messages []Message, tools json.RawMessage, maxTokens int) ([]int64, error) {
	room := b.Positions - maxTokens
	base := 0 // exchanges with turn numbers above base are in the prompt
	if len(history) > 0 {
		base = ceilTo(history[0].N-1, DropBlock)
	}
	for {
		ids, err := b.render(history, base, messages, tools)
		if err != nil {
			return nil, err
		}
		if room <= 0 || len(ids) <= room {
			return ids, nil
		}
		if len(history) == 0 || base >= history[len(history)-1].N {
			return nil, fmt.Errorf("%w: %d prompt tokens and max_tokens %d, the model holds %d", ErrContextLength, len(ids), maxTokens, b.Positions)
		}
		base += DropBlock
	}
}

func ceilTo(n, block int) int { return (n + block - 1) / block * block }

// render renders the exchanges of history whose turn number is above
// base, then messages, and encodes them.
func (b *Builder) render(history []Exchange, base int, messages []Message, tools json.RawMessage) ([]int64, error) {
	var all []Message
	for _, h := range history {
		if h.N > base {
			if h.In != nil {
				all = append(all, h.In...)
			} else {
				all = append(all, Message{Role: "user", Content: h.User})
			}
			all = append(all, Message{Role: "assistant", Content: h.Assistant, ToolCalls: h.ToolCalls})
		}
	}
	for _, m := range messages {
		if m.Role == "developer" { // OpenAI's newer name for system
			m.Role = "system"
		}
		all = append(all, m)
	}
	if b.Template == nil {
		var s strings.Builder
		for _, m := range all {
			fmt.Fprintf(&s, "%s: %s ", m.Role, m.Content)
		}
		s.WriteString("assistant:")
		return b.Encode(s.String()), nil
	}
	text, err := b.Template.RenderTools(all, tools, true)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTemplate, err)
	}
	return b.Encode(text), nil
}
