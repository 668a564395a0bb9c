package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/snapshot/storetest"
	"github.com/deltasync/deltasync/wire"
)

// This file holds the probes of session 6's red team (issue 16): what a
// hostile but authenticated client could make a running server spend or
// do, each pinned by the test that showed it.

// TestPatchOfManyMergesOnABigRecordIsCheap: a patch of many tiny merges on
// one big record must cost about what one merge does, not one encoding of
// the whole record per merge (10,000 merges on a 16 MiB record cost hours
// of CPU). Measured in bytes the server allocates, against a patch of one
// merge on the same record.
func TestPatchOfManyMergesOnABigRecordIsCheap(t *testing.T) {
	e := newTestEnv(t, envConfig{})
	e.enableOrg("acme")
	big := gen.WideObject(20_000) // about 300 KB
	e.upload("acme", "alice", []gen.Record{{Key: "big", Value: big}})
	tok := userToken(t, "acme", "alice")

	patch := func(id string, base, merges int) uint64 {
		ops := make([]string, merges)
		for i := range ops {
			ops[i] = fmt.Sprintf(`{"op":"merge","key":"big","patch":{"m%s%d":%d}}`, id, i, i)
		}
		body := fmt.Sprintf(`{"id":%q,"base":%d,"ops":[%s]}`, id, base, strings.Join(ops, ","))
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r := e.do("POST", "/v1/patches", []byte(body), withToken(tok))
		runtime.ReadMemStats(&after)
		if r.status != 200 || !strings.Contains(string(r.body), `"applied"`) {
			t.Fatalf("patch %s: %d %s", id, r.status, r.body)
		}
		return after.TotalAlloc - before.TotalAlloc
	}
	one := patch("one", 1, 1)
	many := patch("many", 2, 300)
	if many > 3*one {
		t.Errorf("a patch of 300 merges on a %d-byte record allocated %d bytes, one merge %d: want at most 3 times",
			len(big), many, one)
	}
}

// TestManyConflictingEditsOfABigRecordCarryItsValuesOnce: the ops of one
// patch on one key that conflict share both sides' values, which their
// answer (and the stored answer and the change set) carries once, not once
// per op: 10,000 conflicting merges on a 16 MiB record made each of the
// three 320 GB (the server runs out of memory), and even ten of them make
// an answer over what a client reads (its patch stuck for ever).
func TestManyConflictingEditsOfABigRecordCarryItsValuesOnce(t *testing.T) {
	e := newTestEnv(t, envConfig{})
	e.client.MaxResponseBodySize = 1 << 30 // the old answer, to measure it
	e.enableOrg("acme")
	big := gen.WideObject(20_000)
	e.upload("acme", "alice", []gen.Record{{Key: "big", Value: big}})
	tok := userToken(t, "acme", "alice")
	if r := e.do("POST", "/v1/patches", []byte(`{"id":"srv","base":1,"ops":[{"op":"merge","key":"big","patch":{"f000000":"server"}}]}`),
		withToken(tok)); r.status != 200 {
		t.Fatalf("first patch: %d %s", r.status, r.body)
	}
	const n = 100
	ops := make([]string, n)
	for i := range ops {
		ops[i] = fmt.Sprintf(`{"op":"merge","key":"big","patch":{"f000000":"client %d"}}`, i)
	}
	r := e.do("POST", "/v1/patches", fmt.Appendf(nil, `{"id":"dev","base":1,"ops":[%s]}`, strings.Join(ops, ",")), withToken(tok))
	if r.status != 200 {
		t.Fatalf("conflicting patch: %d %.300s", r.status, r.body)
	}
	var pr wire.PatchResponse
	if err := json.Unmarshal(r.body, &pr); err != nil {
		t.Fatal(err)
	}
	if len(pr.Receipts) != n {
		t.Fatalf("%d receipts, want %d", len(pr.Receipts), n)
	}
	for i, rc := range pr.Receipts {
		if rc.Status != diff.StatusConflict {
			t.Fatalf("receipt %d: %+v, want a conflict", i, rc)
		}
	}
	last := pr.Receipts[n-1]
	if !strings.Contains(string(last.ClientValue), `"client 99"`) || !strings.Contains(string(last.ServerValue), `"server"`) {
		t.Errorf("the key's last receipt lacks the two sides: client %.80s server %.80s", last.ClientValue, last.ServerValue)
	}
	if most := 5 * len(big); len(r.body) > most { // both sides, in the receipts and the conflicts
		t.Errorf("answer of %d bytes to %d conflicting edits of a %d-byte record, want at most %d", len(r.body), n, len(big), most)
	}
}

