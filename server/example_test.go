package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/deltasync/deltasync/server"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

// A server on an in-memory listener: an admin switches offline mode on for
// an org, which its users need before they can sync.
func Example() {
	secret := []byte("example-secret-0123456789abcdef0123")
	opts := server.DefaultOptions()
	opts.Store = memstore.New()
	opts.JWTSecret = secret
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := server.New(opts)
	if err != nil {
		panic(err)
	}
	ln := fasthttputil.NewInmemoryListener()
	go s.Serve(ln)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	}()

	admin, err := server.MintToken(secret, server.Claims{Admin: true}, time.Hour)
	if err != nil {
		panic(err)
	}
	c := &fasthttp.Client{Dial: func(string) (net.Conn, error) { return ln.Dial() }}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.Header.SetMethod("PUT")
	req.SetRequestURI("http://deltasync/v1/admin/orgs/acme")
	req.Header.Set("Authorization", "Bearer "+admin)
	req.SetBodyString(`{"offline_mode": true, "conflict_policy": "client-wins"}`)
	if err := c.Do(req, resp); err != nil {
		panic(err)
	}
	var st server.OrgSettings
	if err := json.Unmarshal(resp.Body(), &st); err != nil {
		panic(err)
	}
	fmt.Println(resp.StatusCode(), st.OfflineMode, st.ConflictPolicy)
	// Output: 200 true client-wins
}
