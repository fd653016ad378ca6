package main

import (
	"io"
	"log"
	"net/http"
	"os"
	"runtime"

	"github.com/labstack/echo/v4"
)

// serveBare answers POST / like sous does, with no work: the HTTP ceiling
// (an echo server, a body read, a small JSON reply).
func serveBare() {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.GET("/", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
	e.POST("/", func(c echo.Context) error {
		io.Copy(io.Discard, c.Request().Body)
		return c.JSONBlob(http.StatusOK, []byte(`{"session":"b","turn":1,"output":{},"model":"bare","batch_size":1}`))
	})
	log.Fatal(e.Start("127.0.0.1:" + os.Getenv("PORT")))
}

func numCPU() int { return runtime.NumCPU() }
