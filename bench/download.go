package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deltasync/deltasync/wire"
)

// counter counts the bytes a connection reads and writes, and how many of
// those read belong to the response's status line and headers.
type counter struct {
	up, down atomic.Int64
	mu       sync.Mutex
	head     []byte // the first bytes read, until the end of the headers
	headLen  int64  // 0 until found
}

func (c *counter) read(p []byte) {
	c.down.Add(int64(len(p)))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.headLen > 0 || len(c.head) > 1<<20 {
		return
	}
	c.head = append(c.head, p...)
	if i := bytes.Index(c.head, []byte("\r\n\r\n")); i >= 0 {
		c.headLen, c.head = int64(i+4), nil
	}
}

type countingConn struct {
	net.Conn
	c *counter
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.c.read(p[:n])
	return n, err
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.c.up.Add(int64(n))
	return n, err
}

// countedClient returns an HTTP client whose connections (one per request)
// count every byte in both directions.
func countedClient() (*http.Client, *counter) {
	cnt := &counter{}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{conn, cnt}, nil
		},
		DisableCompression: true,
		DisableKeepAlives:  true,
	}
	return &http.Client{Transport: tr}, cnt
}

type client struct {
	base, tok string
}

// do sends one request on a fresh connection and counts its bytes.
func (c *client) do(ctx context.Context, method, path, tok string, body []byte, encoding string) ([]byte, int64, error) {
	hc, cnt := countedClient()
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, 0, err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != 200 {
		return nil, 0, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	return data, cnt.up.Load(), nil
}

// download is one sync as the wire saw it.
type download struct {
	total     int64 // bytes that came down, headers included
	breakdown Download
	millis    float64
}

// sync downloads the delta from one version to another in a format, and
// says where the bytes went (format 3; format 2 is one compressed stream).
func (c *client) sync(ctx context.Context, from, to uint64, format int) (download, error) {
	var d download
	hc, cnt := countedClient()
	defer hc.CloseIdleConnections()
	url := fmt.Sprintf("%s/v1/sync?from=%d&to=%d", c.base, from, to)
	if format != wire.DeltaFormat2 {
		url += fmt.Sprintf("&format=%d", format)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return d, err
	}
	req.Header.Set("Authorization", "Bearer "+c.tok)
	t0 := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return d, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d.millis = float64(time.Since(t0).Microseconds()) / 1000
	if err != nil {
		return d, err
	}
	if resp.StatusCode != 200 {
		return d, fmt.Errorf("sync %d..%d: %d %s", from, to, resp.StatusCode, body)
	}
	d.total = cnt.down.Load()
	d.breakdown.HTTPHeaders = cnt.headLen
	d.breakdown.Transfer = d.total - cnt.headLen - int64(len(body))
	if format == wire.DeltaFormat {
		if d.breakdown.PackBytes, err = wire.Breakdown(body); err != nil {
			return d, fmt.Errorf("sync %d..%d: %w", from, to, err)
		}
	}
	return d, nil
}
