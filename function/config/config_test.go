package config

import (
	"strings"
	"testing"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestPlacementSettings(t *testing.T) {
	c, err := FromEnv(env())
	if err != nil || c.Placement != "none" || c.PlacementActor != "sous-session" || c.DaprHTTP != "http://127.0.0.1:3500" {
		t.Errorf("defaults: %+v, %v", c, err)
	}
	c, err = FromEnv(env("SOUS_PLACEMENT", "actors", "DAPR_HTTP_PORT", "3601", "SOUS_PLACEMENT_ADDRESS", "10.1.2.3:8080",
		"SOUS_PLACEMENT_ACTOR", "sous-chat-session"))
	if err != nil || c.Placement != "actors" || c.DaprHTTP != "http://127.0.0.1:3601" || c.PlacementAddress != "10.1.2.3:8080" ||
		c.PlacementActor != "sous-chat-session" {
		t.Errorf("placement on: %+v, %v", c, err)
	}
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"SOUS_PLACEMENT", "consistent-hash", "DAPR_HTTP_PORT", "3500"}, "SOUS_PLACEMENT"},
		{[]string{"SOUS_PLACEMENT", "actors"}, "needs the Dapr sidecar"},
		{[]string{"SOUS_PLACEMENT_ADDRESS", "10.1.2.3"}, "SOUS_PLACEMENT_ADDRESS"},
		{[]string{"SOUS_PLACEMENT_ACTOR", "a/b"}, "SOUS_PLACEMENT_ACTOR"},
	} {
		if _, err := FromEnv(env(tc.env...)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error naming %s", tc.env, err, tc.want)
		}
	}
}
