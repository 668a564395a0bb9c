package client

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// Faults the proxy injects, one per request.
const (
	faultNone        = "pass"
	faultDelay       = "delay"          // wait, then pass
	faultCutRequest  = "cut-request"    // forward part of the request, then drop both connections
	faultCutResponse = "cut-response"   // forward part of the response, then drop the connection
	faultTruncate    = "truncate"       // a well-framed answer whose body is cut short
	fault502         = "502"            // the proxy answers 502 itself
	fault503         = "503"            // the proxy answers 503 itself
	faultCutPack     = "truncate-pack"  // faultTruncate on a delta pack (counted apart)
	faultCutAnswer   = "truncate-reply" // faultTruncate on a patch answer (counted apart)
)

// faultProxy is a TCP proxy on loopback between a client and a server that
// understands HTTP/1.1 framing, so that it can break each request in a
// chosen way: drop the connection partway through the request or the
// response, delay, answer 502/503 itself, or send a response whose body is
// cut short but framed as complete (Content-Length of the shorter body), so
// the client's HTTP layer sees no error and only the payload's own checks
// (the delta pack's end mark and chunk IDs, the JSON) can tell.
//
// The first delta pack and the first two patch answers are always broken
// (truncated, then cut), so every run covers a truncated zstd stream and a
// patch applied by the server whose answer never arrived; after that the
// faults are drawn from a seeded PRNG, so a run's mix is reproducible even
// if the order requests arrive in is not.
type faultProxy struct {
	t        *testing.T
	ln       net.Listener
	upstream string

	mu      sync.Mutex
	rng     *rand.Rand
	counts  map[string]int
	packs   int // delta packs seen
	answers int // patch answers seen
	conns   map[net.Conn]bool
	closed  bool
	wg      sync.WaitGroup
}

func newFaultProxy(t *testing.T, upstreamURL string, seed uint64) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{
		t: t, ln: ln, upstream: strings.TrimPrefix(upstreamURL, "http://"),
		rng: rand.New(rand.NewPCG(seed, 1)), counts: map[string]int{}, conns: map[net.Conn]bool{},
	}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *faultProxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			p.serve(c)
		}()
	}
}

func (p *faultProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = true
	return true
}

func (p *faultProxy) untrack(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// close stops the proxy and waits for its goroutines.
func (p *faultProxy) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// pick draws the fault for one request (before its answer is known).
func (p *faultProxy) pick() (string, *rand.Rand) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Each request gets its own generator seeded from the shared one, so
	// the draws of one request do not depend on other requests' timing.
	r := rand.New(rand.NewPCG(p.rng.Uint64(), p.rng.Uint64()))
	switch n := r.IntN(100); {
	case n < 40:
		return faultNone, r
	case n < 55:
		return faultDelay, r
	case n < 63:
		return faultCutRequest, r
	case n < 73:
		return faultCutResponse, r
	case n < 78:
		return fault502, r
	case n < 83:
		return fault503, r
	default:
		return faultTruncate, r
	}
}

// forced returns the fault the first answers of a kind always get.
func (p *faultProxy) forced(req *http.Request, resp *http.Response) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case ct == wire.ContentTypeDelta:
		p.packs++
		if p.packs == 1 {
			return faultTruncate
		}
	case req.Method == http.MethodPost && resp.StatusCode == http.StatusOK:
		p.answers++
		switch p.answers {
		case 1:
			return faultCutResponse // applied, answer lost
		case 2:
			return faultTruncate
		}
	}
	return ""
}

func (p *faultProxy) count(fault string) {
	p.mu.Lock()
	p.counts[fault]++
	p.mu.Unlock()
}

