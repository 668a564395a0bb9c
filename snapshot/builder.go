package snapshot

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// RecordSource yields records sorted by key; Next returns io.EOF after the
// last one. The returned value may be reused by the next call.
type RecordSource interface {
	Next() (key string, value []byte, err error)
}

// BuildOptions configure a Builder.
type BuildOptions struct {
	Org, User string
	Secret    []byte        // deployment chunk-ID secret (see LoadOrCreateSecret)
	Chunker   ChunkerParams // DefaultChunkerParams() if zero
	PackSize  int           // target pack size; a pack never exceeds it by more than one chunk
	Workers   int           // hashing/compression goroutines; GOMAXPROCS if 0
	Now       func() time.Time
}

// DefaultBuildOptions returns 16 MiB packs, default chunker parameters and
// one worker per CPU.
func DefaultBuildOptions() BuildOptions {
	return BuildOptions{Chunker: DefaultChunkerParams(), PackSize: 16 << 20, Now: time.Now}
}

func (o *BuildOptions) fill() error {
	if o.Chunker == (ChunkerParams{}) {
		o.Chunker = DefaultChunkerParams()
	}
	if o.PackSize <= 0 {
		o.PackSize = 16 << 20
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if len(o.Secret) == 0 {
		return fmt.Errorf("build: no chunk secret: %w", ErrInvalid)
	}
	if err := ValidateName("org", o.Org); err != nil {
		return err
	}
	if err := ValidateName("user", o.User); err != nil {
		return err
	}
	return o.Chunker.Validate()
}

// BuildResult describes a built, not yet committed, version.
type BuildResult struct {
	Manifest       *Manifest // the new version (Version = parent head + 1)
	Parent         *Manifest // nil when building on version 0
	Unchanged      bool      // same content as Parent: nothing was written, nothing to commit
	ChunksNew      int       // chunks the parent lacked
	StoredBytesNew int64     // their compressed size
	PackPuts       int       // pack objects written
}

// Build streams sorted records into a new version on top of the current head:
// it chunks the canonical stream, writes the chunks the parent version lacks
// into pack objects and returns the manifest, which the caller commits with
// Commit (after writing anything the manifest refers to, such as its change
// set). Memory stays bounded by the pipeline depth and one pack.
func Build(ctx context.Context, s CreateStore, opts BuildOptions, src RecordSource) (*BuildResult, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	head, err := Head(ctx, s, opts.Org, opts.User)
	if err != nil {
		return nil, err
	}
	var parent *Manifest
	if head > 0 {
		if parent, err = ReadManifest(ctx, s, opts.Org, opts.User, head); err != nil {
			return nil, err
		}
	}
	return BuildOn(ctx, s, opts, parent, src)
}

// BuildOn is Build with an explicit parent (nil for version 0).
func BuildOn(ctx context.Context, s Creator, opts BuildOptions, parent *Manifest, src RecordSource) (*BuildResult, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	b := newBuild(s, opts, parent)
	if err := b.run(ctx, src); err != nil {
		return nil, err
	}
	return b.result(), nil
}

type chunkJob struct {
	seq    int
	data   []byte
	first  string
	cont   bool
	recs   int
	id     ChunkID
	sum    [32]byte
	stored []byte // compressed frame, nil if the parent (or this build) has the chunk
	known  bool
	buf    *[]byte // data's buffer from build.dataPool, returned once collected (nil: not pooled)
}

type build struct {
	s      Creator // a build only adds packs
	opts   BuildOptions
	parent *Manifest
	hasher *Hasher

	// known finds a chunk of the parent by ID (and first key, which lets
	// ApplyEdits use a binary search instead of indexing the whole parent).
	known      func(id ChunkID, firstKey string) *ChunkRef
	parentPack []int32 // parent pack index -> index in m.Packs, -1 if not yet used

	// Collector state (single goroutine).
	m        *Manifest
	packIdx  map[string]uint32
	newRefs  map[ChunkID]int // index into m.Chunks of chunks new in this build
	pack     []byte
	packRefs []int // indexes into m.Chunks waiting for the current pack's name
	packIDs  []ChunkID
	res      BuildResult

	dataPool sync.Pool
}

func newBuild(s Creator, opts BuildOptions, parent *Manifest) *build {
	b := &build{
		s: s, opts: opts, parent: parent,
		hasher:  NewHasher(opts.Secret, opts.Org, opts.User),
		packIdx: map[string]uint32{},
		newRefs: map[ChunkID]int{},
	}
	b.known = func(ChunkID, string) *ChunkRef { return nil }
	if parent != nil {
		b.parentPack = make([]int32, len(parent.Packs))
		for i := range b.parentPack {
			b.parentPack[i] = -1
		}
	}
	var version, parentVersion uint64 = 1, 0
	if parent != nil {
		version, parentVersion = parent.Version+1, parent.Version
	}
	b.m = &Manifest{
		Org: opts.Org, User: opts.User, Version: version, Parent: parentVersion,
		ChunkerName: ChunkerName, ChunkerVersion: ChunkerVersion, Chunker: opts.Chunker,
		CreatedUnix: opts.Now().Unix(),
	}
	b.dataPool.New = func() any { buf := make([]byte, 0, opts.Chunker.Max); return &buf }
	return b
}

// indexParent lets a full build find any parent chunk by ID.
func (b *build) indexParent() {
	if b.parent == nil {
		return
	}
	refs := make(map[ChunkID]*ChunkRef, len(b.parent.Chunks))
	for i := range b.parent.Chunks {
		refs[b.parent.Chunks[i].ID] = &b.parent.Chunks[i]
	}
	b.known = func(id ChunkID, _ string) *ChunkRef { return refs[id] }
}

// run is the build pipeline: a producer chunks the records, workers hash
// the chunks and compress the new ones, a collector puts them back in
// stream order and fills packs. Every stage stops when another fails.
func (b *build) run(ctx context.Context, src RecordSource) error {
	b.indexParent()
	g, ctx := errgroup.WithContext(ctx)
	jobs := make(chan *chunkJob, 4*b.opts.Workers)
	done := make(chan *chunkJob, 4*b.opts.Workers)
	g.Go(func() error {
		defer close(jobs)
		return b.produce(ctx, src, jobs)
	})
	var wg sync.WaitGroup
	for range b.opts.Workers {
		wg.Add(1)
		g.Go(func() error {
			defer wg.Done()
			return b.hash(ctx, jobs, done)
		})
	}
	go func() { wg.Wait(); close(done) }()
	g.Go(func() error { return b.collectInOrder(ctx, done) })
	return g.Wait()
}

// produce validates the records (keys valid, sorted and unique; values
// within MaxValueLen), chunks them and sends the chunks to jobs, counting
// the stream on the way.
func (b *build) produce(ctx context.Context, src RecordSource, jobs chan<- *chunkJob) error {
	seq := 0
	ch, err := NewChunker(b.opts.Chunker, func(c ChunkData) error {
		b.m.StreamLen += uint64(len(c.Data))
		buf := b.dataPool.Get().(*[]byte)
		*buf = append((*buf)[:0], c.Data...)
		j := &chunkJob{seq: seq, data: *buf, buf: buf, first: c.FirstKey, cont: c.Continued, recs: c.Records}
		seq++
		select {
		case jobs <- j:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	if err != nil {
		return err
	}
	var prev []byte
	for {
		key, value, err := src.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := b.checkRecord(key, value, prev); err != nil {
			return err
		}
		prev = append(prev[:0], key...)
		b.m.Records++
		if err := ch.Add(key, value); err != nil {
			return err
		}
	}
	return ch.Close()
}

// checkRecord applies the data model's rules to one record; prev is the
// key of the record before it.
func (b *build) checkRecord(key string, value, prev []byte) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if len(value) > MaxValueLen {
		return fmt.Errorf("record %q: value of %d bytes exceeds %d: %w", key, len(value), MaxValueLen, ErrInvalid)
	}
	if b.m.Records > 0 && key <= string(prev) {
		return fmt.Errorf("record %q: keys not sorted or duplicated: %w", key, ErrInvalid)
	}
	return nil
}

// hash is one worker: it names each chunk (ID and SHA-256) and compresses
// those the parent lacks.
func (b *build) hash(ctx context.Context, jobs <-chan *chunkJob, done chan<- *chunkJob) error {
	for j := range jobs {
		j.id = b.hasher.Sum(j.data)
		j.sum = sha256.Sum256(j.data)
		if b.known(j.id, j.first) != nil {
			j.known = true
		} else {
			j.stored = Compress(nil, j.data)
		}
		select {
		case done <- j:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// collectInOrder puts the hashed chunks back in stream order, collects
// each, and writes the last pack.
func (b *build) collectInOrder(ctx context.Context, done <-chan *chunkJob) error {
	pending := map[int]*chunkJob{}
	next := 0
	for j := range done {
		pending[j.seq] = j
		for {
			j, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			if err := b.collect(ctx, j); err != nil {
				return err
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return b.flushPack(ctx)
}

func (b *build) collect(ctx context.Context, j *chunkJob) error {
	ref := ChunkRef{ID: j.id, Sum: j.sum, Size: uint32(len(j.data)), Records: uint32(j.recs), Continued: j.cont, FirstKey: j.first}
	if j.buf != nil {
		b.dataPool.Put(j.buf)
	}
	if p := b.known(j.id, j.first); p != nil {
		ref.Pack = b.parentPackIndex(p.Pack)
		ref.Offset, ref.StoredLen = p.Offset, p.StoredLen
		b.m.Chunks = append(b.m.Chunks, ref)
		return nil
	}
	if i, ok := b.newRefs[j.id]; ok { // repeated within this build
		r := b.m.Chunks[i]
		ref.Pack, ref.Offset, ref.StoredLen = r.Pack, r.Offset, r.StoredLen
		if r.Pack == ^uint32(0) { // its pack is not named yet
			b.packRefs = append(b.packRefs, len(b.m.Chunks))
		}
		b.m.Chunks = append(b.m.Chunks, ref)
		return nil
	}
	if len(b.pack) > 0 && len(b.pack)+len(j.stored) > b.opts.PackSize {
		if err := b.flushPack(ctx); err != nil {
			return err
		}
	}
	ref.Pack, ref.Offset, ref.StoredLen = ^uint32(0), uint64(len(b.pack)), uint32(len(j.stored))
	b.pack = append(b.pack, j.stored...)
	b.newRefs[j.id] = len(b.m.Chunks)
	b.packRefs = append(b.packRefs, len(b.m.Chunks))
	b.packIDs = append(b.packIDs, j.id)
	b.m.Chunks = append(b.m.Chunks, ref)
	b.res.ChunksNew++
	b.res.StoredBytesNew += int64(len(j.stored))
	return nil
}

// parentPackIndex maps a parent's pack index to this manifest's.
func (b *build) parentPackIndex(i uint32) uint32 {
	if b.parentPack[i] < 0 {
		b.parentPack[i] = int32(b.packIndex(b.parent.Packs[i]))
	}
	return uint32(b.parentPack[i])
}

func (b *build) packIndex(name string) uint32 {
	if i, ok := b.packIdx[name]; ok {
		return i
	}
	i := uint32(len(b.m.Packs))
	b.m.Packs = append(b.m.Packs, name)
	b.packIdx[name] = i
	return i
}

// flushPack writes the current pack. Its name is derived from the IDs it
// holds, so a build re-run after a crash writes the same object again
// instead of leaving an orphan beside it.
func (b *build) flushPack(ctx context.Context) error {
	if len(b.pack) == 0 {
		return nil
	}
	h := sha256.New()
	h.Write([]byte(b.m.Org + "/" + b.m.User + "\x00"))
	for _, id := range b.packIDs {
		h.Write(id[:])
	}
	name := hex.EncodeToString(h.Sum(nil)[:16])
	name, err := putPack(ctx, b.s, b.m.Org, b.m.User, name, b.pack)
	if err != nil {
		return err
	}
	b.res.PackPuts++
	idx := b.packIndex(name)
	for _, i := range b.packRefs {
		b.m.Chunks[i].Pack = idx
	}
	b.pack, b.packRefs, b.packIDs = b.pack[:0], b.packRefs[:0], b.packIDs[:0]
	return nil
}

// putPack writes a pack create-only. The name is derived from the chunk IDs
// it holds; if that name is taken (a re-run after a crash, or data that went
// back to an earlier state), the pack gets a fresh random suffix rather than
// reusing the existing object: a reused object would keep its old
// modification time, and the garbage collector, which spares only young
// unreferenced packs, could delete it before the new version is claimed.
func putPack(ctx context.Context, s Creator, org, user, name string, data []byte) (string, error) {
	for attempt := 0; ; attempt++ {
		n := name
		if attempt > 0 {
			var nonce [6]byte
			rand.Read(nonce[:])
			n = name + "-" + hex.EncodeToString(nonce[:])
		}
		key := PackKey(org, user, n)
		_, err := s.PutIfAbsent(ctx, key, bytes.NewReader(data), int64(len(data)))
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, ErrExist) || attempt >= 3 {
			return "", &ObjectError{Op: "write pack", Key: key, Err: err}
		}
	}
}

func (b *build) result() *BuildResult {
	b.m.SetStreamHash()
	b.res.Manifest = b.m
	b.res.Parent = b.parent
	b.res.Unchanged = b.parent != nil && b.parent.SameContent(b.m) ||
		b.parent == nil && b.m.Records == 0
	return &b.res
}
