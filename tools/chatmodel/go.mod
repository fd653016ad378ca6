// Module chatmodel fits sous's demo chat model (make model); a module of
// its own so that sous's module carries no training library.
module github.com/sous-ai/sous/tools/chatmodel

go 1.26.8

require github.com/sous-ai/sous v0.0.0

require github.com/goccy/go-json v0.10.5 // indirect

require (
	github.com/ardanlabs/jinja v1.8.0 // indirect
	github.com/dustin/go-humanize v1.0.1 // indirect
	github.com/go-logr/logr v1.4.4 // indirect
	github.com/gomlx/gomlx v0.26.0
	github.com/google/uuid v1.6.0 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	github.com/x448/float16 v0.8.4 // indirect
	golang.org/x/exp v0.0.0-20250819193227-8b4c13bb791b // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
	k8s.io/klog/v2 v2.130.1 // indirect
)

replace github.com/sous-ai/sous => ../..
