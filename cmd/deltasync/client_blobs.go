package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/deltasync/deltasync/client"
	"github.com/deltasync/deltasync/wire"
)

// clientAttach stores a file as a blob and prints its reference.
func clientAttach(e *env, c *client.Client, o clientOptions, path string) error {
	ref, err := c.AttachFile(path, o.Mime)
	if err != nil {
		return err
	}
	if o.JSON {
		return printJSON(e.stdout, map[string]any{"blob": ref.Blob, "bytes": ref.Bytes})
	}
	b, err := json.Marshal(ref)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "%s\n", b)
	return err
}

// clientBlob writes a blob to --out, downloading it if needed.
func clientBlob(ctx context.Context, e *env, c *client.Client, o clientOptions, ref string) error {
	if o.Out == "" {
		return usagef("client blob needs --out FILE")
	}
	id := ref
	if strings.HasPrefix(strings.TrimSpace(ref), "{") {
		var r wire.BlobRef
		if err := json.Unmarshal([]byte(ref), &r); err != nil {
			return usagef("blob reference %q is not JSON: %v", ref, err)
		}
		id = r.Blob
	}
	if _, err := wire.ParseBlobID(id); err != nil {
		return usagef("%v", err)
	}
	b, err := c.Blob(ctx, id)
	if err != nil {
		return err
	}
	return writeFileAtomic(o.Out, b)
}

// writeFileAtomic writes b to path through a temp file in its directory.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".blob-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
