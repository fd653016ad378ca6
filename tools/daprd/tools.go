// Module daprd pins the Dapr sidecar that sous's tests and `make run-dapr`
// use; `make daprd` builds it from this module (dapr's own go.mod carries
// replace directives, so it cannot be installed with go install).
package daprd
