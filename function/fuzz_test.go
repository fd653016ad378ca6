package function

import (
	"testing"

	sousce "github.com/sous-ai/sous/function/api/cloudevents"
	"github.com/sous-ai/sous/function/api/edge"
	"github.com/sous-ai/sous/function/api/oip"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/turn"
)

// fuzzFunction is a Function with the demo model loaded, for decoders
// that consult the model. Its batcher never runs.
func fuzzFunction(f *testing.F) *Function {
	cfg := testConfig(f)
	fn, err := New(cfg, WithLogger(quietLogger()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { fn.engine.Close() })
	return fn
}

// checkDecoded fails unless err is nil or a caller's error (400, 413, 415).
func checkDecoded(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if code, _, _ := edge.Status(err); code >= 500 || code < 400 {
		t.Fatalf("decoding error classified %d: %v", code, err)
	}
}

func FuzzTurnBody(f *testing.F) {
	fn := fuzzFunction(f)
	for _, s := range []string{
		`{"session":"s1","text":"hello"}`,
		`{"session":"s1","inputs":[{"name":"tokens","shape":[1,2],"datatype":"INT64","data":[1,2]}]}`,
		`{"session":"a||b","text":"x"}`, `{"text":""}`, `[]`, `{"session":1}`, "{\"text\":\"\xff\"}", `{"text":"a"}{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var tb sousce.TurnBody
		err := edge.DecodeJSON(body, &tb)
		if err == nil {
			var req turn.Request
			req, err = tb.Request()
			if err == nil {
				req.Session = "fuzz"
				err = fn.turns.Check(&req)
			}
		}
		checkDecoded(t, err)
	})
}

func FuzzOIPRequest(f *testing.F) {
	fn := fuzzFunction(f)
	for _, s := range []string{
		`{"inputs":[{"name":"tokens","shape":[1,2],"datatype":"INT64","data":[[1,2]]},{"name":"state_in","shape":[1,7],"datatype":"FP32","data":[0,0,0,0,0,0,0]}]}`,
		`{"inputs":[{"name":"x","shape":[9223372036854775807,2],"datatype":"FP32","data":[1]}]}`,
		`{"inputs":[{"name":"x","shape":[-1],"datatype":"INT32","data":[1e400]}]}`,
		`{"inputs":[{"name":"x","shape":[1],"datatype":"BOOL","data":[true]}]}`,
		`{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":{"a":1}}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req oip.Request
		err := edge.DecodeJSON(body, &req)
		if err == nil {
			var ins []model.Tensor
			ins, err = oip.DecodeInputs(req.Inputs)
			if err == nil {
				var item []model.Tensor
				item, err = fn.engine.Order(ins)
				if err == nil {
					err = fn.engine.Check(item)
				}
			}
		}
		checkDecoded(t, err)
	})
}

func FuzzCloudEventData(f *testing.F) {
	fn := fuzzFunction(f)
	f.Add("application/json", "s1", []byte(`{"text":"hello"}`))
	f.Add("", "", []byte(`{"session":"s2","text":"hi"}`))
	f.Add("text/plain", "s1", []byte(`hi`))
	f.Add("application/json", "a b", []byte(`{"text":"x","session":"c"}`))
	f.Fuzz(func(t *testing.T, contentType, subject string, data []byte) {
		ev := event.New()
		ev.SetID("1")
		ev.SetSource("/fuzz")
		ev.SetType(sousce.TypeTurn)
		if subject != "" {
			ev.SetSubject(subject)
		}
		if err := ev.SetData(contentType, data); err != nil {
			return
		}
		req, err := sousce.EventRequest(&ev, false)
		if err == nil {
			err = fn.turns.Check(&req)
		}
		checkDecoded(t, err)
	})
}
