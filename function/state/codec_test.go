package state

import (
	stdjson "encoding/json"
	"reflect"
	"testing"
	"time"

	json "github.com/goccy/go-json"
)

// session16 is a session as the demo model leaves it after 16 turns.
func session16() Session {
	s := Session{Version: 1, Turn: 16, State: []float32{0.1, 0.2, 0, 0, 0.5, 1e-7, 3}}
	at := time.Date(2026, 11, 27, 9, 0, 0, 123456789, time.UTC)
	for i := range 16 {
		s.History = append(s.History, Turn{N: i + 1, Event: "req#3k2j4h5g6f7d8", Text: "hello \"there\" \u00e9", BatchSize: 32,
			At: at.Add(time.Duration(i) * time.Second),
			Output: []byte(`{"intent":"greeting","scores":{"complaint":0.000038592218,"goodbye":0.000091673784,` +
				`"greeting":0.99795026,"other":0.00024279473,"question":0.00083900575,"thanks":0.0008376446}}`)})
	}
	return s
}

// Each codec reads the other's documents back to the same session: sessions
// written before the switch still read. (The bytes may differ: go-json
// writes 1e-07 where encoding/json writes 1e-7.)
func TestSessionCodecMatchesEncodingJSON(t *testing.T) {
	s := session16()
	fast, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	std, err := stdjson.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var a, b Session
	if err := json.Unmarshal(std, &a); err != nil {
		t.Fatal(err)
	}
	if err := stdjson.Unmarshal(fast, &b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) || !reflect.DeepEqual(a, s) {
		t.Fatalf("decoded sessions differ:\n%.300v\n%.300v", a, b)
	}
}

// BenchmarkSessionCodec encodes and decodes a 16-turn session, once a turn
// in Dapr mode: encoding/json against the codec the Dapr store uses.
func BenchmarkSessionCodec(b *testing.B) {
	for _, c := range []struct {
		name      string
		marshal   func(any) ([]byte, error)
		unmarshal func([]byte, any) error
	}{
		{"encoding-json", stdjson.Marshal, stdjson.Unmarshal},
		{"go-json", json.Marshal, json.Unmarshal},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := session16()
			b.ReportAllocs()
			for b.Loop() {
				data, err := c.marshal(s)
				if err != nil {
					b.Fatal(err)
				}
				var out Session
				if err := c.unmarshal(data, &out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
