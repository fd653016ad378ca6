// Command hello is the cluster smoke test's Knative Service: it answers
// every request with "hello from <pod>" on $PORT.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	pod, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", pod)
	})
	log.Fatal(http.ListenAndServe(":"+os.Getenv("PORT"), nil))
}
