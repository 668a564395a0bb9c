package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"github.com/deltasync/deltasync/admin"
	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

const adminSynopsis = `  deltasync admin patch --org O (--user U | --users-file F) --input OPS.ndjson [--id ID] [--json]
  deltasync admin org get O [--json]
  deltasync admin org set O [--offline-mode on|off] [--conflict-policy P] [--max-patch-ops N] ...

patch applies the ops of OPS.ndjson (one op per line, as in a patch:
{"op":"put","key":"…","value":…}, "merge" with "patch", "delete") to the
head of each user's data set, as the backend (system of record): O(change)
per user, idempotent per (id, user). --users-file names one user per line
(blank lines and # comments skipped); users go to the server in batches of
--batch. The id defaults to a hash of the ops, so running the same command
again after a failure applies nothing twice: give --id to send the same ops
again on purpose. One line per user is printed (--json: the server's result
lines); the exit code is 1 if any user failed.

org get prints an org's settings; org set changes the ones given.

The server is --server (env DELTASYNC_SERVER); the token is --token (env
DELTASYNC_ADMIN_TOKEN), an admin token: 'deltasync token --admin [--org O]'.
`

// adminOptions are the flags every admin command shares.
type adminOptions struct {
	Server, Token string
	JSON          bool
}

func (o *adminOptions) register(e *env, fs *flag.FlagSet) {
	fs.StringVar(&o.Server, "server", "", "server URL (env DELTASYNC_SERVER)")
	fs.StringVar(&o.Token, "token", "", "admin bearer token (env DELTASYNC_ADMIN_TOKEN)")
	fs.BoolVar(&o.JSON, "json", false, "print JSON")
}

func (o *adminOptions) client(e *env) (*admin.Client, error) {
	o.Server = cmp.Or(o.Server, e.getenv("DELTASYNC_SERVER"))
	o.Token = cmp.Or(o.Token, e.getenv("DELTASYNC_ADMIN_TOKEN"))
	if o.Server == "" || o.Token == "" {
		return nil, usagef("give --server and --token (or DELTASYNC_SERVER and DELTASYNC_ADMIN_TOKEN)")
	}
	return &admin.Client{URL: o.Server, Token: o.Token}, nil
}

func runAdmin(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return usagef("missing admin command (patch, org)")
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		fmt.Fprint(e.stdout, "Usage:\n"+adminSynopsis)
		return flag.ErrHelp
	case "patch":
		return runAdminPatch(ctx, e, args[1:])
	case "org":
		return runAdminOrg(ctx, e, args[1:])
	}
	return usagef("unknown admin command %q (patch, org)", args[0])
}

// adminPatchOptions are the flags of `deltasync admin patch`.
type adminPatchOptions struct {
	adminOptions
	Org, User, UsersFile, Input, ID string
	Batch                           int
}

func runAdminPatch(ctx context.Context, e *env, args []string) error {
	var o adminPatchOptions
	fs := newFlagSet(e, "admin patch", adminSynopsis)
	o.register(e, fs)
	fs.StringVar(&o.Org, "org", "", "org of the users")
	fs.StringVar(&o.User, "user", "", "the one user to patch")
	fs.StringVar(&o.UsersFile, "users-file", "", "file naming the users to patch, one per line")
	fs.StringVar(&o.Input, "input", "", `NDJSON file of ops, one per line ("-": stdin)`)
	fs.StringVar(&o.ID, "id", "", "patch id (default: a hash of the ops)")
	fs.IntVar(&o.Batch, "batch", 10_000, "users per request")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if o.Org == "" || o.Input == "" || (o.User == "") == (o.UsersFile == "") || o.Batch <= 0 {
		return usagef("give --org, --input and one of --user and --users-file (and a positive --batch)")
	}
	c, err := o.client(e)
	if err != nil {
		return err
	}
	users, err := adminUsers(e, o)
	if err != nil {
		return err
	}
	ops, err := readOps(e, o.Input)
	if err != nil {
		return err
	}
	if o.ID == "" {
		o.ID = defaultPatchID(ops)
	}
	return sendFanout(ctx, e, c, o, users, ops)
}

