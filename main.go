// Command sous serves an ONNX model to conversational agents as a Knative
// function: read the configuration, build the function, serve until
// SIGTERM, drain, exit.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // served only on SOUS_PPROF_ADDR
	"os"
	"os/signal"
	"syscall"

	"github.com/sous-ai/sous/function"
	"github.com/sous-ai/sous/function/config"
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
	cfg, err := config.FromEnv(os.Getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if addr := os.Getenv("SOUS_PPROF_ADDR"); addr != "" {
		// Profiling on a port of its own, never on the served one.
		go func() { log.Info("pprof", "err", http.ListenAndServe(addr, nil)) }()
	}
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
