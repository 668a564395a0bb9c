package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/gen"
)

// Tests of the client against a lying or hostile server (session 6's
// red team): whatever the server answers, an accepted edit is never lost.

// lyingPatchAnswer runs a push of two edits (a and b) against an answer
// the transport makes up, checks that the client refused it (ErrServer),
// kept both edits queued and visible, and that a sync with the real
// server afterwards delivers both.
func lyingPatchAnswer(t *testing.T, answer func(head uint64) string) {
	t.Helper()
	ts := newTestServer(t)
	head := ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`0`)}, {Key: "b", Value: []byte(`0`)}})
	ft := newFaultTransport()
	c := ts.client("ann", ft)
	ctx := context.Background()
	_, err := c.Pull(ctx)
	mustDo(t, err)
	mustDo(t, c.Put("a", []byte(`1`)))
	mustDo(t, c.Put("b", []byte(`2`)))
	ft.answer = func([]byte) string { return answer(head) }
	_, err = c.Push(ctx)
	if !errors.Is(err, ErrServer) {
		t.Fatalf("push against a lying answer: err = %v, want ErrServer", err)
	}
	if s := c.Status(); s.PendingEdits != 2 {
		t.Errorf("after the lying answer: %d edits pending, want 2", s.PendingEdits)
	}
	if got := get(t, c, "a") + get(t, c, "b"); got != "12" {
		t.Errorf("view after the lying answer: a+b = %s, want 12", got)
	}
	ft.answer = nil
	_, err = c.Sync(ctx)
	mustDo(t, err)
	if got, want := ts.export("ann"), `{"key":"a","value":1}`+"\n"+`{"key":"b","value":2}`+"\n"; got != want {
		t.Errorf("server after the honest sync:\n%s\nwant:\n%s", got, want)
	}
	if s := c.Status(); s.PendingEdits != 0 {
		t.Errorf("after the honest sync: %d edits pending", s.PendingEdits)
	}
}

// TestReceiptsForOtherEditsAreRefused: a 200 whose receipts name other
// keys (a proxy's cached answer to another request, a server bug) does
// not take the edits out of the queue: they were never applied.
func TestReceiptsForOtherEditsAreRefused(t *testing.T) {
	lyingPatchAnswer(t, func(head uint64) string {
		return fmt.Sprintf(`{"version":%d,"created":true,"receipts":[`+
			`{"index":0,"op":"put","key":"x","status":"applied"},`+
			`{"index":1,"op":"put","key":"y","status":"applied"}],"conflicts":[]}`, head+1)
	})
}

// TestReceiptsWithOtherOpsAreRefused: the keys match but the ops do not.
func TestReceiptsWithOtherOpsAreRefused(t *testing.T) {
	lyingPatchAnswer(t, func(head uint64) string {
		return fmt.Sprintf(`{"version":%d,"created":true,"receipts":[`+
			`{"index":0,"op":"delete","key":"a","status":"applied"},`+
			`{"index":1,"op":"delete","key":"b","status":"applied"}],"conflicts":[]}`, head+1)
	})
}

// TestReceiptVersionBehindTheBaseIsRefused: edits applied "in" a version
// older than the one the patch was based on cannot be true; believing it
// would take them out of the view at once (the synced version is newer).
func TestReceiptVersionBehindTheBaseIsRefused(t *testing.T) {
	lyingPatchAnswer(t, func(head uint64) string {
		return fmt.Sprintf(`{"version":%d,"created":true,"receipts":[`+
			`{"index":0,"op":"put","key":"a","status":"applied"},`+
			`{"index":1,"op":"put","key":"b","status":"applied"}],"conflicts":[]}`, head-1)
	})
}

// TestDuplicateReceiptsAreRefused: two receipts for one edit (and none
// for the other) are not an answer to this patch.
func TestDuplicateReceiptsAreRefused(t *testing.T) {
	lyingPatchAnswer(t, func(head uint64) string {
		return fmt.Sprintf(`{"version":%d,"created":true,"receipts":[`+
			`{"index":0,"op":"put","key":"a","status":"applied"},`+
			`{"index":0,"op":"put","key":"a","status":"applied"}],"conflicts":[]}`, head+1)
	})
}

