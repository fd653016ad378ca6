# syntax=docker/dockerfile:1
# sous image: multi-stage, cgo build, non-root runtime with libonnxruntime.
#   docker build -t sous .                               # CPU (default)
#   docker build --build-arg VARIANT=gpu -t sous:gpu .   # CUDA
#   make image [VARIANT=gpu]                             # docker or podman; makes
#                                                        # local bases when no registry
# The runtime image has no shell, runs as 65532:65532, and works with a
# read-only root filesystem and every capability dropped. It finds ONNX
# Runtime through SOUS_ORT_LIB, set here. The GPU variant adds ONNX
# Runtime's CUDA provider libraries (from the npm package ORT_GPU_PACKAGE)
# beside the core library, on a CUDA base; SOUS_DEVICE=auto (the default)
# uses CUDA when the GPU and its libraries load, and logs the CPU fallback
# otherwise; SOUS_DEVICE=cuda makes start-up fail instead.
ARG VARIANT=cpu
ARG GO_IMAGE=golang:1.26.8-bookworm
ARG CPU_BASE=gcr.io/distroless/cc-debian12:nonroot
ARG GPU_BASE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04

FROM ${GO_IMAGE} AS build
# Passed through when set (module proxy, flags); empty means Go's defaults.
ARG GOPROXY GOFLAGS
WORKDIR /src
# ONNX Runtime first: it changes only with the Makefile's pin. make checks
# the library's sha256 and runs none of the npm package's scripts.
COPY Makefile ./
RUN make onnxruntime
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=1 go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/sous . \
 && mkdir -p /out/lib && cp bin/libonnxruntime.so /out/lib/

FROM build AS gpu-libs
ARG ORT_GPU_PACKAGE=com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9
RUN mkdir -p /tmp/gpu && cd /tmp/gpu && npm pack --ignore-scripts --silent "${ORT_GPU_PACKAGE}" \
 && tar -xzf *.tgz && find . -name 'libonnxruntime_providers_*.so' -exec cp {} /out/lib/ \; \
 && ls /out/lib/libonnxruntime_providers_shared.so /out/lib/libonnxruntime_providers_cuda.so \
 && rm -rf /tmp/gpu

FROM ${CPU_BASE} AS cpu
COPY --from=build /out/sous /sous
COPY --from=build /out/lib/libonnxruntime.so /usr/lib/sous/libonnxruntime.so
ENV SOUS_ORT_LIB=/usr/lib/sous/libonnxruntime.so
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/sous"]

FROM ${GPU_BASE} AS gpu
COPY --from=gpu-libs /out/sous /sous
COPY --from=gpu-libs /out/lib/ /usr/lib/sous/
ENV SOUS_ORT_LIB=/usr/lib/sous/libonnxruntime.so
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/sous"]

FROM ${VARIANT}