// adminUsers are the users named by --user or --users-file, checked.
func adminUsers(e *env, o adminPatchOptions) ([]string, error) {
	if o.User != "" {
		if err := snapshot.ValidateName("user", o.User); err != nil {
			return nil, usagef("--user: %v", err)
		}
		return []string{o.User}, nil
	}
	f, err := openInput(e, o.UsersFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var users []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		u := strings.TrimSpace(sc.Text())
		if u == "" || strings.HasPrefix(u, "#") || seen[u] {
			continue
		}
		if err := snapshot.ValidateName("user", u); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", o.UsersFile, n, err)
		}
		seen[u] = true
		users = append(users, u)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", o.UsersFile, err)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("%s names no users", o.UsersFile)
	}
	return users, nil
}

func openInput(e *env, path string) (io.ReadCloser, error) {
	if path == "-" {
		return io.NopCloser(e.stdin), nil
	}
	return os.Open(path)
}

// readOps reads one op per line and checks them as the server will, so a
// bad line is named before anything is sent.
func readOps(e *env, path string) ([]diff.Op, error) {
	f, err := openInput(e, path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ops []diff.Op
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 2*snapshot.MaxValueLen+1024)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		var op diff.Op
		if err := dec.Decode(&op); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		p := diff.Patch{ID: "check", Ops: []diff.Op{op}}
		if err := p.Validate(diff.Limits{MaxOps: 1, MaxBytes: math.MaxInt64, MaxRecordBytes: snapshot.MaxValueLen}); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		ops = append(ops, p.Ops[0])
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(ops) == 0 {
		return nil, fmt.Errorf("%s holds no ops", path)
	}
	return ops, nil
}

// defaultPatchID names a patch after its ops, so the same command run
// again is idempotent.
func defaultPatchID(ops []diff.Op) string {
	b, _ := diff.EncodePatch(&diff.Patch{ID: "", Ops: ops})
	sum := sha256.Sum256(b)
	return "cli-" + hex.EncodeToString(sum[:12])
}

// fanoutTally counts the users of a fan-out by outcome.
type fanoutTally struct{ applied, unchanged, duplicate, failed int }

func sendFanout(ctx context.Context, e *env, c *admin.Client, o adminPatchOptions, users []string, ops []diff.Op) error {
	var t fanoutTally
	var sendErr error
	for start := 0; start < len(users); start += o.Batch {
		batch := users[start:min(start+o.Batch, len(users))]
		req := &wire.FanoutRequest{ID: o.ID, Users: batch, Ops: ops}
		err := c.Fanout(ctx, o.Org, req, func(r wire.FanoutResult) error {
			printFanoutResult(e, o.JSON, r, &t)
			return nil
		})
		if err != nil {
			sendErr = err
			break
		}
	}
	if !o.JSON {
		fmt.Fprintf(e.stdout, "patch %s: %d users: %d applied, %d unchanged, %d already applied, %d failed\n",
			o.ID, len(users), t.applied, t.unchanged, t.duplicate, t.failed)
	}
	if sendErr != nil {
		return sendErr
	}
	if t.failed > 0 {
		return fmt.Errorf("%d of %d users failed; run the same command again to retry them", t.failed, len(users))
	}
	return nil
}

func printFanoutResult(e *env, asJSON bool, r wire.FanoutResult, t *fanoutTally) {
	what := ""
	switch {
	case r.Error != nil:
		t.failed++
		what = fmt.Sprintf("FAILED (%s): %s", r.Error.Code, r.Error.Message)
	case r.PatchResponse == nil:
		t.failed++
		what = "FAILED: no answer"
	case r.Duplicate:
		t.duplicate++
		what = fmt.Sprintf("version %d (already applied)", r.Version)
	case r.Created:
		t.applied++
		what = fmt.Sprintf("version %d", r.Version)
	default:
		t.unchanged++
		what = fmt.Sprintf("version %d (unchanged)", r.Version)
	}
	if asJSON {
		b, _ := json.Marshal(r)
		fmt.Fprintln(e.stdout, string(b))
		return
	}
	fmt.Fprintf(e.stdout, "%s: %s\n", r.User, what)
}
