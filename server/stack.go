package server

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// Long polls and goroutine stacks (issue 10: memory per connected device).
//
// A held long poll parks fasthttp's worker goroutine, and with it the
// worker's stack, for as long as the poll waits. The runtime sizes a stack
// by the deepest the goroutine ever went and halves it at a GC only while
// less than a quarter of it is in use; parked in the hub, a worker uses
// about 3 KB (fasthttp's serveConnCounted frame alone is 0.8 KB), so a
// stack that once grew to 8 KB stays 8 KB for the whole connection.
// Authentication, settings, the first head read, the answer and the access
// log all go deeper than 4 KB. So a long poll runs those parts on a
// goroutine of their own (onOwnStack), which ends when they are done and
// gives its stack back, and the worker itself only routes, waits and
// writes: its stack stays at 4 KB. That halves the stack memory of a held
// poll, and the heap the GC lets grow with it (the GC's goal counts stacks).
// Other requests run inline: they do not wait, so their stacks are not held.

// onOwnStack runs f on a goroutine of its own and waits for it to return.
// A panic in f is raised again in the caller, so serveHTTP's recovery
// still answers it.
func onOwnStack(f func()) {
	done := make(chan struct{})
	var p any
	panicked := true
	go func() {
		defer func() {
			if panicked {
				p = recover()
			}
			close(done)
		}()
		f()
		panicked = false
	}()
	<-done
	if panicked {
		panic(p)
	}
}

// deep runs f on its own stack for a long poll (see onOwnStack), inline
// for any other request.
func (r *request) deep(f func()) {
	if r.longPoll {
		onOwnStack(f)
		return
	}
	f()
}

// longPollRequest tells a long poll (GET /v1/sync with wait, or HEAD, which
// the router serves with the GET route and which parks the same way) before
// the request is routed. It is the one definition: the request carries it
// as request.longPoll from there on.
func longPollRequest(ctx *fasthttp.RequestCtx) bool {
	return (ctx.IsGet() || ctx.IsHead()) && bytes.Equal(ctx.Path(), syncPath) && len(ctx.QueryArgs().Peek("wait")) > 0
}

var syncPath = []byte("/v1/sync")