// stallingTransport passes requests to base; the body of a /v1/sync
// answer stops after `after` bytes and sends nothing more until the
// request is cancelled (a server trickling nothing, a middlebox that
// keeps the connection open but lost the peer). Later answers pass.
type stallingTransport struct {
	base  http.RoundTripper
	path  string       // the answers to stall: paths with this prefix
	after atomic.Int64 // >0: stall the next such answer after that many bytes
}

func (s *stallingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.base.RoundTrip(req)
	if err != nil || !strings.HasPrefix(req.URL.Path, s.path) {
		return resp, err
	}
	if n := s.after.Swap(0); n > 0 {
		resp.Body = &stallBody{rc: resp.Body, left: n, done: req.Context().Done(), ctx: req.Context()}
	}
	return resp, nil
}

type stallBody struct {
	rc   io.ReadCloser
	left int64
	done <-chan struct{}
	ctx  context.Context
}

func (b *stallBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		<-b.done // as net/http does: a cancelled request ends the read
		return 0, b.ctx.Err()
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *stallBody) Close() error { return b.rc.Close() }

// TestStalledDownloadIsALostConnection: a sync answer that stops arriving
// midway (headers sent, then silence) does not hold the client forever:
// after RequestTimeoutMillis without a byte the pull fails as a lost
// connection (keeping what it verified), the network lock is released
// (pushes are not stuck behind it), and the next pull resumes and
// installs the version.
func TestStalledDownloadIsALostConnection(t *testing.T) {
	ts := newTestServer(t)
	recs := gen.Dataset(gen.Options{Size: 1 << 20, Seed: 6})
	ts.upload("ann", recs)
	st := &stallingTransport{base: http.DefaultTransport.(*http.Transport).Clone(), path: "/v1/sync"}
	st.after.Store(60 << 10)
	dir := t.TempDir()
	opts := DefaultOptions()
	opts.ServerURL, opts.Token = ts.url, ts.token("ann")
	opts.RequestTimeoutMillis = 1000
	opts.HTTPClient = &http.Client{Transport: st}
	c, err := Open(dir, opts)
	mustDo(t, err)
	defer func() { c.Close() }()

	done := make(chan error, 1)
	go func() {
		_, err := c.Pull(context.Background())
		done <- err
	}()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second): // guards against a hang only
		t.Fatal("a pull whose answer stalled never returned")
	}
	if !errors.Is(err, ErrNoConnection) {
		t.Fatalf("stalled pull: err = %v, want ErrNoConnection", err)
	}
	if s := c.Status(); s.State != StateOffline {
		t.Errorf("after the stall: state %q (%s), want offline", s.State, s.Message)
	}
	// Resumed by a new process with the default timeout (a second of
	// silence can happen on a loaded machine).
	mustDo(t, c.Close())
	c = ts.client("ann", nil, dir)
	res, err := c.Pull(context.Background())
	mustDo(t, err)
	if !res.Resumed {
		t.Errorf("second pull did not resume: %+v", res)
	}
	if got, want := exportOf(t, c), ts.export("ann"); got != want {
		t.Errorf("client after the resumed pull differs from the server")
	}
}

// TestStalledBlobDownloadIsALostConnection: as a stalled sync answer, a
// blob download that goes silent fails as a lost connection after
// RequestTimeoutMillis (it runs under the network lock during a sync, so
// a hang would stop pushes too), and the next try resumes it.
func TestStalledBlobDownloadIsALostConnection(t *testing.T) {
	ts := newTestServer(t)
	ts.setPolicy(`{"offline_mode":true,"eager_blob_bytes":1}`)
	data, ref := ts.attachAndSync("forms/1", 500_000)
	st := &stallingTransport{base: http.DefaultTransport.(*http.Transport).Clone(), path: "/v1/blobs/"}
	opts := DefaultOptions()
	opts.ServerURL, opts.Token = ts.url, ts.token("alice")
	opts.RequestTimeoutMillis = 1000
	opts.HTTPClient = &http.Client{Transport: st}
	dir := t.TempDir()
	c, err := Open(dir, opts)
	mustDo(t, err)
	defer func() { c.Close() }()
	st.after.Store(100 << 10)
	done := make(chan error, 1)
	go func() {
		_, err := c.Blob(context.Background(), ref.Blob)
		done <- err
	}()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second): // guards against a hang only
		t.Fatal("a blob download that stalled never returned")
	}
	if !errors.Is(err, ErrNoConnection) {
		t.Fatalf("stalled blob download: err = %v, want ErrNoConnection", err)
	}
	mustDo(t, c.Close())
	c = ts.client("alice", nil, dir)
	got, err := c.Blob(context.Background(), ref.Blob)
	mustDo(t, err)
	if !bytes.Equal(got, data) {
		t.Errorf("blob after the resumed download differs")
	}
}

