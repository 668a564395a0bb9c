package snapshot

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Head returns the newest version of a user's data set (0 if none). The head
// object is only a hint: the truth is the highest manifest that exists, found
// by probing upward from the hint, so a stale hint (a crash between claiming a
// version and updating the hint, or a replica racing) costs one extra Stat.
//
// A hint that is present but unusable (not a version number, 0, too long,
// or naming a version that is gone) is ignored and the versions are listed
// instead: probing upward from 0 would stop at the first version gc
// retired and call a data set empty that is not.
func Head(ctx context.Context, s ReadStore, org, user string) (uint64, error) {
	v, ok, err := readHeadHint(ctx, s, org, user)
	if err != nil {
		return 0, err
	}
	if !ok {
		return headByList(ctx, s, org, user)
	}
	if v == 0 {
		// No hint: a new data set, or one whose hint was lost. Version 1
		// tells them apart, unless gc retired it: then only a listing can
		// (one LIST, for data sets without a hint only).
		if _, err := s.Stat(ctx, ManifestKey(org, user, 1)); errors.Is(err, ErrNotExist) {
			return headByList(ctx, s, org, user)
		} else if err != nil {
			return 0, fmt.Errorf("stat version 1 of %s/%s: %w", org, user, err)
		}
	}
	if v > 0 {
		if _, err := s.Stat(ctx, ManifestKey(org, user, v)); errors.Is(err, ErrNotExist) {
			// The hint points at a version that is gone (garbage collected
			// or never claimed): fall back to a listing.
			return headByList(ctx, s, org, user)
		} else if err != nil {
			return 0, fmt.Errorf("stat version %d of %s/%s: %w", v, org, user, err)
		}
	}
	for {
		_, err := s.Stat(ctx, ManifestKey(org, user, v+1))
		if errors.Is(err, ErrNotExist) {
			return v, nil
		}
		if err != nil {
			return 0, fmt.Errorf("stat version %d of %s/%s: %w", v+1, org, user, err)
		}
		v++
	}
}

// maxHeadHint bounds the head hint read: Commit writes a decimal version
// number, at most 20 digits.
const maxHeadHint = 64

// readHeadHint reads the head hint: (v, true) for a usable one, (0, true)
// when there is none (a new data set, probed from version 1), and
// (0, false) when the object holds anything Commit would not write.
func readHeadHint(ctx context.Context, s Getter, org, user string) (uint64, bool, error) {
	b, err := GetBytes(ctx, s, HeadKey(org, user), maxHeadHint)
	switch {
	case errors.Is(err, ErrNotExist):
		return 0, true, nil
	case errors.Is(err, ErrCorrupt):
		return 0, false, nil // longer than any version number
	case err != nil:
		return 0, false, fmt.Errorf("read head of %s/%s: %w", org, user, err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || v == 0 {
		return 0, false, nil
	}
	return v, true, nil
}

func headByList(ctx context.Context, s Lister, org, user string) (uint64, error) {
	var head uint64
	err := s.List(ctx, UserPrefix(org, user)+"versions/", func(oi ObjectInfo) error {
		if v, ok := ParseManifestKey(oi.Key); ok && v > head {
			head = v
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("list versions of %s/%s: %w", org, user, err)
	}
	return head, nil
}

// ReadManifest loads and decodes the manifest of version v. Version 0 is the
// empty data set and has no manifest: it returns an error matching ErrNotExist.
func ReadManifest(ctx context.Context, s Getter, org, user string, v uint64) (*Manifest, error) {
	key := ManifestKey(org, user, v)
	b, err := GetBytes(ctx, s, key, maxManifestBody)
	if err != nil {
		return nil, &ObjectError{Op: "read manifest", Key: key, Err: err}
	}
	m, err := UnmarshalManifest(b)
	if err != nil {
		return nil, &ObjectError{Op: "decode manifest", Key: key, Err: err}
	}
	if m.Org != org || m.User != user || m.Version != v {
		return nil, &ObjectError{Op: "decode manifest", Key: key,
			Err: fmt.Errorf("manifest names %s/%s version %d: %w", m.Org, m.User, m.Version, ErrCorrupt)}
	}
	return m, nil
}

// Commit claims version m.Version with a create-only write of its manifest.
// If another writer claimed that version first it returns an error matching
// ErrExist and changes nothing; the caller re-reads the head and retries.
// On success the head hint is updated (best effort: it is only a hint).
func Commit(ctx context.Context, s Store, m *Manifest) error {
	if err := Claim(ctx, s, m); err != nil {
		return err
	}
	PutHeadHint(ctx, s, m)
	return nil
}

// Claim is Commit without the head hint: the create-only write of m's
// manifest that makes it the version. A caller with more to write once the
// version is claimed writes it beside PutHeadHint.
func Claim(ctx context.Context, s Creator, m *Manifest) error {
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	key := ManifestKey(m.Org, m.User, m.Version)
	if _, err := s.PutIfAbsent(ctx, key, bytes.NewReader(b), int64(len(b))); err != nil {
		return &ObjectError{Op: "claim version", Key: key, Err: err}
	}
	return nil
}

// PutHeadHint points the head hint of m's user at m's version, best effort
// (it is only a hint: readers go on from it to the newest version).
func PutHeadHint(ctx context.Context, s Store, m *Manifest) {
	hint := strconv.FormatUint(m.Version, 10)
	_, _ = s.Put(ctx, HeadKey(m.Org, m.User), strings.NewReader(hint), int64(len(hint)))
}

// LoadOrCreateSecret returns the deployment's chunk-ID secret kept in the
// store, creating a random one with a create-only write if none exists yet.
// Every server and builder on a store thus agrees on the secret without
// configuration, and it never changes (a new secret would make every chunk
// look new).
func LoadOrCreateSecret(ctx context.Context, s CreateStore) ([]byte, error) {
	for range 3 {
		b, err := GetBytes(ctx, s, SecretKey, 1024)
		if err == nil {
			secret, err := hex.DecodeString(strings.TrimSpace(string(b)))
			if err != nil || len(secret) < 16 {
				return nil, &ObjectError{Op: "read secret", Key: SecretKey, Err: ErrCorrupt}
			}
			return secret, nil
		}
		if !errors.Is(err, ErrNotExist) {
			return nil, &ObjectError{Op: "read secret", Key: SecretKey, Err: err}
		}
		var secret [32]byte
		if _, err := rand.Read(secret[:]); err != nil {
			return nil, err
		}
		enc := hex.EncodeToString(secret[:]) + "\n"
		_, err = s.PutIfAbsent(ctx, SecretKey, strings.NewReader(enc), int64(len(enc)))
		if err == nil {
			return secret[:], nil
		}
		if !errors.Is(err, ErrExist) {
			return nil, &ObjectError{Op: "create secret", Key: SecretKey, Err: err}
		}
		// Another process created it first: read theirs.
	}
	return nil, fmt.Errorf("create secret %s: gave up after races", SecretKey)
}
