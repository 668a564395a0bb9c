package mobile

import (
	"encoding/json"

	"github.com/deltasync/deltasync/wire"
)

// BlobRef is a reference to a blob (a photo, a file), as Attach returns
// it. Put JSON into a record (as the value of any field) to attach the
// blob to it.
type BlobRef struct {
	ID    string // "sha256:<hex>", what Blob takes
	Bytes int64
	Mime  string
	JSON  string // {"$blob":"sha256:…","bytes":N,"mime":"…"}
}

func blobRefOf(r wire.BlobRef) *BlobRef {
	b, _ := json.Marshal(r)
	return &BlobRef{ID: r.Blob, Bytes: r.Bytes, Mime: r.Mime, JSON: string(b)}
}

// Attach stores data as a blob on the device (durably, offline) and
// returns its reference. The blob is uploaded by the sync that sends the
// first edit referencing it. mime may be empty.
func (m *Client) Attach(data []byte, mime string) (*BlobRef, error) {
	if err := m.live(); err != nil {
		return nil, err
	}
	r, err := m.c.Attach(data, mime)
	if err != nil {
		return nil, err
	}
	return blobRefOf(r), nil
}

// AttachFile is Attach with the bytes of the file at path (a photo the
// camera wrote), read as a stream.
func (m *Client) AttachFile(path, mime string) (*BlobRef, error) {
	if err := m.live(); err != nil {
		return nil, err
	}
	r, err := m.c.AttachFile(path, mime)
	if err != nil {
		return nil, err
	}
	return blobRefOf(r), nil
}

// Blob returns the bytes of blob id (a BlobRef's ID, or the "$blob" of a
// reference in a record), downloading it if it is not on the device
// (resuming a download cut short). Cancel and CallTimeoutMillis end it.
func (m *Client) Blob(id string) ([]byte, error) {
	if err := m.live(); err != nil {
		return nil, err
	}
	ctx, cancel := m.callContext()
	defer cancel()
	return m.c.Blob(ctx, id)
}

// BlobFile is Blob answering the path of the file on the device that holds
// the blob (read it, never change it), for an image view.
func (m *Client) BlobFile(id string) (string, error) {
	if err := m.live(); err != nil {
		return "", err
	}
	ctx, cancel := m.callContext()
	defer cancel()
	return m.c.BlobFile(ctx, id)
}