// swallowTransport takes part of the body of the next blob upload
// (PATCH) and then reads no more of it and does not answer, as a server
// that stopped reading does (the client's writes block on a full window).
type swallowTransport struct {
	base  http.RoundTripper
	after atomic.Int64
}

func (s *swallowTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPatch || req.Body == nil {
		return s.base.RoundTrip(req)
	}
	if n := s.after.Swap(0); n > 0 {
		io.CopyN(io.Discard, req.Body, n)
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	return s.base.RoundTrip(req)
}

// TestStalledBlobUploadIsALostConnection: a blob upload the server stops
// taking fails as a lost connection after RequestTimeoutMillis without
// progress (it runs under the network lock, before the patch), the edit
// stays queued, and the next push (a new process here) delivers both.
func TestStalledBlobUploadIsALostConnection(t *testing.T) {
	ts := newTestServer(t)
	sw := &swallowTransport{base: http.DefaultTransport.(*http.Transport).Clone()}
	opts := DefaultOptions()
	opts.ServerURL, opts.Token = ts.url, ts.token("ann")
	opts.RequestTimeoutMillis = 1000
	opts.HTTPClient = &http.Client{Transport: sw}
	dir := t.TempDir()
	c, err := Open(dir, opts)
	mustDo(t, err)
	defer func() { c.Close() }()
	data := make([]byte, 600_000)
	rng := rand.NewChaCha8([32]byte{6})
	rng.Read(data)
	ref, err := c.Attach(data, "")
	mustDo(t, err)
	mustDo(t, c.Put("forms/1", []byte(fmt.Sprintf(`{"file":{"$blob":%q}}`, ref.Blob))))
	sw.after.Store(100 << 10)
	done := make(chan error, 1)
	go func() {
		_, err := c.Push(context.Background())
		done <- err
	}()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second): // guards against a hang only
		t.Fatal("a push whose blob upload stalled never returned")
	}
	if !errors.Is(err, ErrNoConnection) {
		t.Fatalf("stalled blob upload: err = %v, want ErrNoConnection", err)
	}
	if s := c.Status(); s.PendingEdits != 1 || s.PendingBlobs != 1 {
		t.Errorf("after the stalled upload: %d edits, %d blobs pending, want 1 and 1", s.PendingEdits, s.PendingBlobs)
	}
	mustDo(t, c.Close())
	c = ts.client("ann", nil, dir)
	_, err = c.Sync(context.Background())
	mustDo(t, err)
	if !strings.Contains(ts.export("ann"), ref.Blob) {
		t.Errorf("server after the second push:\n%s", ts.export("ann"))
	}
	b := ts.client("ann", nil)
	_, err = b.Sync(context.Background())
	mustDo(t, err)
	got, err := b.Blob(context.Background(), ref.Blob)
	mustDo(t, err)
	if !bytes.Equal(got, data) {
		t.Errorf("the blob another device fetches differs from the one attached")
	}
}

// rewriteTransport lets a test change a /v1/sync request before it goes
// out (another user's token, another version): a server, or something
// between, that answers another question than the client asked.
type rewriteTransport struct {
	base    http.RoundTripper
	rewrite atomic.Pointer[func(*http.Request)]
}

func (r *rewriteTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if fn := r.rewrite.Load(); fn != nil && req.URL.Path == "/v1/sync" {
		req = req.Clone(req.Context())
		(*fn)(req)
	}
	return r.base.RoundTrip(req)
}