// serve relays the requests of one client connection, breaking some.
func (p *faultProxy) serve(c net.Conn) {
	br := bufio.NewReader(c)
	var up net.Conn
	var upr *bufio.Reader
	defer func() {
		if up != nil {
			up.Close()
		}
	}()
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		fault, r := p.pick()
		switch fault {
		case fault502, fault503:
			p.count(fault)
			code := http.StatusBadGateway
			if fault == fault503 {
				code = http.StatusServiceUnavailable
			}
			msg := fmt.Sprintf(`{"error":{"code":"proxy","message":"injected %d"}}`, code)
			fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
				code, http.StatusText(code), len(msg), msg)
			return
		case faultDelay:
			time.Sleep(time.Duration(r.IntN(20_000)) * time.Microsecond)
		}
		if up == nil {
			if up, err = net.Dial("tcp", p.upstream); err != nil {
				return
			}
			p.track(up)
			defer p.untrack(up)
			upr = bufio.NewReader(up)
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
		var raw bytes.Buffer
		if err := req.Write(&raw); err != nil {
			return
		}
		if fault == faultCutRequest {
			p.count(fault)
			up.Write(raw.Bytes()[:r.IntN(raw.Len())])
			return
		}
		if _, err := up.Write(raw.Bytes()); err != nil {
			return
		}
		resp, err := http.ReadResponse(upr, req)
		if err != nil {
			return
		}
		if f := p.forced(req, resp); f != "" {
			fault = f
		}
		if fault != faultCutResponse && fault != faultTruncate {
			p.count(fault)
			err := resp.Write(c)
			resp.Body.Close()
			if err != nil || resp.Close || req.Close {
				return
			}
			continue
		}
		rbody, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || len(rbody) == 0 {
			return
		}
		ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		switch {
		case fault == faultTruncate && ct == wire.ContentTypeDelta:
			p.count(faultCutPack)
		case fault == faultTruncate && req.Method == http.MethodPost:
			p.count(faultCutAnswer)
		default:
			p.count(fault)
		}
		if fault == faultTruncate {
			cut := rbody[:r.IntN(len(rbody))]
			resp.Body = io.NopCloser(bytes.NewReader(cut))
			resp.ContentLength = int64(len(cut))
			resp.TransferEncoding = nil
			resp.Header.Del("Content-Length")
			resp.Close = true
			resp.Write(c)
			return
		}
		resp.Body = io.NopCloser(bytes.NewReader(rbody))
		var out bytes.Buffer
		resp.Write(&out)
		c.Write(out.Bytes()[:r.IntN(out.Len())])
		return
	}
}

