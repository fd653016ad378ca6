#!/usr/bin/env bash
# engine.sh: print the container engine to use: $ENGINE if set, docker when
# its daemon answers, else podman (installed from Debian when missing).
set -euo pipefail
if [ -n "${ENGINE:-}" ]; then echo "$ENGINE"; exit 0; fi
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then echo docker; exit 0; fi
if ! command -v podman >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc; } >&2
fi
echo podman
