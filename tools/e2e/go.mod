// Module e2e holds the tests that run against the local cluster (make
// cluster-test, make e2e); a module of its own so that sous's module carries
// no Kubernetes client.
module github.com/sous-ai/sous/tools/e2e

go 1.26.8

require (
	k8s.io/api v0.34.4
	k8s.io/apimachinery v0.34.4
	k8s.io/client-go v0.34.4
	sigs.k8s.io/yaml v1.6.0
)
