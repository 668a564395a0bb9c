package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/deltasync/deltasync/client"
	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/bytesize"
)

const clientSynopsis = `  deltasync client <command> [--dir DIR] [--server URL] [--token T] [args]

Commands:
  pull [--json]           download the newest version (resumes an interrupted download)
  push [--json]           send the pending edits
  sync [--json]           push, then pull
  status [--json]         state (the last known one, until this process talks to the server), version, pending edits, traffic
  get KEY                 print the value of KEY (with pending edits applied)
  put KEY JSON            queue a whole new value ("-" reads JSON from stdin)
  merge KEY JSON          queue an RFC 7386 merge patch (a JSON object)
  delete KEY              queue the removal of KEY
  export                  the merged view as NDJSON, sorted by key
  offline on|off          switch offline mode (no network use while on; on needs a completed sync)
  conflicts [--json]      conflicts and rejected edits the server reported
  rebase [--json]         under the org's reject policy: pull, then resend the pending edits on the new version
  discard KEY             drop the pending edits of KEY (instead of rebasing them)
  verify [--json]         check the state directory thoroughly (no other process may hold it)
  attach FILE [--mime M] [--json]
                          store FILE as a blob (offline; uploaded with the first patch that references it)
                          and print its reference, {"$blob":"sha256:…","bytes":N}, to put into a record
  blob REF --out FILE     write the blob REF (sha256:<hex>, or a reference) to FILE, downloading it if needed

The state lives in --dir (default ./deltasync-client, env DELTASYNC_CLIENT_DIR).
--server and --token (env DELTASYNC_SERVER, DELTASYNC_TOKEN) are remembered
there, so later commands need not repeat them. Edits never need the network.
`

// clientOptions are the flags of `deltasync client`.
type clientOptions struct {
	Dir, Server, Token string
	JSON               bool
	Mime, Out          string // attach, blob (client_blobs.go)
}

func runClient(ctx context.Context, e *env, args []string) error {
	sub, o, pos, err := parseClientArgs(e, args)
	if err != nil {
		return err
	}
	if sub == "verify" {
		return clientVerify(e, o)
	}
	opts := client.DefaultOptions()
	opts.ServerURL, opts.Token = o.Server, o.Token
	c, err := client.Open(o.Dir, opts)
	if err != nil {
		return err
	}
	defer c.Close()
	return runClientCommand(ctx, e, c, sub, o, pos)
}

// clientArgs is how many positional arguments each client command takes.
var clientArgs = map[string]int{"pull": 0, "push": 0, "sync": 0, "rebase": 0, "status": 0, "export": 0, "conflicts": 0, "verify": 0,
	"get": 1, "delete": 1, "offline": 1, "discard": 1, "put": 2, "merge": 2,
	"attach": 1, "blob": 1}

// parseClientArgs reads the client command, its flags (with the
// environment's defaults) and its positional arguments.
func parseClientArgs(e *env, args []string) (sub string, o clientOptions, pos []string, err error) {
	if len(args) == 0 {
		return "", o, nil, usagef("missing client command (pull, push, sync, status, get, put, merge, delete, export, offline, conflicts, rebase, discard, verify)")
	}
	if a := args[0]; a == "-h" || a == "--help" || a == "-help" || a == "help" {
		fmt.Fprint(e.stdout, "Usage:\n"+clientSynopsis)
		return "", o, nil, flag.ErrHelp
	}
	sub, args = args[0], args[1:]
	fs := newFlagSet(e, "client "+sub, clientSynopsis)
	fs.StringVar(&o.Dir, "dir", "", "client state directory (env DELTASYNC_CLIENT_DIR; default ./deltasync-client)")
	fs.StringVar(&o.Server, "server", "", "server URL, remembered in the state directory (env DELTASYNC_SERVER)")
	fs.StringVar(&o.Token, "token", "", "bearer token, remembered in the state directory (env DELTASYNC_TOKEN)")
	fs.BoolVar(&o.JSON, "json", false, "print one JSON object (pull, push, sync, status, conflicts, verify, attach)")
	fs.StringVar(&o.Mime, "mime", "", "attach: the blob's media type, e.g. image/jpeg")
	fs.StringVar(&o.Out, "out", "", "blob: the file to write")
	if pos, err = parseInterleaved(fs, args); err != nil {
		return "", o, nil, err
	}
	n, ok := clientArgs[sub]
	if !ok {
		return "", o, nil, usagef("unknown client command %q", sub)
	}
	if len(pos) != n {
		return "", o, nil, usagef("client %s takes %d argument(s), got %d", sub, n, len(pos))
	}
	o.Dir = cmp.Or(o.Dir, e.getenv("DELTASYNC_CLIENT_DIR"), "deltasync-client")
	o.Server = cmp.Or(o.Server, e.getenv("DELTASYNC_SERVER"))
	o.Token = cmp.Or(o.Token, e.getenv("DELTASYNC_TOKEN"))
	return sub, o, pos, nil
}