func (r *rewriteTransport) set(fn func(*http.Request)) { r.rewrite.Store(&fn) }

// TestFullAnswerForAnOlderVersionIsRefused: asked for what follows
// version 2, the server answers a full pack of version 1 (a rollback, a
// replica restored from an old backup). The client keeps version 2.
func TestFullAnswerForAnOlderVersionIsRefused(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`1`)}})
	ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`2`)}})
	rt := &rewriteTransport{base: http.DefaultTransport.(*http.Transport).Clone()}
	c := ts.client("ann", rt)
	ctx := context.Background()
	res, err := c.Pull(ctx)
	mustDo(t, err)
	if res.Version != 2 {
		t.Fatalf("pulled version %d, want 2", res.Version)
	}
	rt.set(func(req *http.Request) { req.URL.RawQuery = "from=0&to=1&format=3" })
	_, err = c.Pull(ctx)
	if !errors.Is(err, ErrServer) {
		t.Errorf("pull answered with version 1: err = %v, want ErrServer", err)
	}
	if got := get(t, c, "a"); got != "2" {
		t.Errorf("after the rollback answer: a = %s, want 2", got)
	}
	if s := c.Status(); s.LocalVersion != 2 {
		t.Errorf("after the rollback answer: version %d, want 2", s.LocalVersion)
	}
}

// TestFullAnswerForAnotherUserIsRefused: the data set installed is ann's;
// an answer carrying bob's data set (a server or proxy mixing up users)
// is refused, and ann's data stays.
func TestFullAnswerForAnotherUserIsRefused(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`"ann"`)}})
	ts.upload("bob", []gen.Record{{Key: "a", Value: []byte(`"bob"`)}, {Key: "b", Value: []byte(`"bob"`)}})
	ts.upload("bob", []gen.Record{{Key: "a", Value: []byte(`"bob2"`)}})
	rt := &rewriteTransport{base: http.DefaultTransport.(*http.Transport).Clone()}
	c := ts.client("ann", rt)
	ctx := context.Background()
	_, err := c.Pull(ctx)
	mustDo(t, err)
	bob := ts.token("bob")
	rt.set(func(req *http.Request) {
		req.Header.Set("Authorization", "Bearer "+bob)
		req.URL.RawQuery = "from=0&format=3"
	})
	_, err = c.Pull(ctx)
	if !errors.Is(err, ErrServer) {
		t.Errorf("pull answered with bob's data: err = %v, want ErrServer", err)
	}
	if got := get(t, c, "a"); got != `"ann"` {
		t.Errorf("after bob's answer: a = %s, want \"ann\"", got)
	}
}

// gateTransport holds the body of the next /v1/sync answer after `after`
// bytes until release is closed.
type gateTransport struct {
	base    http.RoundTripper
	after   atomic.Int64
	held    chan struct{} // closed when the body reached the gate
	release chan struct{}
}

func (g *gateTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := g.base.RoundTrip(req)
	if err != nil || req.URL.Path != "/v1/sync" {
		return resp, err
	}
	if n := g.after.Swap(0); n > 0 {
		resp.Body = &gateBody{rc: resp.Body, left: n, g: g}
	}
	return resp, nil
}

type gateBody struct {
	rc   io.ReadCloser
	left int64
	g    *gateTransport
	once bool
}

func (b *gateBody) Read(p []byte) (int, error) {
	if b.left == 0 && !b.once {
		b.once = true
		close(b.g.held)
		<-b.g.release
	}
	if b.left > 0 && int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	if b.left > 0 {
		b.left -= int64(n)
	}
	return n, err
}

func (b *gateBody) Close() error { return b.rc.Close() }

