// Command ferretdb-test-server runs an embedded FerretDB (SQLite backend) for
// shippy-rs integration tests, which need a MongoDB-wire-compatible server.
//
// Usage:
//
//	ferretdb-test-server --listen-addr 127.0.0.1:0 --sqlite-dir /tmp/x [--log-level error] [--exit-on-stdin-close]
//
// Protocol with the parent process:
//   - once the server answers a real `ping` on its socket, exactly one line
//     "LISTENING <host>:<port>" is written to stdout (the actually bound
//     address, so port 0 is fine) and stdout is flushed;
//   - everything else (FerretDB's logs, errors) goes to stderr;
//   - SIGTERM or SIGINT shuts it down cleanly with exit status 0; a second
//     signal, or a shutdown that takes longer than --shutdown-timeout,
//     exits at once with status 1;
//   - with --exit-on-stdin-close it also shuts down (cleanly, exit 0) when its
//     stdin reaches EOF, e.g. because the test process that holds the other
//     end of the pipe died: no stray servers after a crashed test run;
//   - startup failures exit with status 1 (bad flags: 2) without printing
//     the LISTENING line.
//
// The default log level is "error": FerretDB logs every error reply (such as
// an expected duplicate-key error) and every client disconnect at warn/info.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("ferretdb-test-server", flag.ContinueOnError)
	listenAddr := fs.String("listen-addr", "127.0.0.1:0", "TCP `host:port` to listen on; port 0 picks a free port")
	sqliteDir := fs.String("sqlite-dir", "", "`directory` holding the SQLite database files (created if missing; required)")
	logLevel := fs.String("log-level", "error", "log level on stderr: debug, info, warn or error")
	exitOnStdinClose := fs.Bool("exit-on-stdin-close", false, "shut down when stdin reaches EOF (give it a pipe that the parent keeps open)")
	readyTimeout := fs.Duration("ready-timeout", 30*time.Second, "give up if the server does not answer ping within this `duration`")
	shutdownTimeout := fs.Duration("shutdown-timeout", 10*time.Second, "exit with status 1 if a clean shutdown takes longer than this `duration`")

	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "ferretdb-test-server: unexpected arguments: %q\n", fs.Args())
		return 2
	}
	if *sqliteDir == "" {
		fmt.Fprintln(os.Stderr, "ferretdb-test-server: --sqlite-dir is required")
		return 2
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb-test-server: bad --log-level %q: %v\n", *logLevel, err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(logger)

	sqliteURL, err := sqliteURLForDir(*sqliteDir)
	if err != nil {
		logger.Error("bad --sqlite-dir", "dir", *sqliteDir, "error", err)
		return 1
	}

	// Signals are caught from here on, so that a SIGTERM during startup also
	// ends the program cleanly.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if *exitOnStdinClose {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			logger.Info("stdin closed, shutting down")
			cancel()
		}()
	}

	// New binds the listener itself (net.Listen), so with port 0 the kernel
	// picks the port and MongoDBURI reports the bound address: no need to
	// pick a free port up front (which would race with other processes).
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listenAddr},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: sqliteURL,
	})
	if err != nil {
		logger.Error("failed to start FerretDB", "error", err)
		return 1
	}

	addr, err := hostPortFromURI(f.MongoDBURI())
	if err != nil {
		logger.Error("cannot determine the bound address", "error", err)
		return 1
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(ctx) // returns once listeners, connections and the backend are closed
	}()

	if err := waitReady(ctx, addr, *readyTimeout); err != nil {
		if ctx.Err() != nil {
			// Stopped by a signal while starting up.
			return waitShutdown(done, *shutdownTimeout, logger)
		}
		logger.Error("FerretDB did not become ready", "addr", addr, "error", err)
		return 1
	}

	if _, err := fmt.Fprintf(os.Stdout, "LISTENING %s\n", addr); err != nil {
		logger.Error("cannot write the ready line", "error", err)
		return 1
	}
	_ = os.Stdout.Sync() // os.Stdout is unbuffered; Sync fails harmlessly on pipes

	logger.Info("ready", "addr", addr, "sqlite_url", sqliteURL)

	select {
	case <-ctx.Done():
	case <-done:
		// A signal that came while we were still announcing readiness makes both cases ready,
		// and select picks one at random: Run ending after a signal is an orderly stop.
		if ctx.Err() == nil {
			logger.Error("FerretDB stopped unexpectedly")
			return 1
		}
	}

	return waitShutdown(done, *shutdownTimeout, logger)
}