// runClientCommand runs one client command on the open client state.
func runClientCommand(ctx context.Context, e *env, c *client.Client, sub string, o clientOptions, pos []string) error {
	switch sub {
	case "pull", "push", "sync", "rebase":
		return clientSync(ctx, e, c, sub, o)
	case "discard":
		n, err := c.DiscardEdits(pos[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "discarded %d pending edit(s) of %s\n", n, pos[0])
		return nil
	case "status":
		return clientStatus(e, c, o)
	case "get":
		v, err := c.Get(pos[0])
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(e.stdout, "%s\n", v)
		return err
	case "put", "merge":
		return clientEdit(e, c, sub, pos[0], pos[1])
	case "delete":
		return c.Delete(pos[0])
	case "export":
		return c.Export(e.stdout)
	case "offline":
		switch strings.ToLower(pos[0]) {
		case "on":
			return c.SetOfflineMode(true)
		case "off":
			return c.SetOfflineMode(false)
		}
		return usagef("offline takes on or off, not %q", pos[0])
	case "conflicts":
		return clientConflicts(e, c, o)
	case "attach":
		return clientAttach(e, c, o, pos[0])
	case "blob":
		return clientBlob(ctx, e, c, o, pos[0])
	}
	return nil
}

// clientEdit queues a put or a merge of key; value "-" reads it from stdin.
func clientEdit(e *env, c *client.Client, sub, key, value string) error {
	val := []byte(value)
	if value == "-" {
		var err error
		if val, err = io.ReadAll(e.stdin); err != nil {
			return fmt.Errorf("read value from stdin: %w", err)
		}
	}
	if sub == "put" {
		return c.Put(key, val)
	}
	return c.Merge(key, val)
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		usage := fs.Usage
		fs.Usage = func() {}
		err := fs.Parse(args)
		fs.Usage = usage
		if errors.Is(err, flag.ErrHelp) {
			usage()
			return nil, err
		}
		if err != nil {
			return nil, &usageError{msg: err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func clientSync(ctx context.Context, e *env, c *client.Client, sub string, o clientOptions) error {
	if sub != "push" && e.stderrTerminal && !o.JSON {
		var bar *progressbar.ProgressBar
		id := c.OnStatus(func(s client.Status) {
			if s.ProgressBytesTotal <= 0 {
				return
			}
			if bar == nil {
				bar = progressbar.NewOptions64(s.ProgressBytesTotal,
					progressbar.OptionSetWriter(e.stderr),
					progressbar.OptionSetDescription("pull"),
					progressbar.OptionShowBytes(true),
					progressbar.OptionUseIECUnits(true),
					progressbar.OptionSetWidth(30),
					progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionSetPredictTime(false),
					progressbar.OptionClearOnFinish())
			}
			bar.Set64(s.ProgressBytesDone)
		})
		defer func() {
			c.RemoveStatusListener(id)
			if bar != nil {
				bar.Finish()
			}
		}()
	}
	var res *client.SyncResult
	var err error
	switch sub {
	case "pull":
		res, err = c.Pull(ctx)
	case "push":
		res, err = c.Push(ctx)
	case "rebase":
		res, err = c.Rebase(ctx)
	default:
		res, err = c.Sync(ctx)
	}
	if err != nil {
		if o.JSON && res != nil {
			printJSON(e.stdout, res)
		}
		return err
	}
	if o.JSON {
		return printJSON(e.stdout, res)
	}
	w := e.stdout
	switch {
	case sub == "push":
		fmt.Fprintf(w, "pushed %d edit(s): %d applied, %d conflict(s), %d rejected; %d pending\n",
			res.EditsSent, res.EditsApplied, res.EditsConflict, res.EditsRejected, res.Pending)
	case res.UpToDate && res.EditsSent == 0:
		fmt.Fprintf(w, "up to date at version %d\n", res.Version)
	default:
		kind := "delta"
		if res.Full {
			kind = "full sync"
		}
		if res.Resumed {
			kind += ", resumed"
		}
		if res.EditsSent > 0 {
			fmt.Fprintf(w, "pushed %d edit(s): %d applied, %d conflict(s), %d rejected\n",
				res.EditsSent, res.EditsApplied, res.EditsConflict, res.EditsRejected)
		}
		if !res.UpToDate {
			fmt.Fprintf(w, "version %d (%s): %s down, %d chunk(s) fetched, %d reused, %d record(s) changed\n",
				res.Version, kind, bytesize.Format(res.BytesDown), res.ChunksFetched, res.ChunksReused, res.RecordsChanged)
		}
	}
	if n := c.ConflictCount(); n > 0 {
		fmt.Fprintf(e.stderr, "%d conflict(s) to review: deltasync client conflicts\n", n)
	}
	printBlocked(e, c)
	return nil
}

// printBlocked warns about pending edits that cannot be sent under the
// org's limits: they stay until discarded.
func printBlocked(e *env, c *client.Client) {
	for _, b := range c.Blocked() {
		fmt.Fprintf(e.stderr, "cannot send the %s of %s (%d more edit(s) wait behind it): %s; keep it, or drop it with: deltasync client discard %s\n",
			b.Op, b.Key, b.Waiting, b.Reason, b.Key)
	}
}

func clientStatus(e *env, c *client.Client, o clientOptions) error {
	s := c.Status()
	last, err := c.LastSyncResult()
	if err != nil {
		return err
	}
	if last == nil {
		last = &client.SyncResult{}
	}
	if o.JSON {
		return printJSON(e.stdout, map[string]any{
			"version": s.LocalVersion, "server_head": s.ServerHead,
			"state": s.State, "reason": s.Reason, "message": s.Message,
			"pending": s.PendingEdits, "pending_bytes": s.PendingBytes,
			"pending_blobs": s.PendingBlobs, "pending_blob_bytes": s.PendingBlobBytes,
			"bytes_down": s.BytesDownTotal, "bytes_up": s.BytesUpTotal,
			"bytes_down_since_online": s.BytesDownSinceOnline, "bytes_up_since_online": s.BytesUpSinceOnline,
			"chunks_fetched": last.ChunksFetched, "chunks_reused": last.ChunksReused,
			"last_synced_unix": s.LastSyncedUnix, "last_contact_unix": s.LastContactUnix,
			"next_retry_unix": s.NextRetryUnix, "conflicts": s.Conflicts,
			"offline_mode": c.OfflineMode(), "rebase_needed": c.RebaseNeeded(), "blocked": s.BlockedEdits,
			"server": c.ServerURL(), "policy": c.Policy(),
		})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	state := s.State
	if s.Reason != "" {
		state += " (" + s.Reason + ")"
	}
	fmt.Fprintf(tw, "state\t%s\n", state)
	if s.Message != "" {
		fmt.Fprintf(tw, "message\t%s\n", s.Message)
	}
	fmt.Fprintf(tw, "server\t%s\n", c.ServerURL())
	fmt.Fprintf(tw, "version\t%d (server head %d)\n", s.LocalVersion, s.ServerHead)
	fmt.Fprintf(tw, "pending\t%d edit(s), %s\n", s.PendingEdits, bytesize.Format(s.PendingBytes))
	fmt.Fprintf(tw, "pending blobs\t%d, %s\n", s.PendingBlobs, bytesize.Format(s.PendingBlobBytes))
	if s.BlockedEdits > 0 {
		fmt.Fprintf(tw, "blocked\t%d edit(s) cannot be sent (see message; deltasync client discard KEY drops them)\n", s.BlockedEdits)
	}
	fmt.Fprintf(tw, "conflicts\t%d\n", s.Conflicts)
	fmt.Fprintf(tw, "traffic\t%s down, %s up since online; %s down, %s up in total\n",
		bytesize.Format(s.BytesDownSinceOnline), bytesize.Format(s.BytesUpSinceOnline), bytesize.Format(s.BytesDownTotal), bytesize.Format(s.BytesUpTotal))
	if s.LastSyncedUnix > 0 {
		fmt.Fprintf(tw, "last synced\t%s\n", time.Unix(s.LastSyncedUnix, 0).Format(time.RFC3339))
	}
	if s.LastContactUnix > 0 {
		fmt.Fprintf(tw, "last contact\t%s\n", time.Unix(s.LastContactUnix, 0).Format(time.RFC3339))
	}
	fmt.Fprintf(tw, "offline mode\t%v\n", c.OfflineMode())
	return tw.Flush()
}

func clientConflicts(e *env, c *client.Client, o clientOptions) error {
	cs, err := c.Conflicts()
	if err != nil {
		return err
	}
	if o.JSON {
		type out struct {
			ID          int64           `json:"id"`
			Key         string          `json:"key"`
			Op          string          `json:"op"`
			Status      string          `json:"status"`
			Policy      string          `json:"policy,omitempty"`
			Won         bool            `json:"won"`
			Pending     bool            `json:"pending,omitempty"`
			Fields      string          `json:"fields,omitempty"`
			Reason      string          `json:"reason,omitempty"`
			ClientValue json.RawMessage `json:"client_value,omitempty"`
			ServerValue json.RawMessage `json:"server_value,omitempty"`
		}
		list := make([]out, 0, len(cs))
		for _, cf := range cs {
			list = append(list, out{cf.ID, cf.Key, cf.Op, cf.Status, cf.Policy, cf.Won, cf.Pending, cf.Fields, cf.Reason, cf.ClientValue, cf.ServerValue})
		}
		return printJSON(e.stdout, map[string]any{"conflicts": list, "rebase_needed": c.RebaseNeeded()})
	}
	if len(cs) == 0 {
		fmt.Fprintln(e.stdout, "no conflicts")
		return nil
	}
	for _, cf := range cs {
		outcome := "server's value kept"
		switch {
		case cf.Status == diff.StatusRejected:
			outcome = "rejected: " + cf.Reason
		case cf.Pending:
			outcome = "edit still pending (org policy rejects conflicts)"
		case cf.Won:
			outcome = "your edit won"
		}
		fmt.Fprintf(e.stdout, "#%d %s %s (%s)\n  yours:  %s\n  server: %s\n", cf.ID, cf.Op, cf.Key, outcome, orNone(cf.ClientValue), orNone(cf.ServerValue))
	}
	if c.RebaseNeeded() {
		fmt.Fprintln(e.stdout, "pushing is paused until the edits are rebased (deltasync client rebase) or discarded (deltasync client discard KEY)")
	}
	return nil
}

// clientVerify checks the state directory (client.Check) and prints what
// it holds; problems make it fail.
func clientVerify(e *env, o clientOptions) error {
	r, err := client.Check(o.Dir, client.CheckOptions{})
	if r == nil {
		return err
	}
	if o.JSON {
		if perr := printJSON(e.stdout, r); perr != nil {
			return perr
		}
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "version\t%d (%d records in %d chunks, stream hash %s)\n", r.Version, r.Records, r.Chunks, r.StreamHash)
	fmt.Fprintf(tw, "on disk\t%s (%d chunks stored)\n", bytesize.Format(r.StateBytes+r.DataBytes), r.StoredChunks)
	fmt.Fprintf(tw, "pending edits\t%d (%d sent, not yet pulled)\n", len(r.Queued), len(r.Sent))
	if r.InflightID != "" {
		fmt.Fprintf(tw, "patch in flight\t%s (%d edits)\n", r.InflightID, len(r.InflightSeqs))
	}
	fmt.Fprintf(tw, "conflicts\t%d\n", r.Conflicts)
	if r.Downloading {
		fmt.Fprintf(tw, "download\tin progress (the next pull resumes it)\n")
	}
	if r.NeedFull {
		fmt.Fprintf(tw, "next pull\ta full sync (damage was found)\n")
	}
	if ferr := tw.Flush(); ferr != nil {
		return ferr
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "ok")
	return nil
}

func orNone(b []byte) string {
	if len(b) == 0 {
		return "(none)"
	}
	return string(b)
}

func printJSON(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}