// TestFragmentedUploadIsRestartedNotListedForEver: every PATCH of an
// upload lists its parts, and a PATCH of one byte stores a part of one
// byte, so an upload sent a byte at a time cost a LIST of all its parts
// (and memory for them) per request, quadratic in the bytes sent, and
// one object per byte. An upload has at most as many parts as its length
// needs plus maxUploadBreaks (for connections that broke); a PATCH past
// that is refused (409) and storing nothing, and creating the upload again
// starts it over.
func TestFragmentedUploadIsRestartedNotListedForEver(t *testing.T) {
	e, tok := blobEnv(t, nil)
	b, hexd := blobOf(t, 4<<10) // one part of 64 KiB
	if r := e.createUpload(tok, hexd, len(b)); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	most := 1 + maxUploadBreaks
	off := 0
	for ; off < most; off++ {
		if r := e.patchUpload(tok, hexd, off, b[off:off+1]); r.status != 204 {
			t.Fatalf("PATCH of byte %d: %d %s", off, r.status, r.body)
		}
	}
	r := e.patchUpload(tok, hexd, off, b[off:off+1])
	if r.status != 409 || !strings.Contains(r.errBody(t).Message, "start it over") {
		t.Fatalf("PATCH past %d parts: %d %s, want 409", most, r.status, r.body)
	}
	if n := countObjects(t, e, snapshot.BlobUploadPrefix("acme", "alice", hexd)); n > most+1 { // the parts and the info
		t.Errorf("%d objects under the upload, want at most %d", n, most+1)
	}
	r = e.createUpload(tok, hexd, len(b))
	if r.status != 201 || r.header[wire.HeaderUploadOffset] != "0" {
		t.Fatalf("create again: %d %v %s, want 201 at offset 0", r.status, r.header, r.body)
	}
	if r := e.patchUpload(tok, hexd, 0, b); r.status != 204 {
		t.Fatalf("whole PATCH after the restart: %d %s", r.status, r.body)
	}
	if r := e.getBlob(tok, hexd); r.status != 200 || !bytes.Equal(r.body, b) {
		t.Fatalf("blob after the restart: %d", r.status)
	}
}

// countObjects counts the objects of e's store under prefix.
func countObjects(t *testing.T, e *testEnv, prefix string) int {
	t.Helper()
	n := 0
	if err := e.store.List(context.Background(), prefix, func(snapshot.ObjectInfo) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestStalledDownloadsOfOneUserAreBounded: a delta pack being sent holds
// about 7 MiB until its client has read it or WriteTimeout (30 minutes)
// ends it, so one token opening downloads it never reads could hold any
// amount of memory. A user has at most maxPacksPerUser packs under way on
// a replica; one more is answered 429 with Retry-After (the client backs
// off), and a slot is free again once its client leaves.
func TestStalledDownloadsOfOneUserAreBounded(t *testing.T) {
	e := newTestEnv(t, envConfig{})
	e.client.MaxResponseBodySize = 64 << 20
	e.enableOrg("acme")
	e.upload("acme", "alice", gen.Dataset(gen.Options{Size: 4 << 20, Seed: 5}))
	tok := userToken(t, "acme", "alice")
	noSlotHeld := func() bool {
		e.s.packs.mu.Lock()
		defer e.s.packs.mu.Unlock()
		return len(e.s.packs.running) == 0
	}
	// A HEAD's pack is never sent: its slot comes back after its answer.
	if r := e.do("HEAD", "/v1/sync?from=0", nil, withToken(tok)); r.status != 200 {
		t.Fatalf("HEAD: %d", r.status)
	}
	waitUntil(t, "the HEAD's slot is free", noSlotHeld)
	var stalled []net.Conn
	for range maxPacksPerUser {
		c, err := e.ln.Dial()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		stalled = append(stalled, c)
		fmt.Fprintf(c, "GET /v1/sync?from=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", tok)
		// Read the status line, then nothing more: the pack stalls in
		// the connection's buffers.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line := make([]byte, len("HTTP/1.1 200"))
		if _, err := io.ReadFull(c, line); err != nil || string(line) != "HTTP/1.1 200" {
			t.Fatalf("stalled download: %q %v", line, err)
		}
	}
	r := e.do("GET", "/v1/sync?from=0", nil, withToken(tok))
	if r.status != 429 || r.header["Retry-After"] == "" {
		t.Fatalf("download %d while %d stall: %d (Retry-After %q), want 429", maxPacksPerUser+1, maxPacksPerUser, r.status, r.header["Retry-After"])
	}
	r.errBody(t)
	if r := e.do("GET", "/v1/sync?from=0", nil, withToken(userToken(t, "acme", "bob"))); r.status == 429 {
		t.Errorf("another user's download: 429")
	}
	for _, c := range stalled {
		c.Close()
	}
	waitUntil(t, "the stalled downloads' slots are free", noSlotHeld)
	if r := e.do("GET", "/v1/sync?from=0", nil, withToken(tok)); r.status != 200 {
		t.Errorf("download after the stalled ones left: %d %.200s", r.status, r.body)
	}
}

// TestMalformedRequestsEchoNoHeaders: fasthttp's error for a request it
// cannot parse carries a copy of the request, headers and all; the server
// put it in its 400 answer and in a WARN log line, so a bearer token (or a
// secret header a proxy adds) went back to the client and into the logs
// whenever a client or a middlebox sent a malformed header. The answer
// and the logs keep the cause, not the copy.
func TestMalformedRequestsEchoNoHeaders(t *testing.T) {
	e := newTestEnv(t, envConfig{})
	tok := userToken(t, "acme", "alice")
	secret := tok[strings.LastIndexByte(tok, '.')+1:] // the signature
	head := "Host: x\r\nAuthorization: Bearer " + tok + "\r\nX-Proxy-Secret: hunter2-" + secret + "\r\n"
	cases := map[string]string{
		"transfer-encoding":      "POST /v1/patches HTTP/1.1\r\n" + head + "Transfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"duplicate length":       "POST /v1/patches HTTP/1.1\r\n" + head + "Content-Length: 5\r\nContent-Length: 50\r\n\r\nhello",
		"bad length":             "GET /v1/status HTTP/1.1\r\n" + head + "Content-Length: x\r\n\r\n",
		"header without a colon": "GET /v1/status HTTP/1.1\r\n" + head + "Bad Header\r\n\r\n",
		"bad version":            "GET /v1/status HTTP/1.1 extra\r\n" + head + "\r\n",
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			r := e.hostileDo(t, hostileCase{raw: []byte(raw)})
			if r.status != 400 {
				t.Errorf("status %d, want 400", r.status)
			}
			if d := r.errBody(t); strings.Contains(d.Message, secret) {
				t.Errorf("the answer echoes the request's headers: %.300s", d.Message)
			}
		})
	}
	if strings.Contains(e.logs.String(), secret) {
		for _, l := range strings.Split(e.logs.String(), "\n") {
			if strings.Contains(l, secret) {
				t.Errorf("a log line holds the request's headers: %.300s", l)
			}
		}
	}
}