// waitShutdown waits for Run to return after the context was canceled.
func waitShutdown(done <-chan struct{}, timeout time.Duration, logger *slog.Logger) int {
	logger.Info("shutting down")

	// NotifyContext keeps swallowing further signals until stop() is called,
	// so listen for a second one ourselves: "press Ctrl-C twice" exits now.
	again := make(chan os.Signal, 1)
	signal.Notify(again, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(again)

	t := time.NewTimer(timeout)
	defer t.Stop()

	select {
	case <-done:
		logger.Info("stopped")
		return 0
	case sig := <-again:
		logger.Error("second signal, exiting without a clean shutdown", "signal", sig.String())
	case <-t.C:
		logger.Error("clean shutdown took too long", "timeout", timeout.String())
	}
	return 1
}

// sqliteURLForDir creates dir if needed and returns the `file:` URI of it
// (absolute path, trailing slash) that FerretDB's SQLite backend expects.
func sqliteURLForDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	// FerretDB appends "<db>.sqlite" to the unescaped path when it opens each
	// database, so these characters would be read as URI syntax and the files
	// would land elsewhere. Spaces are fine.
	if strings.ContainsAny(abs, "?#%") {
		return "", fmt.Errorf("the path must not contain '?', '#' or '%%': %q", abs)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return "", err
	}
	if !strings.HasSuffix(abs, "/") {
		abs += "/"
	}
	// url.URL escapes characters such as spaces and '?' in the path.
	return (&url.URL{Scheme: "file", Path: abs}).String(), nil
}

// hostPortFromURI extracts host:port from "mongodb://host:port/".
func hostPortFromURI(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", err
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return "", fmt.Errorf("unexpected MongoDB URI %q: %w", uri, err)
	}
	return u.Host, nil
}

// waitReady sends `ping` over the MongoDB wire protocol until the server
// answers ok: 1. A bare TCP connect is not enough (the kernel accepts into
// the backlog before the accept loop runs), and ping also touches the
// SQLite backend.
func waitReady(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	delay := 5 * time.Millisecond
	var lastErr error
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if lastErr = pingOnce(addr, time.Second); lastErr == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return lastErr
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		if delay < 200*time.Millisecond {
			delay *= 2
		}
	}
}

const opMsg = 2013 // OP_MSG opcode

// pingOnce opens a connection, runs {ping: 1, $db: "admin"} as an OP_MSG and
// checks that the reply has a truthy "ok".
func pingOnce(addr string, timeout time.Duration) error {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))

	body := bsonDoc(
		bsonInt32("ping", 1),
		bsonString("$db", "admin"),
	)

	var msg bytes.Buffer
	header := make([]byte, 16)
	binary.LittleEndian.PutUint32(header[0:], uint32(16+4+1+len(body))) // messageLength
	binary.LittleEndian.PutUint32(header[4:], 1)                        // requestID
	binary.LittleEndian.PutUint32(header[8:], 0)                        // responseTo
	binary.LittleEndian.PutUint32(header[12:], opMsg)                   // opCode
	msg.Write(header)
	msg.Write([]byte{0, 0, 0, 0}) // flagBits
	msg.WriteByte(0)              // section kind 0: body
	msg.Write(body)

	if _, err := conn.Write(msg.Bytes()); err != nil {
		return err
	}

	if _, err := io.ReadFull(conn, header); err != nil {
		return fmt.Errorf("reading reply header: %w", err)
	}
	length := binary.LittleEndian.Uint32(header[0:])
	if op := binary.LittleEndian.Uint32(header[12:]); op != opMsg {
		return fmt.Errorf("unexpected reply opcode %d", op)
	}
	if length < 16+4+1+5 || length > 48<<20 {
		return fmt.Errorf("unexpected reply length %d", length)
	}
	rest := make([]byte, length-16)
	if _, err := io.ReadFull(conn, rest); err != nil {
		return fmt.Errorf("reading reply: %w", err)
	}
	if rest[4] != 0 {
		return fmt.Errorf("unexpected reply section kind %d", rest[4])
	}

	ok, err := bsonOK(rest[5:])
	if err != nil {
		return fmt.Errorf("parsing reply: %w", err)
	}
	if !ok {
		return errors.New("ping reply has no truthy ok field")
	}
	return nil
}

