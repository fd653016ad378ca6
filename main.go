// Command sous serves an ONNX model to conversational agents as a Knative
// function: read the configuration, build the function, serve until
// SIGTERM, drain, exit.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/sous-ai/sous/function"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	slog.SetDefault(log)
	if err := run(log); err != nil {
		log.Error("sous: " + err.Error())
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	cfg, err := function.ConfigFromEnv(os.Getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	f, err := function.New(cfg, function.WithLogger(log))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", cfg.Port))
	if err != nil {
		return err
	}
	return f.Serve(ctx, ln)
}
