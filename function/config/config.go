// Package config is the one reader of sous's environment (PORT, SOUS_*,
// the Dapr sidecar's variables): FromEnv reads it into a validated Config,
// naming the variable at fault; everything else takes the Config.
package config

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"time"
)

// actorType is what Dapr accepts in an actor type's URL segment.
var actorType = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Config is the function's configuration, read from the environment by
// FromEnv.
type Config struct {
	Port          int           // PORT
	Model         string        // SOUS_MODEL; "" serves the bundled demo model
	Library       string        // SOUS_ORT_LIB
	Device        string        // SOUS_DEVICE: auto, cpu or cuda
	MaxBatch      int           // SOUS_MAX_BATCH
	MaxDelay      time.Duration // SOUS_MAX_DELAY
	Queue         int           // SOUS_QUEUE
	Workers       int           // SOUS_WORKERS
	State         string        // SOUS_STATE: auto, dapr or memory
	StateStore    string        // SOUS_STATE_STORE
	SessionTTL    time.Duration // SOUS_SESSION_TTL
	History       int           // SOUS_HISTORY
	MaxBody       int64         // SOUS_MAX_BODY, bytes
	StateTimeout  time.Duration // SOUS_STATE_TIMEOUT, per state call
	DrainTimeout  time.Duration // SOUS_DRAIN_TIMEOUT, SIGTERM grace
	DrainQuiet    time.Duration // SOUS_DRAIN_QUIET: after SIGTERM, the listener stays open until no request came for this long
	DaprAvailable bool          // DAPR_GRPC_PORT, DAPR_GRPC_ENDPOINT or DAPR_HTTP_PORT set
	DaprAddress   string        // DAPR_GRPC_ENDPOINT, or 127.0.0.1:DAPR_GRPC_PORT (default 50001)
	DaprToken     string        // DAPR_API_TOKEN, sent to the sidecar
	AppToken      string        // APP_API_TOKEN, required of requests from the sidecar
	DaprWait      time.Duration // SOUS_DAPR_WAIT, how long start-up waits for the sidecar
	BatchState    bool          // SOUS_STATE_BATCH: one state read and write per batch (default), or per turn
	StateBulk     string        // SOUS_STATE_BULK: a batch's write as one transaction (default) or one bulk save (Redis Cluster)
	PubSub        string        // SOUS_PUBSUB, the Dapr pub/sub component
	Topic         string        // SOUS_TOPIC, the topic of turn events
	// Model directories (Hugging Face exports).
	Task           string // SOUS_TASK: "" (from the model's outputs), text-classification, feature-extraction or token-classification
	Aggregation    string // SOUS_AGGREGATION: none, simple, first, average or max
	ContextTurns   int    // SOUS_CONTEXT_TURNS: earlier turns' texts put before the text
	MaxBatchTokens int    // SOUS_MAX_BATCH_TOKENS: padded tokens in one batch
	BatchOrder     string // SOUS_BATCH_ORDER: length (group similar lengths) or arrival
	KVTokens       int    // SOUS_KV_TOKENS: decoder models: KV positions all generating sequences may hold
	PrefixCache    int64  // SOUS_PREFIX_CACHE_BYTES: decoder models: bytes of recent sessions' KV kept (0: none)
	PrefillChunk   int    // SOUS_PREFILL_CHUNK: decoder models: most prompt tokens prefilled in one step beside running decodes (0: whole prompts)
	ModelDType     string // SOUS_MODEL_DTYPE: a model directory's variant (fp32, fp16, q8, q4, q4f16), as transformers.js's dtype
	ModelFile      string // SOUS_MODEL_FILE: the .onnx file inside a model directory, explicitly
	ToolParser     string // SOUS_TOOL_PARSER: decoder models: hermes, llama3 or mistral ("": the chat template's format)
	// Session placement (decoder models).
	Placement        string // SOUS_PLACEMENT: none, or actors (a session's turns go to the pod that holds its KV, placed by Dapr's actor runtime)
	PlacementActor   string // SOUS_PLACEMENT_ACTOR: the actor type of sessions; services that share a placement service need their own
	PlacementAddress string // SOUS_PLACEMENT_ADDRESS: host:port other pods relay this pod's sessions to; "" (default): this host's first non-loopback IPv4 address and PORT
	DaprHTTP         string // DAPR_HTTP_ENDPOINT, or http://127.0.0.1:DAPR_HTTP_PORT (default 3500): the sidecar's HTTP API, for actor calls
}