// Minimal BSON encoding for the ping command.

func bsonDoc(elems ...[]byte) []byte {
	n := 4 + 1
	for _, e := range elems {
		n += len(e)
	}
	out := binary.LittleEndian.AppendUint32(make([]byte, 0, n), uint32(n))
	for _, e := range elems {
		out = append(out, e...)
	}
	return append(out, 0)
}

func bsonInt32(name string, v int32) []byte {
	out := append([]byte{0x10}, name...)
	out = append(out, 0)
	return binary.LittleEndian.AppendUint32(out, uint32(v))
}

func bsonString(name, v string) []byte {
	out := append([]byte{0x02}, name...)
	out = append(out, 0)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(v)+1))
	out = append(out, v...)
	return append(out, 0)
}

// bsonOK walks the top-level elements of a BSON document and reports whether
// it has a numeric or boolean "ok" field that is non-zero / true.
func bsonOK(doc []byte) (bool, error) {
	if len(doc) < 5 {
		return false, errors.New("short document")
	}
	size := int(binary.LittleEndian.Uint32(doc))
	if size < 5 || size > len(doc) {
		return false, errors.New("bad document size")
	}
	p := 4
	for p < size-1 {
		typ := doc[p]
		p++
		end := bytes.IndexByte(doc[p:size], 0)
		if end < 0 {
			return false, errors.New("unterminated element name")
		}
		name := string(doc[p : p+end])
		p += end + 1

		need := func(n int) error {
			if n < 0 || p+n > size {
				return errors.New("truncated element")
			}
			return nil
		}
		lenPrefixed := func(extra int) (int, error) {
			if err := need(4); err != nil {
				return 0, err
			}
			return int(int32(binary.LittleEndian.Uint32(doc[p:]))) + extra, nil
		}

		var n int
		switch typ {
		case 0x01: // double
			n = 8
			if name == "ok" && need(n) == nil {
				return math.Float64frombits(binary.LittleEndian.Uint64(doc[p:])) != 0, nil
			}
		case 0x10: // int32
			n = 4
			if name == "ok" && need(n) == nil {
				return binary.LittleEndian.Uint32(doc[p:]) != 0, nil
			}
		case 0x12: // int64
			n = 8
			if name == "ok" && need(n) == nil {
				return binary.LittleEndian.Uint64(doc[p:]) != 0, nil
			}
		case 0x08: // bool
			n = 1
			if name == "ok" && need(n) == nil {
				return doc[p] != 0, nil
			}
		case 0x02, 0x0D, 0x0E: // string, JavaScript, symbol: int32 length + bytes
			var err error
			if n, err = lenPrefixed(4); err != nil {
				return false, err
			}
		case 0x03, 0x04, 0x0F: // document, array, code with scope: length includes itself
			var err error
			if n, err = lenPrefixed(0); err != nil {
				return false, err
			}
		case 0x05: // binary: int32 length + subtype + bytes
			var err error
			if n, err = lenPrefixed(5); err != nil {
				return false, err
			}
		case 0x06, 0x0A, 0x7F, 0xFF: // undefined, null, max key, min key
			n = 0
		case 0x07: // ObjectId
			n = 12
		case 0x09, 0x11: // datetime, timestamp
			n = 8
		case 0x13: // decimal128
			n = 16
		case 0x0B: // regex: two cstrings
			for i := 0; i < 2; i++ {
				e := bytes.IndexByte(doc[p+n:size], 0)
				if e < 0 {
					return false, errors.New("unterminated regex")
				}
				n += e + 1
			}
		default:
			return false, fmt.Errorf("unsupported BSON type 0x%02x", typ)
		}
		if err := need(n); err != nil {
			return false, err
		}
		p += n
	}
	return false, nil
}
