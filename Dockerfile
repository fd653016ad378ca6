# syntax=docker/dockerfile:1
# sous image: multi-stage, cgo build, non-root runtime with libonnxruntime.
#   docker build -t sous .                               # CPU (default)
#   docker build --build-arg VARIANT=gpu -t sous:gpu .   # CUDA
# The GPU variant adds ONNX Runtime's CUDA provider libraries (from the npm
# package named by ORT_GPU_PACKAGE) beside the core library and runs on a
# CUDA base; SOUS_DEVICE=cuda then fails start-up if the GPU is unusable.
ARG VARIANT=cpu
ARG GO_IMAGE=golang:1.26-bookworm
ARG CPU_BASE=gcr.io/distroless/cc-debian12:nonroot
ARG GPU_BASE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04

FROM ${GO_IMAGE} AS build
RUN apt-get update && apt-get install -y --no-install-recommends npm && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# make verifies the library's pinned sha256 and runs no package scripts.
RUN make onnxruntime && CGO_ENABLED=1 go build -trimpath -ldflags="-s -w" -o /out/sous . \
 && mkdir -p /out/lib && cp bin/libonnxruntime.so /out/lib/

FROM build AS gpu-libs
ARG ORT_GPU_PACKAGE=com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9
RUN mkdir -p /tmp/gpu && cd /tmp/gpu && npm pack --ignore-scripts "${ORT_GPU_PACKAGE}" \
 && tar -xzf *.tgz && find . -name 'libonnxruntime_providers_*.so' -exec cp {} /out/lib/ \;

FROM ${CPU_BASE} AS cpu
COPY --from=build /out/sous /sous
COPY --from=build /out/lib/libonnxruntime.so /usr/lib/sous/libonnxruntime.so
ENV SOUS_ORT_LIB=/usr/lib/sous/libonnxruntime.so
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/sous"]

FROM ${GPU_BASE} AS gpu
COPY --from=gpu-libs /out/sous /sous
COPY --from=gpu-libs /out/lib/ /usr/lib/sous/
ENV SOUS_ORT_LIB=/usr/lib/sous/libonnxruntime.so SOUS_DEVICE=cuda
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/sous"]

FROM ${VARIANT}
