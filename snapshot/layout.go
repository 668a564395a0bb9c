package snapshot

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Object layout in a store: the table in the package doc (doc.go) is the
// map, kept true whenever a key below changes. Org and user names are
// validated by ValidateName so that they can never collide with the
// reserved names (which start with "_") or escape their directory.

// SecretKey is the object holding the deployment's chunk-ID secret.
const SecretKey = "_deltasync/secret"

// ValidateName checks an org or user name: 1..128 bytes of [A-Za-z0-9._-],
// not starting with '.', '_' or '-'.
func ValidateName(kind, s string) error {
	if len(s) == 0 || len(s) > 128 {
		return fmt.Errorf("%s name %q must be 1..128 bytes: %w", kind, s, ErrInvalid)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("%s name %q may only contain A-Z a-z 0-9 . _ -: %w", kind, s, ErrInvalid)
		}
	}
	if s[0] == '.' || s[0] == '_' || s[0] == '-' {
		return fmt.Errorf("%s name %q must not start with '.', '_' or '-': %w", kind, s, ErrInvalid)
	}
	return nil
}

// OrgSettingsKey is the object holding an org's settings.
func OrgSettingsKey(org string) string { return org + "/_settings.json" }

// UserPrefix is the prefix of every object of one user's data set.
func UserPrefix(org, user string) string { return org + "/" + user + "/" }

// HeadKey is the head-hint object of a user.
func HeadKey(org, user string) string { return UserPrefix(org, user) + "head" }

// ManifestKey is the manifest object of version v.
func ManifestKey(org, user string, v uint64) string {
	return fmt.Sprintf("%sversions/%020d.manifest", UserPrefix(org, user), v)
}

// PackKey is the object of the pack with the given name.
func PackKey(org, user, pack string) string {
	return UserPrefix(org, user) + "packs/" + pack + ".pack"
}

// PatchKey is the object holding the stored answer to a patch id; idHash is
// a hex digest of the client-chosen id, so any id maps to a safe key.
func PatchKey(org, user, idHash string) string {
	return UserPrefix(org, user) + "patches/" + idHash + ".json"
}

// Blobs (wire/blob.go): the content of a blob is kept once per org, named
// by its SHA-256, and a user may read it only through a grant object under
// their own prefix, written when they uploaded it or when their data set
// was found to reference it (a hash alone is not a capability). An upload
// in progress is an info object and parts named by their offset.
//
//	<org>/_blobs/<hex>                          content
//	<org>/<user>/blobs/<hex>                    grant (empty)
//	<org>/<user>/uploads/<hex>/info.json        upload in progress
//	<org>/<user>/uploads/<hex>/<offset, 20 digits>.part

// BlobsPrefix is the prefix of an org's blob contents.
func BlobsPrefix(org string) string { return org + "/_blobs/" }

// BlobKey is the object holding the content of the blob with digest hex.
func BlobKey(org, hex string) string { return BlobsPrefix(org) + hex }

// BlobGrantKey is the object that lets user read blob hex.
func BlobGrantKey(org, user, hex string) string { return UserPrefix(org, user) + "blobs/" + hex }

// BlobUploadPrefix is the prefix of the objects of an upload in progress.
func BlobUploadPrefix(org, user, hex string) string {
	return UserPrefix(org, user) + "uploads/" + hex + "/"
}

// BlobUploadInfoKey is the object describing an upload in progress.
func BlobUploadInfoKey(org, user, hex string) string {
	return BlobUploadPrefix(org, user, hex) + "info.json"
}

// BlobPartKey is the part of an upload that starts at offset.
func BlobPartKey(org, user, hex string, offset int64) string {
	return fmt.Sprintf("%s%020d.part", BlobUploadPrefix(org, user, hex), offset)
}

// ParseBlobPartKey returns the offset of a part key's part.
func ParseBlobPartKey(key string) (int64, bool) {
	i := strings.LastIndexByte(key, '/')
	name, ok := strings.CutSuffix(key[i+1:], ".part")
	if !ok || len(name) != 20 {
		return 0, false
	}
	n, err := strconv.ParseInt(name, 10, 64)
	return n, err == nil && n >= 0
}

// ParseManifestKey extracts the version number from a manifest key.
func ParseManifestKey(key string) (uint64, bool) {
	i := strings.LastIndex(key, "versions/")
	if i < 0 || !strings.HasSuffix(key, ".manifest") {
		return 0, false
	}
	n, err := strconv.ParseUint(key[i+len("versions/"):len(key)-len(".manifest")], 10, 64)
	return n, err == nil
}