// TestOrgFeedLongPollWalksABoundedPartOfTheFeed: an org's feed is read by
// walking the deployment's feed and passing other orgs' entries by name,
// and a long poll that passed some walked on at once, for as long as its
// wait: an org admin sending an old cursor with wait=60s made the server
// list the whole deployment's feed history, every request. A long poll
// walks on at most maxOrgFeedPasses times, then answers the cursor it
// reached (an empty page; the reader continues from it).
func TestOrgFeedLongPollWalksABoundedPartOfTheFeed(t *testing.T) {
	mem := memstore.New()
	e := feedEnv(t, envConfig{store: mem})
	e.enableOrg("acme")
	// Other orgs' entries, more than a long poll may pass: names only
	// (they are passed unread).
	const others = (maxOrgFeedPasses + 2) * 10_000 // ReadFeed examines 10,000 names a walk
	start := time.Now().Add(-time.Hour).UnixMilli()
	for i := range others {
		key := snapshot.FeedKey(start+int64(i/4), "globex", fmt.Sprintf("u%d", i%4), uint64(i/4+1), "n")
		if _, err := mem.Put(context.Background(), key, bytes.NewReader(nil), 0); err != nil {
			t.Fatal(err)
		}
	}
	tok := orgAdminToken(t, "acme")
	p := e.orgFeed("acme", tok, "", 100, 2*time.Second)
	if len(p.Entries) != 0 || p.Next == "" {
		t.Fatalf("long poll: %d entries, next %q; want none and a cursor past others' entries", len(p.Entries), p.Next)
	}
	// The poll stopped short of the end, so reading on moves on.
	if q := e.orgFeed("acme", tok, p.Next, 100, 0); q.Next == p.Next {
		t.Errorf("the long poll walked the whole feed (%d entries of another org) before answering", others)
	}
}

// TestSuffixRangeOfAnEmptyBlobIs416: "bytes=-N" of an empty blob was
// answered 206 with "Content-Range: bytes 0--1/0"; no range of an empty
// blob can be satisfied (RFC 9110 §14.1.2), as "bytes=0-" already was.
func TestSuffixRangeOfAnEmptyBlobIs416(t *testing.T) {
	e, tok := blobEnv(t, nil)
	_, hexd := blobOf(t, 0)
	if r := e.createUpload(tok, hexd, 0); r.status != 201 && r.status != 200 {
		t.Fatalf("create an empty blob: %d %s", r.status, r.body)
	}
	if r := e.getBlob(tok, hexd); r.status != 200 || len(r.body) != 0 {
		t.Fatalf("GET the empty blob: %d %q", r.status, r.body)
	}
	for _, rg := range []string{"bytes=-1", "bytes=0-", "bytes=0-0"} {
		r := e.getBlob(tok, hexd, withHeader("Range", rg))
		if r.status != 416 {
			t.Errorf("%s of an empty blob: %d (Content-Range %q), want 416", rg, r.status, r.header["Content-Range"])
			continue
		}
		r.errBody(t)
	}
}