// TestCloseDuringPull: the app closes the client while a download is
// half done. The pull fails (it does not crash the process), the edits
// queued before stay, and a new client on the directory completes the
// version and sends them.
func TestCloseDuringPull(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", gen.Dataset(gen.Options{Size: 1 << 20, Seed: 7}))
	g := &gateTransport{base: http.DefaultTransport.(*http.Transport).Clone(),
		held: make(chan struct{}), release: make(chan struct{})}
	g.after.Store(100 << 10)
	dir := t.TempDir()
	c := ts.client("ann", g, dir)
	mustDo(t, c.Put("mine", []byte(`"kept"`)))
	done := make(chan error, 1)
	go func() {
		_, err := c.Pull(context.Background())
		done <- err
	}()
	<-g.held
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	// Close may wait for the pull or not; either way, let the pull go on.
	select {
	case err := <-closed:
		mustDo(t, err)
		close(g.release)
	case <-time.After(200 * time.Millisecond):
		close(g.release)
		mustDo(t, <-closed)
	}
	err := <-done
	t.Logf("pull interrupted by Close: %v", err)

	c2 := ts.client("ann", nil, dir)
	_, err = c2.Sync(context.Background())
	mustDo(t, err)
	if got, want := exportOf(t, c2), ts.export("ann"); got != want {
		t.Errorf("after reopening: client and server differ")
	}
	if got := get(t, c2, "mine"); got != `"kept"` {
		t.Errorf("edit queued before Close: mine = %s", got)
	}
}

// TestStorageFailureIsNotAServerError: a pull or push that fails because
// this device's storage does (a full disk: bbolt's write returns ENOSPC)
// is reported as error/storage, not as a server error: the user must free
// space, the server is fine. (TestProbeDiskFull shows it on a real full
// disk.)
func TestStorageFailureIsNotAServerError(t *testing.T) {
	c := openTest(t, t.TempDir())
	full := fmt.Errorf("sync: store chunks: %w", &os.PathError{Op: "write", Path: "data.next.db", Err: syscall.ENOSPC})
	c.outcome(full, 1)
	s := c.Status()
	if s.State != StateError || s.Reason != ReasonStorage || !strings.Contains(s.Message, "no space left") {
		t.Errorf("after a full disk: %s/%s %q, want error/%s", s.State, s.Reason, s.Message, ReasonStorage)
	}
	c.outcome(nil, 0)
	if s := c.Status(); s.State != StateSynced {
		t.Errorf("after a successful sync: %s/%s", s.State, s.Reason)
	}
}

// TestEmptyAnswerKeepsThePatchID: the answer to a patch the server did
// apply is lost; the retry gets a 200 without a single receipt (a proxy
// or a redirect answering for the server). That is no answer: the patch
// keeps its id, so the next push gets the server's stored answer instead
// of applying the edits a second time under a new id (which the server
// would see as the device conflicting with itself).
func TestEmptyAnswerKeepsThePatchID(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "n", Value: []byte(`{"v":0}`)}})
	ft := newFaultTransport()
	c := ts.client("ann", ft)
	ctx := context.Background()
	_, err := c.Pull(ctx)
	mustDo(t, err)
	head := ts.head("ann")
	mustDo(t, c.Merge("n", []byte(`{"v":1}`)))
	ft.loseAnswer.Store(true)
	if _, err := c.Push(ctx); !errors.Is(err, ErrNoConnection) {
		t.Fatalf("push with a lost answer: %v, want ErrNoConnection", err)
	}
	ft.answer = func([]byte) string { return fmt.Sprintf(`{"version":%d}`, head+1) }
	if _, err := c.Push(ctx); !errors.Is(err, ErrServer) {
		t.Fatalf("push answered without receipts: %v, want ErrServer", err)
	}
	ft.answer = nil
	_, err = c.Sync(ctx)
	mustDo(t, err)
	ft.mu.Lock()
	posts := slices.Clone(ft.posts)
	ft.mu.Unlock()
	ids := make([]string, len(posts))
	for i, p := range posts {
		var b struct {
			ID string `json:"id"`
		}
		mustDo(t, json.Unmarshal([]byte(p), &b))
		ids[i] = b.ID
	}
	if len(ids) != 3 || ids[1] != ids[0] || ids[2] != ids[0] {
		t.Errorf("patch ids sent: %v, want one id three times", ids)
	}
	if got := ts.head("ann"); got != head+1 {
		t.Errorf("server head %d, want %d: the edit was applied once", got, head+1)
	}
	if s := c.Status(); s.Conflicts != 0 || s.PendingEdits != 0 {
		t.Errorf("after the sync: %d conflicts, %d pending, want none", s.Conflicts, s.PendingEdits)
	}
}

