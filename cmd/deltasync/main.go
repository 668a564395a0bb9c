// Command deltasync builds, serves and syncs deltasync data sets. Each
// subcommand lives in its own file, parses its flags into an options struct
// and calls one library function; main only dispatches and maps errors to
// exit codes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/term"

	"github.com/deltasync/deltasync/snapshot"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed (or some users failed)
	exitUsage   = 2 // bad command line
)

// command is one subcommand. To add one (serve, client …, gc, bench), write
// its file with a run function and add a line to commands.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

var commands = []command{
	{"build", "build the next version of one user's data set, or of every user in a directory", runBuild},
	{"gen", "generate realistic test data as NDJSON (one data set, or a directory of users)", runGen},
	{"token", "mint a bearer token (HS256 JWT) for a user or an admin", runToken},
	{"serve", "serve the sync API (fasthttp) on a local directory or S3 store", runServe},
	{"gc", "remove versions beyond retention and the packs they alone used", runGC},
	{"bench", "measure bytes on the wire and build speed for the edit scenarios, against a loopback server", runBench},
	{"admin", "the backend's admin API: patch users' data sets (one or fanned out), org settings", runAdmin},
	{"loadtest", "hold N simulated devices' long polls on R serve replicas and measure store requests, wake-ups, latency and memory", runLoadtest},
	{"client", "sync a local copy of one user's data set: pull, push, sync, status, get, put, merge, delete, export, offline, conflicts", runClient},
}

// env is what a command may touch of the process, so tests can run
// commands in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// stderrTerminal reports whether stderr is a terminal (progress bars
	// are drawn only there).
	stderrTerminal bool
	// wrapStore, if set, wraps every store a command opens, before the
	// start-up probe: tests use it for stores that misbehave.
	wrapStore func(snapshot.Store) snapshot.Store
}

// usageError is a bad command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	e := &env{
		stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv,
		stderrTerminal: term.IsTerminal(int(os.Stderr.Fd())),
	}
	code := run(ctx, e, os.Args[1:])
	stop()
	os.Exit(code)
}

// run dispatches to a subcommand and maps its error to an exit code.
func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		printUsage(e.stderr)
		return exitUsage
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "--help" || name == "-help" {
		if len(args) > 1 {
			// "deltasync help build" is "deltasync build --help".
			return run(ctx, e, []string{args[1], "--help"})
		}
		printUsage(e.stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name != name {
			continue
		}
		err := c.run(ctx, e, args[1:])
		var ue *usageError
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, flag.ErrHelp):
			return exitOK
		case errors.As(err, &ue):
			fmt.Fprintf(e.stderr, "deltasync %s: %v\nRun 'deltasync %s --help' for usage.\n", name, err, name)
			return exitUsage
		default:
			fmt.Fprintf(e.stderr, "deltasync %s: %v\n", name, err)
			return exitFailure
		}
	}
	fmt.Fprintf(e.stderr, "deltasync: unknown command %q\n\n", name)
	printUsage(e.stderr)
	return exitUsage
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: deltasync <command> [flags]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'deltasync <command> --help' for a command's flags.")
}

// newFlagSet returns a flag set that reports errors instead of exiting; its
// usage (synopsis, then flags in --flag style) goes to stdout on --help.
func newFlagSet(e *env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("deltasync "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse errors are reported once, by run
	fs.Usage = func() {
		w := e.stdout
		fmt.Fprintf(w, "Usage:\n%s\nFlags:\n", synopsis)
		fs.VisitAll(func(f *flag.Flag) {
			typ, usage := flag.UnquoteUsage(f)
			line := "  --" + f.Name
			if typ != "" {
				line += " " + typ
			}
			fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
				fmt.Fprintf(w, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(w)
		})
	}
	return fs
}

// parseFlags parses args, turning parse errors into usage errors and
// printing usage for --help.
func parseFlags(fs *flag.FlagSet, args []string) error {
	// The flag package prints the whole usage on any parse error; run
	// prints the error and a hint instead, and usage only for --help.
	usage := fs.Usage
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.Usage = usage
	if errors.Is(err, flag.ErrHelp) {
		usage()
		return err
	}
	if err != nil {
		return &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
