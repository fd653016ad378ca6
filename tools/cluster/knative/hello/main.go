// Command hello is the cluster smoke test's Knative Service and event
// subscriber: it answers every request with "hello from <pod>" on $PORT,
// and logs each CloudEvent it receives (binary mode) as
// "event <ce-id> <ce-type>", which the smoke test reads back.
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
		if id := r.Header.Get("Ce-Id"); id != "" {
			log.Printf("event %s %s", id, r.Header.Get("Ce-Type"))
			w.WriteHeader(http.StatusAccepted)
			return
		}
		fmt.Fprintf(w, "hello from %s\n", pod)
	})
	log.Fatal(http.ListenAndServe(":"+os.Getenv("PORT"), nil))
}