// TestRedirectToAnotherHostIsRefused: the server (or something claiming
// its address) answers a patch with a redirect to another host. The
// default client does not follow it: the edits must not go to a host the
// app did not configure, nor its answer take them out of the queue.
func TestRedirectToAnotherHostIsRefused(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`0`)}})
	var stolen atomic.Int64
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stolen.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"version":99,"receipts":[{"index":0,"op":"put","key":"a","status":"applied"}]}`)
	}))
	defer evil.Close()
	target, err := url.Parse(ts.url)
	mustDo(t, err)
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/patches" {
			http.Redirect(w, r, evil.URL+r.URL.Path, http.StatusTemporaryRedirect)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	c := ts.client("ann", nil)
	mustDo(t, c.SetServer(front.URL, ts.token("ann")))
	ctx := context.Background()
	_, err = c.Pull(ctx)
	mustDo(t, err)
	mustDo(t, c.Put("a", []byte(`1`)))
	_, err = c.Push(ctx)
	if err == nil || !strings.Contains(err.Error(), "redirect to "+evil.URL) {
		t.Errorf("push redirected to another host: err = %v, want the redirect refused", err)
	}
	if n := stolen.Load(); n != 0 {
		t.Errorf("the other host got %d requests", n)
	}
	if s := c.Status(); s.PendingEdits != 1 {
		t.Errorf("after the redirect: %d edits pending, want 1", s.PendingEdits)
	}
	mustDo(t, c.SetServer(ts.url, ts.token("ann")))
	_, err = c.Sync(ctx)
	mustDo(t, err)
	if got := ts.export("ann"); got != `{"key":"a","value":1}`+"\n" {
		t.Errorf("server after the sync: %s", got)
	}
}

// TestClockAheadDoesNotAskForATokenEveryRequest: a phone whose clock is
// weeks ahead sees every token the app's provider hands over as expired.
// The client asked the provider again before every request (a sign-in
// round trip each time, and an auth error whenever the provider could
// not be reached) although the server accepted the token. A token that
// is due by this device's clock the moment it arrives is kept for its
// lifetime (exp - iat) counted from then; a 401 still replaces it.
func TestClockAheadDoesNotAskForATokenEveryRequest(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`1`)}})
	src := &tokenSource{tokens: []string{ts.tokenFor("ann", time.Hour)}}
	c := providerClient(t, ts, t.TempDir(), src, nil)
	clock := useClock(c)
	clock.t = time.Now().Add(30 * 24 * time.Hour)
	for i := 0; i < 3; i++ {
		_, err := c.Sync(context.Background())
		mustDo(t, err)
	}
	if n := src.callCount(); n != 1 {
		t.Errorf("provider asked %d times for 3 syncs, want once", n)
	}
	clock.add(59*time.Minute + 30*time.Second) // within the margin of the token's lifetime
	_, err := c.Sync(context.Background())
	mustDo(t, err)
	if n := src.callCount(); n != 2 {
		t.Errorf("provider asked %d times after the token's lifetime, want 2", n)
	}
}

// TestPartialReceiptsAreRefused: an answer with receipts for some of the
// patch's edits only (cut short by something between, or a server bug)
// is not the server's answer, which has one receipt per op. Believing it
// would send the others again under a new id, applying them twice if the
// server had applied the whole patch.
func TestPartialReceiptsAreRefused(t *testing.T) {
	lyingPatchAnswer(t, func(head uint64) string {
		return fmt.Sprintf(`{"version":%d,"created":true,"receipts":[`+
			`{"index":0,"op":"put","key":"a","status":"applied"}],"conflicts":[]}`, head+1)
	})
}

// conflictOnce answers the next POST /v1/patches with a bare 409 (no
// receipts, no error code: something between the client and the server)
// without sending it on.
type conflictOnce struct {
	base http.RoundTripper
	next atomic.Bool
}

func (c *conflictOnce) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPost && req.URL.Path == "/v1/patches" && c.next.CompareAndSwap(true, false) {
		return &http.Response{StatusCode: http.StatusConflict, Header: http.Header{"Content-Type": {"text/plain"}},
			Body: io.NopCloser(strings.NewReader("conflict")), Request: req}, nil
	}
	return c.base.RoundTrip(req)
}

// TestBare409KeepsThePatchID: the answer to an applied patch is lost and
// the retry meets a 409 that is not the server's (no receipts, no error
// code). Only the server's own "this id is taken" (code conflict) or
// "a blob is missing" ends the patch; anything else leaves it in flight,
// so the next push gets the stored answer instead of applying the edit
// again under a new id.
func TestBare409KeepsThePatchID(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "n", Value: []byte(`{"v":0}`)}})
	ft := newFaultTransport()
	co := &conflictOnce{base: ft}
	c := ts.client("ann", co)
	ctx := context.Background()
	_, err := c.Pull(ctx)
	mustDo(t, err)
	mustDo(t, c.Merge("n", []byte(`{"v":1}`)))
	ft.loseAnswer.Store(true)
	if _, err := c.Push(ctx); !errors.Is(err, ErrNoConnection) {
		t.Fatalf("push with a lost answer: %v, want ErrNoConnection", err)
	}
	co.next.Store(true)
	if _, err := c.Push(ctx); err == nil {
		t.Fatal("push answered 409: no error")
	}
	_, err = c.Sync(ctx)
	mustDo(t, err)
	ft.mu.Lock()
	posts := slices.Clone(ft.posts)
	ft.mu.Unlock()
	var ids []string
	for _, p := range posts {
		var b struct {
			ID string `json:"id"`
		}
		mustDo(t, json.Unmarshal([]byte(p), &b))
		ids = append(ids, b.ID)
	}
	if len(ids) != 2 || ids[1] != ids[0] {
		t.Errorf("patch ids that reached the server: %v, want one id twice", ids)
	}
	if s := c.Status(); s.PendingEdits != 0 || s.Conflicts != 0 {
		t.Errorf("after the sync: %d pending, %d conflicts", s.PendingEdits, s.Conflicts)
	}
}

// bigWindowTransport answers every blob download with a small zstd body
// whose frame header claims a 64 MiB window.
type bigWindowTransport struct{ base http.RoundTripper }

func (b bigWindowTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet || !strings.HasPrefix(req.URL.Path, "/v1/blobs/") {
		return b.base.RoundTrip(req)
	}
	f := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 16 << 3} // window 2^26
	for i := range 16 {
		h := uint32(128<<10)<<3 | 1<<1 // RLE block of 128 KiB
		if i == 15 {
			h |= 1
		}
		f = append(f, byte(h), byte(h>>8), byte(h>>16), 'x')
	}
	return &http.Response{StatusCode: 200, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Request: req,
		Header: http.Header{"Content-Encoding": {"zstd"}}, Body: io.NopCloser(bytes.NewReader(f)), ContentLength: int64(len(f))}, nil
}

// TestBlobDownloadCannotClaimABigWindow: a blob answer is decoded as a
// stream, whose decoder allocates the window its frame claims; a 70-byte
// answer claiming 64 MiB is refused before the phone allocates it.
func TestBlobDownloadCannotClaimABigWindow(t *testing.T) {
	ts := newTestServer(t)
	ts.setPolicy(`{"offline_mode":true,"eager_blob_bytes":1}`)
	_, ref := ts.attachAndSync("forms/1", 50_000)
	opts := DefaultOptions()
	opts.ServerURL, opts.Token = ts.url, ts.token("alice")
	opts.HTTPClient = &http.Client{Transport: bigWindowTransport{base: http.DefaultTransport}}
	c, err := Open(t.TempDir(), opts)
	mustDo(t, err)
	defer c.Close()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	_, err = c.Blob(context.Background(), ref.Blob)
	runtime.ReadMemStats(&m1)
	if err == nil {
		t.Fatal("a blob answer of RLE blocks was taken")
	}
	if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 24<<20 {
		t.Errorf("a 70-byte blob answer claiming a 64 MiB window allocated %d MiB (%v)", alloc>>20, err)
	}
}
