package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/deltasync/deltasync/admin"
	"github.com/deltasync/deltasync/internal/bytesize"
	"github.com/deltasync/deltasync/snapshot"
)

// orgSetFlags are the flags of `deltasync admin org set`, as given.
type orgSetFlags struct {
	offline, policy, webhookURL, webhookSecret, webhookSecretFile string
	validationURL, validationFallback                             string
	maxPatchOps                                                   int
	maxPatchBytes, maxRecordBytes, maxPendingBytes                int64
	maxOffline, validationTimeout                                 time.Duration
}

func (f *orgSetFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.offline, "offline-mode", "", "on or off: whether the org's users may sync offline")
	fs.StringVar(&f.policy, "conflict-policy", "", "client-wins, server-wins or reject")
	fs.IntVar(&f.maxPatchOps, "max-patch-ops", 0, "most edits per patch (0: the server's limit)")
	fs.Var((*bytesize.Flag)(&f.maxPatchBytes), "max-patch-bytes", "largest patch of several edits, e.g. 1MiB (0: the server's)")
	fs.Var((*bytesize.Flag)(&f.maxRecordBytes), "max-record-bytes", "largest value an edit may write (0: the server's)")
	fs.Var((*bytesize.Flag)(&f.maxPendingBytes), "max-pending-bytes", "pending edits a device may hold before it asks to connect (0: none)")
	fs.DurationVar(&f.maxOffline, "max-offline", 0, "longest a device may stay offline before it asks to connect, e.g. 72h (0: none)")
	fs.StringVar(&f.webhookURL, "webhook-url", "", `URL that receives the org's change feed as signed POSTs ("" removes it)`)
	fs.StringVar(&f.webhookSecret, "webhook-secret", "", "secret signing every request to the backend (better: --webhook-secret-file)")
	fs.StringVar(&f.webhookSecretFile, "webhook-secret-file", "", "file holding the webhook secret")
	fs.StringVar(&f.validationURL, "validation-url", "", `URL that validates each device patch before it applies ("" removes it)`)
	fs.DurationVar(&f.validationTimeout, "validation-timeout", 0, "deadline of one validation request, e.g. 2s")
	fs.StringVar(&f.validationFallback, "validation-fallback", "", "while the validator is down: wait (devices get 503 and retry) or pass")
}

// update turns the flags given (set) into a settings update.
func (f *orgSetFlags) update(set map[string]bool) (*admin.SettingsUpdate, error) {
	u := &admin.SettingsUpdate{}
	if set["offline-mode"] {
		on, ok := map[string]bool{"on": true, "off": false}[f.offline]
		if !ok {
			return nil, usagef("--offline-mode %q: want on or off", f.offline)
		}
		u.OfflineMode = &on
	}
	setIf(set, "conflict-policy", &u.ConflictPolicy, f.policy)
	setIf(set, "max-patch-ops", &u.MaxPatchOps, f.maxPatchOps)
	setIf(set, "max-patch-bytes", &u.MaxPatchBytes, f.maxPatchBytes)
	setIf(set, "max-record-bytes", &u.MaxRecordBytes, f.maxRecordBytes)
	setIf(set, "max-pending-bytes", &u.MaxPendingBytes, f.maxPendingBytes)
	setIf(set, "max-offline", &u.MaxOfflineSeconds, int64(f.maxOffline/time.Second))
	setIf(set, "webhook-url", &u.WebhookURL, f.webhookURL)
	setIf(set, "webhook-secret", &u.WebhookSecret, f.webhookSecret)
	setIf(set, "validation-url", &u.ValidationURL, f.validationURL)
	setIf(set, "validation-timeout", &u.ValidationTimeoutMs, f.validationTimeout.Milliseconds())
	setIf(set, "validation-fallback", &u.ValidationFallback, f.validationFallback)
	if set["webhook-secret-file"] {
		if set["webhook-secret"] {
			return nil, usagef("give --webhook-secret or --webhook-secret-file, not both")
		}
		b, err := os.ReadFile(f.webhookSecretFile)
		if err != nil {
			return nil, err
		}
		s := strings.TrimSpace(string(b))
		u.WebhookSecret = &s
	}
	if len(set) == 0 {
		return nil, usagef("org set: give at least one setting to change")
	}
	return u, nil
}

func setIf[T any](set map[string]bool, name string, dst **T, v T) {
	if set[name] {
		*dst = &v
	}
}

// runAdminOrg runs `deltasync admin org get|set O`.
func runAdminOrg(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || (args[0] != "get" && args[0] != "set") {
		return usagef("admin org: want get or set")
	}
	sub := args[0]
	var o adminOptions
	var f orgSetFlags
	fs := newFlagSet(e, "admin org "+sub, adminSynopsis)
	o.register(e, fs)
	if sub == "set" {
		f.register(fs)
	}
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("admin org %s takes one org, got %d arguments", sub, len(pos))
	}
	org := pos[0]
	if err := snapshot.ValidateName("org", org); err != nil {
		return usagef("%v", err)
	}
	c, err := o.client(e)
	if err != nil {
		return err
	}
	var out json.RawMessage
	if sub == "get" {
		out, err = c.Org(ctx, org)
	} else {
		set := map[string]bool{}
		fs.Visit(func(fl *flag.Flag) {
			if fl.Name != "server" && fl.Name != "token" && fl.Name != "json" {
				set[fl.Name] = true
			}
		})
		var u *admin.SettingsUpdate
		if u, err = f.update(set); err != nil {
			return err
		}
		out, err = c.SetOrg(ctx, org, u)
	}
	if err != nil {
		return err
	}
	return printSettings(e, o.JSON, out)
}

func printSettings(e *env, asJSON bool, raw json.RawMessage) error {
	var b bytes.Buffer
	if asJSON {
		if err := json.Compact(&b, raw); err != nil {
			return err
		}
	} else if err := json.Indent(&b, raw, "", "  "); err != nil {
		return err
	}
	_, err := fmt.Fprintln(e.stdout, b.String())
	return err
}
