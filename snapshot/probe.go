package snapshot

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// ProbePrefix is where ProbeConditionalWrites writes its objects: one key
// per run, deleted before it returns. Names starting with "_" are never an
// org's, so nothing else reads or collects them.
const ProbePrefix = "_deltasync/probe/"

// ErrNoConditionalWrites reports a store that accepts conditional writes but
// does not enforce them. Such a store loses versions silently: two writers
// both "create" version n and the second overwrites the first.
var ErrNoConditionalWrites = errors.New("store does not enforce conditional writes")

// Guarantee names one conditional-write guarantee the project relies on.
type Guarantee string

// The guarantees ProbeConditionalWrites checks.
const (
	CreateOnly     Guarantee = "create-only writes (If-None-Match: *)"
	CompareAndSwap Guarantee = "compare-and-swap writes (If-Match)"
)

// GuaranteeError is a guarantee a store failed to keep during the probe.
// It matches ErrNoConditionalWrites.
type GuaranteeError struct {
	Guarantee Guarantee
	Key       string // the probe object
	Detail    string // what the store did instead
}

func (e *GuaranteeError) Error() string {
	return fmt.Sprintf("%v: %s not enforced: %s (probe object %s)", ErrNoConditionalWrites, e.Guarantee, e.Detail, e.Key)
}

func (e *GuaranteeError) Unwrap() error { return ErrNoConditionalWrites }

// staleProbeAge is the age from which a probe object is a left-over of a
// process killed mid-probe; ProbeConditionalWrites removes those.
const staleProbeAge = time.Hour

// ProbeConditionalWrites checks once that s enforces the conditions that
// version claims (create-only) and org settings updates (compare-and-swap)
// depend on: a second create-only put of one key must
// fail and leave the first content; a compare-and-swap with a wrong ETag
// must fail and change nothing; one with the current ETag must succeed.
//
// A store that breaks a guarantee gives a *GuaranteeError (matching
// ErrNoConditionalWrites); any other failure (the store unreachable, access
// denied) is returned as it is. Servers, builders and gc call it at start-up
// on whatever Store they were given. It costs a few writes and reads of a
// few bytes; the probe object is deleted before it returns, and so are
// probe objects older than an hour (left by a process killed mid-probe;
// one LIST of ProbePrefix).
func ProbeConditionalWrites(ctx context.Context, s Store) error {
	var rnd [12]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	p := &probe{s: s, key: ProbePrefix + time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(rnd[:])}
	b := []byte("first")
	first, err := s.PutIfAbsent(ctx, p.key, bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return fmt.Errorf("probe: create-only put of %s: %w", p.key, err)
	}
	defer p.cleanUp(ctx)
	if err := p.createOnly(ctx); err != nil {
		return err
	}
	if err := p.compareAndSwap(ctx, first.ETag); err != nil {
		return err
	}
	p.removeStale(ctx)
	return nil
}

type probe struct {
	s   Store
	key string
}

// createOnly: a second create-only put must lose and leave the first.
func (p *probe) createOnly(ctx context.Context) error {
	b := []byte("second")
	_, err := p.s.PutIfAbsent(ctx, p.key, bytes.NewReader(b), int64(len(b)))
	switch {
	case err == nil:
		return &GuaranteeError{Guarantee: CreateOnly, Key: p.key,
			Detail: "a second create-only put of an existing object succeeded"}
	case !errors.Is(err, ErrExist):
		return fmt.Errorf("probe: second create-only put of %s: %w", p.key, err)
	}
	return p.wantContent(ctx, CreateOnly, "first", "the object changed although the second create-only put was refused")
}

// compareAndSwap: a wrong ETag must lose and change nothing; the current
// one must win.
func (p *probe) compareAndSwap(ctx context.Context, etag string) error {
	b := []byte("stale")
	_, err := p.s.PutIfMatch(ctx, p.key, bytes.NewReader(b), int64(len(b)), "deltasync-probe-wrong-etag")
	switch {
	case err == nil:
		return &GuaranteeError{Guarantee: CompareAndSwap, Key: p.key,
			Detail: "a put with a wrong ETag succeeded"}
	case !errors.Is(err, ErrPrecondition):
		return fmt.Errorf("probe: compare-and-swap of %s with a wrong ETag: %w", p.key, err)
	}
	if err := p.wantContent(ctx, CompareAndSwap, "first", "the object changed although the put with a wrong ETag was refused"); err != nil {
		return err
	}
	b = []byte("swapped")
	_, err = p.s.PutIfMatch(ctx, p.key, bytes.NewReader(b), int64(len(b)), etag)
	switch {
	case errors.Is(err, ErrPrecondition):
		return &GuaranteeError{Guarantee: CompareAndSwap, Key: p.key,
			Detail: fmt.Sprintf("a put with the ETag the create returned (%q) was refused", etag)}
	case err != nil:
		return fmt.Errorf("probe: compare-and-swap of %s with the current ETag: %w", p.key, err)
	}
	return p.wantContent(ctx, CompareAndSwap, "swapped", "a compare-and-swap reported success but the object did not change")
}

func (p *probe) wantContent(ctx context.Context, g Guarantee, want, detail string) error {
	got, err := GetBytes(ctx, p.s, p.key, 64)
	if err != nil {
		return fmt.Errorf("probe: read %s: %w", p.key, err)
	}
	if string(got) != want {
		return &GuaranteeError{Guarantee: g, Key: p.key, Detail: fmt.Sprintf("%s (holds %q, want %q)", detail, got, want)}
	}
	return nil
}

// removeStale deletes the probe objects of earlier runs that were killed
// before their clean-up. Best effort: a left-over is a few bytes nothing
// reads, so failures are ignored.
func (p *probe) removeStale(ctx context.Context) {
	cutoff := time.Now().Add(-staleProbeAge)
	var stale []string
	_ = p.s.List(ctx, ProbePrefix, func(oi ObjectInfo) error {
		if oi.Key != p.key && !oi.ModTime.IsZero() && oi.ModTime.Before(cutoff) {
			stale = append(stale, oi.Key)
		}
		return nil
	})
	for _, key := range stale {
		_ = p.s.Delete(ctx, key)
	}
}

// cleanUp deletes the probe object even when ctx has ended, within bounds.
func (p *probe) cleanUp(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_ = p.s.Delete(ctx, p.key) // a left-over probe object is a few bytes nothing reads
}