// TestBlobStrangerCostsOneDataSetReadWhateverTheBlob: asking for blobs of
// the org one may not read read one's whole data set once per blob asked
// for (remembered for 4,096 blobs of all users together): a user cycling
// through blob hashes of the org (a well-known file's, or their own other
// account's) made every 404 cost a read of their data set. The blobs a
// head version references are read once per head version, for all blobs.
func TestBlobStrangerCostsOneDataSetReadWhateverTheBlob(t *testing.T) {
	e, alice := blobEnv(t, nil)
	bob := userToken(t, "acme", "bob")
	e.upload("acme", "bob", gen.Dataset(gen.Options{Size: 64 << 10, Seed: 3}))
	var hs []string
	for range 5 {
		b, h := blobOf(t, 1000)
		e.uploadBlob(alice, b, h)
		hs = append(hs, h)
	}
	if r := e.getBlob(bob, hs[0]); r.status != 404 {
		t.Fatalf("bob reads alice's blob: %d", r.status)
	}
	before := e.store.Calls(storetest.OpGetRange)
	for _, h := range hs[1:] {
		if r := e.getBlob(bob, h); r.status != 404 {
			t.Fatalf("bob reads alice's blob: %d", r.status)
		}
	}
	if n := e.store.Calls(storetest.OpGetRange) - before; n != 0 {
		t.Errorf("refusing 4 more blobs read packs %d times, want 0 (the data set was read for the first)", n)
	}
}

// TestOneUserAppliesABoundedNumberOfPatchesAtOnce: a patch's replay holds what
// its records cost to merge (hundreds of MB for a 16 MiB record), and one
// token could send a hundred patches at once; a user has at most
// maxPatchesPerUser being applied on a replica (429 with Retry-After past
// it, which the client retries), and other users are not held up.
func TestOneUserAppliesABoundedNumberOfPatchesAtOnce(t *testing.T) {
	f := storetest.Wrap(memstore.New())
	release := make(chan struct{})
	arrived := make(chan string, 16)
	var hold atomic.Bool
	f.Before = func(_ context.Context, op storetest.Op, key string) error {
		if hold.Load() && op == storetest.OpPutIfAbsent && strings.Contains(key, "/alice/packs/") {
			arrived <- key
			<-release
		}
		return nil
	}
	e := newTestEnv(t, envConfig{store: f})
	e.enableOrg("acme")
	e.upload("acme", "alice", []gen.Record{{Key: "a", Value: []byte(`1`)}})
	e.upload("acme", "bob", []gen.Record{{Key: "a", Value: []byte(`1`)}})
	alice, bob := userToken(t, "acme", "alice"), userToken(t, "acme", "bob")
	patch := func(id string) []byte {
		return fmt.Appendf(nil, `{"id":%q,"base":1,"ops":[{"op":"put","key":"k-%s","value":1}]}`, id, id)
	}
	hold.Store(true)
	answers := make(chan response, maxPatchesPerUser)
	for i := range maxPatchesPerUser {
		go func() {
			answers <- e.doWithin(time.Minute, "POST", "/v1/patches", patch(fmt.Sprint("held", i)), withToken(alice))
		}()
	}
	for range maxPatchesPerUser {
		<-arrived // both are writing their packs
	}
	r := e.do("POST", "/v1/patches", patch("third"), withToken(alice))
	if r.status != 429 || r.errBody(t).Code != wire.CodeRateLimited || r.header["Retry-After"] == "" {
		t.Fatalf("one patch more than the bound: %d %s, want 429 with Retry-After", r.status, r.body)
	}
	if r := e.do("POST", "/v1/patches", patch("bob"), withToken(bob)); r.status != 200 {
		t.Fatalf("another user's patch: %d %s", r.status, r.body)
	}
	hold.Store(false)
	close(release)
	for range maxPatchesPerUser {
		if r := <-answers; r.status != 200 && r.status != 503 { // the two race for one version
			t.Errorf("a held patch: %d %s", r.status, r.body)
		}
	}
	if r := e.do("POST", "/v1/patches", patch("third"), withToken(alice)); r.status != 200 {
		t.Fatalf("the third patch once the others were answered: %d %s", r.status, r.body)
	}
}