// The network-faults acceptance of issue 5: between the client and the
// server sits a proxy that drops connections partway through requests and
// responses, delays, answers 502/503, and truncates bodies (delta packs
// among them). The client's background loop keeps pushing a queue of
// edits and pulling another device's changes; in the end it holds the
// server's newest version byte for byte, and every patch was applied once.
//
// DELTASYNC_FAULT_SEED picks another random sequence.
func TestNetworkFaults(t *testing.T) {
	seed := uint64(7)
	if s := os.Getenv("DELTASYNC_FAULT_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("DELTASYNC_FAULT_SEED: %v", err)
		}
	}
	ts := newTestServer(t)
	recs := gen.Dataset(gen.Options{Size: 512 << 10, Seed: 31})
	ts.upload("ann", recs)
	// Keys are split between the two devices, so that no edit conflicts
	// and each edit's fate is read off the change sets. This device merges
	// into some records and deletes others: a delete of a record it merged
	// into, sent in a later patch before the merge was pulled, would meet
	// its own merge as a server change and be reported as a conflict.
	var merged, deleted, theirs []string
	for i, r := range recs {
		if r.Value[0] != '{' {
			continue // merges need objects
		}
		switch i % 3 {
		case 0:
			merged = append(merged, r.Key)
		case 1:
			deleted = append(deleted, r.Key)
		default:
			theirs = append(theirs, r.Key)
		}
	}
	proxy := newFaultProxy(t, ts.url, seed)

	opts := DefaultOptions()
	opts.ServerURL, opts.Token = proxy.url(), ts.token("ann")
	opts.RetryMinMillis, opts.RetryMaxMillis = 2, 20
	opts.LongPollSeconds = 1
	opts.RequestTimeoutMillis = 10_000
	c, err := Open(t.TempDir(), opts)
	mustDo(t, err)
	t.Cleanup(func() { c.Close() })
	other := ts.client("ann", nil) // another device, straight to the server
	ctx := context.Background()
	_, err = other.Pull(ctx)
	mustDo(t, err)

	log := watch(c)
	mustDo(t, c.Start(ctx))
	defer c.Stop()
	log.waitFor(t, c, "the first sync through the proxy", func(s Status) bool { return s.LocalVersion > 0 })

	rng := rand.New(rand.NewPCG(seed, 2))
	var edits []string // what this device did, by edit name
	const rounds, perRound = 16, 6
	for round := 0; round < rounds; round++ {
		for i := 0; i < perRound; i++ {
			n := round*perRound + i
			switch i % 3 {
			case 0:
				key := fmt.Sprintf("notes/%03d", n)
				mustDo(t, c.Put(key, []byte(fmt.Sprintf(`{"n":%d,"text":"written through a bad network"}`, n))))
				edits = append(edits, "put "+key)
			case 1:
				key := merged[rng.IntN(len(merged))]
				field := fmt.Sprintf("seen%03d", n)
				mustDo(t, c.Merge(key, []byte(fmt.Sprintf(`{%q:true}`, field))))
				edits = append(edits, "merge "+key+" "+field)
			case 2:
				key := deleted[0]
				deleted = deleted[1:]
				mustDo(t, c.Delete(key))
				edits = append(edits, "delete "+key)
			}
		}
		// Meanwhile another device changes its own records.
		for i := 0; i < 3; i++ {
			key := theirs[rng.IntN(len(theirs))]
			mustDo(t, other.Merge(key, []byte(fmt.Sprintf(`{"other_%d_%d":"x"}`, round, i))))
		}
		_, err := other.Sync(ctx)
		mustDo(t, err)
		log.waitFor(t, c, fmt.Sprintf("round %d pushed", round), func(s Status) bool { return s.PendingEdits == 0 })
	}
	head := ts.head("ann")
	log.waitFor(t, c, "the server's head", func(s Status) bool {
		return s.State == StateSynced && s.PendingEdits == 0 && s.LocalVersion == head
	})
	c.Stop()
	proxy.close()

	if got, want := exportOf(t, c), ts.export("ann"); got != want {
		t.Errorf("client records (%d bytes) differ from the server's version %d (%d bytes)", len(got), head, len(want))
	}
	if cs, err := c.Conflicts(); err != nil || len(cs) != 0 {
		t.Errorf("conflicts %+v, %v; the devices edit different records", cs, err)
	}

	// Every patch applied once: one version per patch id, and each edit of
	// this device in exactly one of them.
	applied := map[string][]uint64{}
	ids := map[string]uint64{}
	for v := uint64(2); v <= head; v++ {
		m, err := snapshot.ReadManifestHeader(ctx, ts.store, testOrg, "ann", v)
		mustDo(t, err)
		cs, err := diff.ReadChangeSet(ctx, ts.store, m)
		mustDo(t, err)
		if cs.Kind != diff.KindPatch || cs.Patch == nil {
			t.Fatalf("version %d is a %s, not a patch", v, cs.Kind)
		}
		if first, dup := ids[cs.Patch.ID]; dup {
			t.Fatalf("patch %s applied twice: versions %d and %d", cs.Patch.ID, first, v)
		}
		ids[cs.Patch.ID] = v
		for i, op := range cs.Patch.Ops {
			if r := cs.Receipts[i]; r.Index != i || (r.Status != diff.StatusApplied && r.Status != diff.StatusMerged) {
				t.Errorf("version %d op %d: receipt %+v", v, i, r)
			}
			name := op.Op + " " + op.Key
			if op.Op == diff.OpMerge {
				name += " " + strings.Trim(strings.SplitN(string(op.Patch), ":", 2)[0], `{"`)
			}
			applied[name] = append(applied[name], v)
		}
	}
	for _, e := range edits {
		if vs := applied[e]; len(vs) != 1 {
			t.Errorf("%s applied in versions %v, want exactly one", e, vs)
		}
	}
	proxy.mu.Lock()
	counts := proxy.counts
	proxy.mu.Unlock()
	t.Logf("seed %d: %d versions from %d patches (%d edits of this device); proxy: %v; states %v",
		seed, head, len(ids), len(edits), counts, compact(log.states()))
	for _, f := range []string{faultCutPack, faultCutAnswer, faultCutResponse} {
		if counts[f] == 0 {
			t.Errorf("the proxy never injected %s", f)
		}
	}
}

// compact shortens a long state list for the log.
func compact(states []string) string {
	if len(states) <= 12 {
		return strings.Join(states, " ")
	}
	return strings.Join(slices.Concat(states[:6], []string{"…"}, states[len(states)-6:]), " ")
}
