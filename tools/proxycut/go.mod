// Module proxycut is a measurement, not part of sous: how often a Go
// reverse proxy cuts a streamed answer (docs/placement.md).
module github.com/sous-ai/sous/tools/proxycut

go 1.26.8
