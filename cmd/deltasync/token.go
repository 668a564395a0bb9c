package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/deltasync/deltasync/server"
)

const tokenSynopsis = `  deltasync token --org O --user U [--ttl 1h] [--jwt-secret S | --dev]
  deltasync token --admin [--org O] [--ttl 1h] [--jwt-secret S | --dev]

Mints an HS256 bearer token for a user (or an admin token) and prints it.
An admin token with --org administers that org only (its settings, admin
patches, change feed and consumers); without --org it is the deployment's
admin and reaches every org.
The secret is the server's: --jwt-secret, else DELTASYNC_JWT_SECRET (better:
a command line is visible to every user of the machine), else with --dev
the public development secret that 'serve --dev' accepts.
`

// tokenOptions are the flags of `deltasync token`.
type tokenOptions struct {
	Org, User string
	TTL       time.Duration
	Admin     bool
	Secret    string
	Dev       bool
	JSON      bool
	Issuer    string
	Audience  string
}

func runToken(_ context.Context, e *env, args []string) error {
	var o tokenOptions
	fs := newFlagSet(e, "token", tokenSynopsis)
	fs.StringVar(&o.Org, "org", "", "org the token opens (with --admin: the one org it administers)")
	fs.StringVar(&o.User, "user", "", "user the token opens")
	fs.DurationVar(&o.TTL, "ttl", time.Hour, "how long the token is valid")
	fs.BoolVar(&o.Admin, "admin", false, "mint an admin token (opens the admin API; with --org, that org's only)")
	fs.StringVar(&o.Secret, "jwt-secret", "", "HS256 secret, at least 32 bytes (env DELTASYNC_JWT_SECRET)")
	fs.BoolVar(&o.Dev, "dev", false, "sign with the public development secret (server.DevJWTSecret)")
	fs.StringVar(&o.Issuer, "issuer", e.getenv("DELTASYNC_JWT_ISSUER"), "iss claim, for a server started with --jwt-issuer (env DELTASYNC_JWT_ISSUER)")
	fs.StringVar(&o.Audience, "audience", e.getenv("DELTASYNC_JWT_AUDIENCE"), "aud claim, for a server started with --jwt-audience (env DELTASYNC_JWT_AUDIENCE)")
	fs.BoolVar(&o.JSON, "json", false, `print {"token":…,"expires":…} instead of the bare token`)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if o.Secret == "" {
		o.Secret = e.getenv("DELTASYNC_JWT_SECRET")
	}
	switch {
	case o.Secret != "" && o.Dev:
		return usagef("--dev signs with the development secret; do not also give --jwt-secret or DELTASYNC_JWT_SECRET")
	case o.Dev:
		o.Secret = server.DevJWTSecret
		fmt.Fprintln(e.stderr, "warning: signed with the public development secret; only a server started with --dev accepts it")
	case o.Secret == "":
		return usagef("no secret: give --jwt-secret, set DELTASYNC_JWT_SECRET, or use --dev")
	}
	if !o.Admin && (o.Org == "" || o.User == "") {
		return usagef("a user token needs --org and --user (or use --admin)")
	}
	if o.Admin && o.User != "" {
		return usagef("an admin token names no --user (give --org to limit it to one org)")
	}
	if o.TTL > server.DefaultJWTMaxLifetime {
		fmt.Fprintf(e.stderr, "warning: a --ttl over %v is refused by a server with the default --jwt-max-lifetime\n", server.DefaultJWTMaxLifetime)
	}
	expires := time.Now().Add(o.TTL)
	c := server.Claims{Org: o.Org, User: o.User, Admin: o.Admin, Issuer: o.Issuer}
	if o.Audience != "" {
		c.Audience = []string{o.Audience}
	}
	tok, err := server.MintToken([]byte(o.Secret), c, o.TTL)
	if err != nil {
		return err
	}
	if o.JSON {
		return json.NewEncoder(e.stdout).Encode(map[string]any{"token": tok, "expires": expires.UTC().Format(time.RFC3339)})
	}
	_, err = fmt.Fprintln(e.stdout, tok)
	return err
}