// The change feed: every version's change set is stored under FeedPrefix,
// named so that a lexical listing is the order in which versions were
// created (hour bucket, then milliseconds), which the change feed reads
// with a cursor.
//
//	_feed/<yyyymmddhh>/<unix-ms, 13 digits>~<org>~<user>~<version, 20 digits>~<nonce>.changes
const FeedPrefix = "_feed/"

// FeedKey names the change-set object of one version. '~' never occurs in
// org or user names, so the key parses back unambiguously.
func FeedKey(ms int64, org, user string, v uint64, nonce string) string {
	t := time.UnixMilli(ms).UTC()
	return fmt.Sprintf("%s%s/%013d~%s~%s~%020d~%s.changes", FeedPrefix, t.Format("2006010215"), ms, org, user, v, nonce)
}

// FeedSettingsUser is the user name of the feed entries that announce a
// change of an org's settings (ValidateName refuses it for real users):
//
//	_feed/<hour>/<ms>~<org>~_settings~00000000000000000000~<nonce>.changes   (empty)
//
// Replicas watching the feed drop their cached copy of the org's settings
// when they list one. Version 0 never has a manifest, so readers of the
// change feed skip these entries like those of a writer that lost a race.
const FeedSettingsUser = "_settings"

// FeedSettingsKey names the feed entry announcing a change of org's settings.
func FeedSettingsKey(ms int64, org, nonce string) string {
	return FeedKey(ms, org, FeedSettingsUser, 0, nonce)
}

// FeedHourPrefix is the listing prefix of one hour of the feed.
func FeedHourPrefix(ms int64) string {
	return FeedPrefix + time.UnixMilli(ms).UTC().Format("2006010215") + "/"
}

// FeedEntryKey is a parsed FeedKey.
type FeedEntryKey struct {
	Millis    int64
	Org, User string
	Version   uint64
}

// ParseFeedKey parses a key made by FeedKey.
func ParseFeedKey(key string) (FeedEntryKey, bool) {
	rest, ok := strings.CutPrefix(key, FeedPrefix)
	if !ok {
		return FeedEntryKey{}, false
	}
	_, name, ok := strings.Cut(rest, "/")
	if !ok {
		return FeedEntryKey{}, false
	}
	parts := strings.Split(strings.TrimSuffix(name, ".changes"), "~")
	if len(parts) != 5 {
		return FeedEntryKey{}, false
	}
	ms, err1 := strconv.ParseInt(parts[0], 10, 64)
	v, err2 := strconv.ParseUint(parts[3], 10, 64)
	if err1 != nil || err2 != nil {
		return FeedEntryKey{}, false
	}
	return FeedEntryKey{Millis: ms, Org: parts[1], User: parts[2], Version: v}, true
}

// ConsumersPrefix holds the change feed's registered consumers, one object
// per consumer: _consumers/<org>/<name>.json (ConsumerKey). A consumer's
// acknowledged cursor bounds what gc may delete of its org's feed.
const ConsumersPrefix = "_consumers/"

// ConsumerKey is the object of one consumer of an org's change feed.
// Consumer names follow ValidateName's rules; the server's own consumers
// (such as webhook delivery's) start with "_", which no API caller's name
// may.
func ConsumerKey(org, name string) string { return ConsumersPrefix + org + "/" + name + ".json" }

// ParseConsumerKey parses a key made by ConsumerKey.
func ParseConsumerKey(key string) (org, name string, ok bool) {
	rest, ok := strings.CutPrefix(key, ConsumersPrefix)
	if !ok {
		return "", "", false
	}
	org, file, ok := strings.Cut(rest, "/")
	name, isJSON := strings.CutSuffix(file, ".json")
	if !ok || !isJSON || ValidateName("org", org) != nil || strings.Contains(name, "/") {
		return "", "", false
	}
	if ValidateName("consumer", strings.TrimPrefix(name, "_")) != nil {
		return "", "", false
	}
	return org, name, true
}

// LeaseKey is the object of a deployment-wide lease (the feed worker's:
// one holder across replicas), created with PutIfAbsent and renewed or
// taken over with PutIfMatch.
func LeaseKey(name string) string { return "_deltasync/leases/" + name + ".json" }
