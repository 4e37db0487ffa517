// grpc-proxy-client SOCKET: containerd's own snapshot proxy client, the code containerd
// 1.6 runs for a proxy plugin (snapshots/proxy over grpc-go, dialled as containerd dials
// one), against test-grpc's server and its test method table on SOCKET. It checks every
// answer, prints one line per check, and exits 1 at the first that fails. Built in GOPATH
// mode from Debian's Go packages (Makefile); run by test-grpc.
package main

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/dialer"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"google.golang.org/grpc"
)

func check(ok bool, what string, got ...interface{}) {
	if !ok {
		fmt.Printf("FAIL: %s: got %v\n", what, got)
		os.Exit(1)
	}
	fmt.Printf("ok: %s\n", what)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: grpc-proxy-client SOCKET")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, dialer.DialAddress(os.Args[1]), grpc.WithInsecure(),
		grpc.WithContextDialer(dialer.ContextDialer), grpc.WithBlock())
	check(err == nil, "dial", err)
	defer conn.Close()
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "thinproxy")
	ctx = namespaces.WithNamespace(ctx, "ns-go")

	info, err := sn.Stat(ctx, "alpha")
	check(err == nil && info.Name == "alpha" && info.Parent == "base" &&
		info.Kind == snapshots.KindActive && info.Labels["namespace"] == "ns-go" &&
		info.Created.Equal(time.Unix(1700000000, 5)) && info.Updated.Equal(time.Unix(1700000001, 0)),
		"Stat: a unary reply, with times, labels and the namespace from the metadata", info, err)

	_, err = sn.Stat(ctx, "missing")
	check(errdefs.IsNotFound(err) && strings.Contains(err.Error(), `no snapshot "missing" (100% sure, ü)`),
		"Stat: NotFound, its percent-encoded message decoded", err)

	var names []string
	err = sn.Walk(ctx, func(ctx context.Context, i snapshots.Info) error {
		names = append(names, i.Name)
		return nil
	}, "count=3000")
	ordered := len(names) == 3000
	for i := 0; ordered && i < len(names); i++ {
		ordered = names[i] == fmt.Sprintf("snap-%05d", i)
	}
	check(err == nil && ordered, "Walk: List's stream of 3000 replies, in order", len(names), err)

	mounts, err := sn.Prepare(ctx, "p1", "base", snapshots.WithLabels(map[string]string{"a": "1", "b": "2"}))
	want := []mount.Mount{{Type: "ext4", Source: "/dev/nbd7", Options: []string{"rw", "labels=2"}}}
	check(err == nil && reflect.DeepEqual(mounts, want), "Prepare: labels sent, mounts received", mounts, err)

	usage, err := sn.Usage(ctx, "p1")
	check(err == nil && usage.Size == 1<<40 && usage.Inodes == 7, "Usage: int64 fields", usage, err)

	err = sn.Commit(ctx, "exists", "p1")
	check(errdefs.IsAlreadyExists(err), "Commit: AlreadyExists", err)

	_, err = sn.View(ctx, "v", "base")
	check(errdefs.IsNotImplemented(err), "View: a method the table lacks is Unimplemented", err)

	// A slow call does not hold up the others on the same connection.
	var wg sync.WaitGroup
	var slowErr error
	slowDone := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, slowErr = sn.Prepare(ctx, "sleep", "")
		close(slowDone)
	}()
	time.Sleep(100 * time.Millisecond)
	fast := 0
	for i := 0; i < 50; i++ {
		if _, err := sn.Stat(ctx, fmt.Sprintf("fast-%d", i)); err == nil {
			fast++
		}
	}
	select {
	case <-slowDone:
		check(false, "50 Stat calls while a Prepare sleeps 2 s", "the Prepare ended first")
	default:
	}
	check(fast == 50, "50 Stat calls while a Prepare sleeps 2 s", fast)
	wg.Wait()
	check(slowErr == nil, "the sleeping Prepare", slowErr)

	check(sn.Remove(ctx, "p1") == nil && sn.(snapshots.Cleaner).Cleanup(ctx) == nil,
		"Remove and Cleanup: Empty replies")
}
