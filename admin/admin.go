// Package admin is a Go client of deltasync's admin API, for the app's own
// backend (the system of record) and for `deltasync admin`: org settings,
// admin patches to one user or fanned out to many, the per-org change feed
// with its long poll, and named consumers whose acknowledged cursors bound
// what gc may delete.
//
// A Client holds the server's URL and an admin token: a deployment admin's
// (no org claim) reaches every org, an org admin's (admin and org claims)
// only its own. Every call takes a context; an answer other than 2xx is an
// *Error carrying the server's status, code and message.
//
// The server's signed requests to the backend (webhook deliveries, write
// validation) are checked with wire.Verify.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/deltasync/deltasync/wire"
)

// Client calls one deltasync server's admin API.
type Client struct {
	// URL is the server's base URL, such as "https://sync.example.com".
	URL string
	// Token is an admin bearer token.
	Token string
	// HTTP is the client requests go through; nil means one without a
	// timeout of its own (long polls wait; bound calls with their ctx).
	HTTP *http.Client
}

// Error is an answer other than 2xx.
type Error struct {
	Status  int
	Code    string // wire.Code*, "" if the body was not a wire.ErrorBody
	Message string
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("server answered %d: %s", e.Status, e.Message)
	}
	return fmt.Sprintf("server answered %d %s: %s", e.Status, e.Code, e.Message)
}

// StatusOf returns the HTTP status of an *Error in err's chain, 0 if none.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// do sends one request and returns the response for the caller to read
// and close; an answer other than 2xx is turned into an *Error.
func (c *Client) do(ctx context.Context, method, path string, body []byte) (*http.Response, error) {
	if c.URL == "" {
		return nil, errors.New("admin: no server URL")
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.URL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin: %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &Error{Status: resp.StatusCode, Message: strings.TrimSpace(string(b))}
	var eb wire.ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error.Code != "" {
		e.Code, e.Message = eb.Error.Code, eb.Error.Message
	}
	return nil, e
}

// call sends in (if not nil) as JSON and decodes the answer into out (if
// not nil).
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("admin: encode request: %w", err)
		}
	}
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("admin: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func orgPath(org string, rest ...string) string {
	p := "/v1/admin/orgs/" + url.PathEscape(org)
	for _, r := range rest {
		p += "/" + url.PathEscape(r)
	}
	return p
}
