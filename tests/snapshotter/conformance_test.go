// containerd's snapshotter conformance suite (snapshots/testsuite), run through
// containerd's own proxy client (snapshots/proxy) against a snapshotter agent that
// serves containerd.services.snapshots.v1.Snapshots on a unix socket.
//
// The suite runs its subtests in parallel with equal keys, so every subtest gets an
// agent of its own: the constructor starts TP_SNAPSHOTTER_CMD (through /bin/sh -c, in
// a process group of its own) for each test root, waits until its socket answers,
// dials it as containerd dials a proxy plugin, and the subtest's cleanup stops it.
//
// Environment:
//
//	TP_SNAPSHOTTER_CMD      the agent's command; {root}, {socket} and {id} are replaced
//	                        (shell-quoted) by the subtest's root directory, the socket the
//	                        agent must listen on, and a number unique in this run
//	                        (1, 2, ...). Also given to the command as TP_SNAPSHOTTER_ROOT,
//	                        TP_SNAPSHOTTER_SOCKET and TP_SNAPSHOTTER_ID.
//	TP_SNAPSHOTTER_NAME     the snapshotter name the requests carry (default thinproxy,
//	                        containerd sends the proxy plugin's name); {id} is replaced.
//	TP_SNAPSHOTTER_LOGS     a directory for each agent's output, ID.log (default: the
//	                        test's stderr)
//	TP_SNAPSHOTTER_TIMEOUT  seconds an agent has to listen, and to exit when stopped
//	                        (default 60)
//
// Build (GOPATH mode, offline, on Debian's golang-github-containerd-containerd-dev):
// see the Makefile's $(BUILD)/tests/snapshotter/conformance.test.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/pkg/dialer"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

var agents int64

// TestSnapshotterConformance runs the whole suite, one fresh agent per subtest.
func TestSnapshotterConformance(t *testing.T) {
	command := os.Getenv("TP_SNAPSHOTTER_CMD")
	if command == "" {
		t.Fatal("TP_SNAPSHOTTER_CMD is not set: the snapshotter command to test, " +
			"e.g. 'thinproxy snapshotter --socket {socket}'")
	}
	testsuite.SnapshotterSuite(t, "thinproxy", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		return startAgent(ctx, command, root)
	})
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// timeout is TP_SNAPSHOTTER_TIMEOUT, or 60 s.
func timeout() time.Duration {
	if s := os.Getenv("TP_SNAPSHOTTER_TIMEOUT"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return time.Duration(n) * time.Second
		}
	}
	return 60 * time.Second
}

// agent is one running snapshotter process and the connection to it.
type agent struct {
	id     string
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait returned; err holds its result
	err    error
	log    io.Closer
	conn   *grpc.ClientConn
}

// startAgent starts the command for root and returns a snapshotter connected to it.
func startAgent(ctx context.Context, command, root string) (snapshots.Snapshotter, func() error, error) {
	id := strconv.FormatInt(atomic.AddInt64(&agents, 1), 10)
	// Beside the root, not in it: the root belongs to the snapshotter. The suite's
	// temporary directory (root's parent) is removed after the cleanup.
	socket := filepath.Join(filepath.Dir(root), "agent.sock")
	line := strings.NewReplacer("{root}", shellQuote(root), "{socket}", shellQuote(socket),
		"{id}", id).Replace(command)

	a := &agent{id: id, exited: make(chan struct{})}
	a.cmd = exec.Command("/bin/sh", "-c", line)
	a.cmd.Env = append(os.Environ(), "TP_SNAPSHOTTER_ROOT="+root,
		"TP_SNAPSHOTTER_SOCKET="+socket, "TP_SNAPSHOTTER_ID="+id)
	// A group of its own, so that stopping it stops whatever a wrapper started.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	a.cmd.Stdout, a.cmd.Stderr = os.Stderr, os.Stderr
	if dir := os.Getenv("TP_SNAPSHOTTER_LOGS"); dir != "" {
		f, err := os.OpenFile(filepath.Join(dir, id+".log"),
			os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0644)
		if err != nil {
			return nil, nil, err
		}
		a.log = f
		a.cmd.Stdout, a.cmd.Stderr = f, f
	}
	if err := a.cmd.Start(); err != nil {
		a.closeLog()
		return nil, nil, fmt.Errorf("agent %s: %s: %w", id, line, err)
	}
	go func() {
		a.err = a.cmd.Wait()
		close(a.exited)
	}()

	if err := a.waitListening(socket); err != nil {
		a.stop()
		return nil, nil, fmt.Errorf("agent %s (%s): %w", id, line, err)
	}
	// Dialled as containerd dials a proxy plugin (services/server: getClient).
	conn, err := grpc.Dial(dialer.DialAddress(socket), grpc.WithInsecure(),
		grpc.WithContextDialer(dialer.ContextDialer))
	if err != nil {
		a.stop()
		return nil, nil, fmt.Errorf("agent %s: dial %s: %w", id, socket, err)
	}
	a.conn = conn
	name := strings.ReplaceAll(os.Getenv("TP_SNAPSHOTTER_NAME"), "{id}", id)
	if name == "" {
		name = "thinproxy"
	}
	return proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), name), a.stop, nil
}

// waitListening waits until socket accepts a connection, the agent exits, or the
// timeout passes.
func (a *agent) waitListening(socket string) error {
	deadline := time.Now().Add(timeout())
	for {
		c, err := net.Dial("unix", socket)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-a.exited:
			return fmt.Errorf("exited (%v) before listening on %s", a.err, socket)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after %s: %v", socket, timeout(), err)
		}
	}
}

// stop closes the connection and stops the agent: SIGTERM to its group, SIGKILL after
// the timeout. An agent that had already died, exits non-zero or has to be killed is an
// error of the subtest.
func (a *agent) stop() error {
	var err error
	if a.conn != nil {
		a.conn.Close()
	}
	select {
	case <-a.exited:
		err = fmt.Errorf("agent %s had exited before the end of its test: %v", a.id, a.err)
	default:
		syscall.Kill(-a.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-a.exited:
			if !stoppedByTerm(a.err) {
				err = fmt.Errorf("agent %s exited on SIGTERM: %v", a.id, a.err)
			}
		case <-time.After(timeout()):
			syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
			<-a.exited
			err = fmt.Errorf("agent %s did not exit within %s of SIGTERM, killed", a.id, timeout())
		}
	}
	a.closeLog()
	return err
}

// stoppedByTerm: the command exited 0, or was ended by the SIGTERM itself (sh -c
// reports a child killed by signal N as status 128+N).
func stoppedByTerm(err error) bool {
	if err == nil {
		return true
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok {
		return false
	}
	return (ws.Signaled() && ws.Signal() == syscall.SIGTERM) ||
		(ws.Exited() && ws.ExitStatus() == 128+int(syscall.SIGTERM))
}

func (a *agent) closeLog() {
	if a.log != nil {
		a.log.Close()
		a.log = nil
	}
}