// Defaults.
const (
	DefaultMaxBody = 1 << 20
	// MaxText bounds a turn's text. The demo tokenizer reads at most
	// 512 tokens anyway; the bound keeps stored transcripts small.
	MaxText = 8 << 10
	// DefaultPrefillChunk is the prompt tokens prefilled per step of the
	// decode loop, chosen with BENCH_ONLY=llm (docs/generation.md): of 0,
	// 64 and 256, the chunk under which 16 prompts of 512 tokens arriving
	// at once kept 16 running sessions' p99 time between tokens within
	// twice its steady value in four runs of five (0 and 256: three).
	DefaultPrefillChunk = 64
)

// FromEnv reads and validates the configuration; getenv is os.Getenv in
// main. Errors name the variable.
func FromEnv(getenv func(string) string) (Config, error) {
	c := Config{}
	var errs []error
	str := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	num := func(name string, def, lo, hi int) int {
		v := getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			errs = append(errs, fmt.Errorf("%s=%q: want an integer in [%d, %d]", name, v, lo, hi))
			return def
		}
		return n
	}
	dur := func(name string, def, lo, hi time.Duration) time.Duration {
		v := getenv(name)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < lo || d > hi {
			errs = append(errs, fmt.Errorf("%s=%q: want a duration in [%s, %s], e.g. 2ms", name, v, lo, hi))
			return def
		}
		return d
	}
	oneOf := func(name, def string, allowed ...string) string {
		v := str(name, def)
		for _, a := range allowed {
			if v == a {
				return v
			}
		}
		errs = append(errs, fmt.Errorf("%s=%q: want one of %q", name, v, allowed))
		return def
	}

	c.Port = num("PORT", 8080, 1, 65535)
	c.Model = getenv("SOUS_MODEL")
	c.Library = getenv("SOUS_ORT_LIB")
	c.Device = oneOf("SOUS_DEVICE", "auto", "auto", "cpu", "cuda")
	c.MaxBatch = num("SOUS_MAX_BATCH", 32, 1, 4096)
	c.MaxDelay = dur("SOUS_MAX_DELAY", 2*time.Millisecond, 0, time.Second)
	c.Queue = num("SOUS_QUEUE", 1024, 1, 1<<20)
	c.Workers = num("SOUS_WORKERS", 1, 1, 256)
	c.State = oneOf("SOUS_STATE", "auto", "auto", "dapr", "memory")
	c.StateStore = str("SOUS_STATE_STORE", "statestore")
	c.SessionTTL = dur("SOUS_SESSION_TTL", 30*time.Minute, time.Second, 365*24*time.Hour)
	c.History = num("SOUS_HISTORY", 16, 0, 1024)
	c.MaxBody = int64(num("SOUS_MAX_BODY", DefaultMaxBody, 1024, 64<<20))
	c.StateTimeout = dur("SOUS_STATE_TIMEOUT", 2*time.Second, time.Millisecond, time.Minute)
	c.DrainTimeout = dur("SOUS_DRAIN_TIMEOUT", 25*time.Second, 0, 10*time.Minute)
	c.DrainQuiet = dur("SOUS_DRAIN_QUIET", time.Second, 0, time.Minute)
	c.DaprAvailable = getenv("DAPR_GRPC_PORT") != "" || getenv("DAPR_HTTP_PORT") != "" || getenv("DAPR_GRPC_ENDPOINT") != ""
	c.DaprAddress = getenv("DAPR_GRPC_ENDPOINT")
	if c.DaprAddress == "" {
		c.DaprAddress = "127.0.0.1:" + str("DAPR_GRPC_PORT", "50001")
	}
	c.DaprToken = getenv("DAPR_API_TOKEN")
	c.AppToken = getenv("APP_API_TOKEN")
	c.DaprWait = dur("SOUS_DAPR_WAIT", 30*time.Second, 0, 10*time.Minute)
	c.BatchState = oneOf("SOUS_STATE_BATCH", "true", "true", "false") == "true"
	c.StateBulk = oneOf("SOUS_STATE_BULK", "transaction", "transaction", "bulk")
	c.PubSub = str("SOUS_PUBSUB", "pubsub")
	c.Topic = str("SOUS_TOPIC", "turns")
	c.Task = oneOf("SOUS_TASK", "", "", "text-classification", "feature-extraction", "token-classification", "text-generation")
	c.Aggregation = oneOf("SOUS_AGGREGATION", "simple", "none", "simple", "first", "average", "max")
	c.ContextTurns = num("SOUS_CONTEXT_TURNS", 0, 0, 64)
	c.MaxBatchTokens = num("SOUS_MAX_BATCH_TOKENS", 16384, 1, 1<<24)
	c.BatchOrder = oneOf("SOUS_BATCH_ORDER", "length", "length", "arrival")
	c.KVTokens = num("SOUS_KV_TOKENS", 65536, 16, 1<<24)
	c.PrefixCache = int64(num("SOUS_PREFIX_CACHE_BYTES", 128<<20, 0, 1<<40))
	c.PrefillChunk = num("SOUS_PREFILL_CHUNK", DefaultPrefillChunk, 0, 1<<20)
	c.ModelDType = oneOf("SOUS_MODEL_DTYPE", "", "", "fp32", "fp16", "q8", "int8", "uint8", "q4", "bnb4", "q4f16")
	c.ModelFile = getenv("SOUS_MODEL_FILE")
	c.ToolParser = oneOf("SOUS_TOOL_PARSER", "", "", "hermes", "llama3", "mistral")
	c.Placement = oneOf("SOUS_PLACEMENT", "none", "none", "actors")
	c.PlacementActor = str("SOUS_PLACEMENT_ACTOR", "sous-session")
	if !actorType.MatchString(c.PlacementActor) {
		errs = append(errs, fmt.Errorf("SOUS_PLACEMENT_ACTOR=%q: want 1-64 of A-Z a-z 0-9 . _ -", c.PlacementActor))
	}
	c.PlacementAddress = getenv("SOUS_PLACEMENT_ADDRESS")
	if c.PlacementAddress != "" {
		if host, port, err := net.SplitHostPort(c.PlacementAddress); err != nil || host == "" || port == "" {
			errs = append(errs, fmt.Errorf("SOUS_PLACEMENT_ADDRESS=%q: want host:port", c.PlacementAddress))
		}
	}
	c.DaprHTTP = getenv("DAPR_HTTP_ENDPOINT")
	if c.DaprHTTP == "" {
		c.DaprHTTP = "http://127.0.0.1:" + str("DAPR_HTTP_PORT", "3500")
	}
	if c.Placement == "actors" && !c.DaprAvailable {
		errs = append(errs, errors.New("SOUS_PLACEMENT=actors: needs the Dapr sidecar (DAPR_HTTP_PORT or DAPR_GRPC_PORT unset)"))
	}
	if c.Queue < c.MaxBatch {
		errs = append(errs, fmt.Errorf("SOUS_QUEUE=%d: must be at least SOUS_MAX_BATCH=%d", c.Queue, c.MaxBatch))
	}
	return c, errors.Join(errs...)
}
