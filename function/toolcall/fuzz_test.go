package toolcall

import (
	"reflect"
	"strings"
	"testing"
)

// Any reply, in any format, streamed in pieces of any size, parses as it
// does whole: the same content handed out as Finish returns, the same
// calls, each with arguments that are a JSON object's text.
func FuzzParse(f *testing.F) {
	for _, tc := range parseCases {
		f.Add(string(tc.f), tc.reply, uint8(3))
	}
	f.Fuzz(func(t *testing.T, format, reply string, size uint8) {
		fm, err := ParseFormat(format)
		if err != nil {
			return
		}
		n := int(size%16) + 1
		wantContent, wantCalls := fm.Parse(reply)
		var streamed strings.Builder
		p := fm.NewParser(func(s string) { streamed.WriteString(s) }, nil)
		for i := 0; i < len(reply); i += n {
			p.Push(reply[i:min(i+n, len(reply))])
		}
		content, cs := p.Finish()
		if content != wantContent || streamed.String() != content {
			t.Fatalf("pieces of %d: content %q, streamed %q; whole %q", n, content, streamed.String(), wantContent)
		}
		if !reflect.DeepEqual(calls(cs), calls(wantCalls)) {
			t.Fatalf("pieces of %d: calls %+v; whole %+v", n, calls(cs), calls(wantCalls))
		}
		for _, c := range cs {
			if !strings.HasPrefix(c.Function.Arguments, "{") || !ValidName(c.Function.Name) {
				t.Fatalf("call %+v", c)
			}
		}
	})
}
