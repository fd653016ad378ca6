// Command proxycut measures how often a Go httputil.ReverseProxy cuts a
// streamed answer to a POST (golang/go#40747): once the proxy has begun
// writing the response, its HTTP/1 server closes the inbound request
// body; the transport's last read of that body (the check that nothing
// follows the declared length), if it comes after that, fails and tears
// down the connection to the backend, and the client gets a stream that
// ends early. Knative's activator and queue-proxy are such proxies. The
// same requests go, side by side, through a proxy that hands the transport
// a copy of the body, as sous's session relay does.
//
//	GOMAXPROCS=2 go run . [-n 20000]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	n := flag.Int("n", 20000, "streamed requests through each proxy")
	hogs := flag.Int("hogs", 8, "busy goroutines, for a loaded machine's scheduling delays")
	flag.Parse()

	// The backend, as sous answers a streamed turn: the whole body read,
	// then a few flushed events and [DONE].
	backend := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 8 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(time.Millisecond)
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
	u, _ := url.Parse("http://" + backend)
	proxy := func() *httputil.ReverseProxy {
		rp := httputil.NewSingleHostReverseProxy(u)
		rp.FlushInterval = -1
		rp.ErrorLog = log.New(io.Discard, "", 0)
		return rp
	}
	plain := serve(proxy())
	copied := proxy()
	copying := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body, r.ContentLength = io.NopCloser(strings.NewReader(string(b))), int64(len(b))
		copied.ServeHTTP(w, r)
	}))

	for range *hogs {
		go func() {
			for {
				_ = strings.Repeat("x", 64)
			}
		}()
	}
	// Alternate the two, a block at a time, so that both see the same load.
	var cut [2]atomic.Int64
	for block := 0; block < *n/1000; block++ {
		for side, addr := range []string{plain, copying} {
			run(addr, 1000, &cut[side])
		}
	}
	fmt.Printf("streams cut: plain ReverseProxy %d of %d, body copied %d of %d\n", cut[0].Load(), *n/1000*1000, cut[1].Load(), *n/1000*1000)
}

func serve(h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(ln, h)
	return ln.Addr().String()
}

// run sends n streamed POSTs to addr, 32 at a time, and counts the
// answers that ended before [DONE].
func run(addr string, n int, cut *atomic.Int64) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			resp, err := http.Post("http://"+addr+"/", "application/json", strings.NewReader(`{"messages":[{"role":"user","content":"hello"}]}`))
			if err != nil {
				cut.Add(1)
				return
			}
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if sc.Text() == "data: [DONE]" {
					return
				}
			}
			cut.Add(1)
		}()
	}
	wg.Wait()
}
