// reference-snapshotter: containerd's own native or overlayfs snapshotter, served over
// containerd.services.snapshots.v1.Snapshots on a unix socket. A test helper only: it is
// what the conformance harness (../conformance_test.go) is checked against, so that a
// failure there is known to be the agent's and not the harness's. It is not thinproxy's
// snapshotter.
//
//	reference-snapshotter --root DIR --socket PATH [--type native|overlayfs]
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/native"
	"github.com/containerd/containerd/snapshots/overlay"
	"google.golang.org/grpc"
)

func main() {
	root := flag.String("root", "", "the snapshotter's state directory")
	socket := flag.String("socket", "", "the unix socket to serve on")
	kind := flag.String("type", "native", "native or overlayfs")
	flag.Parse()
	if *root == "" || *socket == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: reference-snapshotter --root DIR --socket PATH [--type native|overlayfs]")
		os.Exit(2)
	}

	var sn snapshots.Snapshotter
	var err error
	switch *kind {
	case "native":
		sn, err = native.NewSnapshotter(*root)
	case "overlayfs":
		sn, err = overlay.NewSnapshotter(*root)
	default:
		err = fmt.Errorf("unknown type %q", *kind)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "reference-snapshotter: %v\n", err)
		os.Exit(1)
	}

	l, err := net.Listen("unix", *socket)
	if err != nil {
		fmt.Fprintf(os.Stderr, "reference-snapshotter: %v\n", err)
		os.Exit(1)
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		srv.Stop()
	}()
	if err := srv.Serve(l); err != nil {
		fmt.Fprintf(os.Stderr, "reference-snapshotter: %v\n", err)
		os.Exit(1)
	}
	if err := sn.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "reference-snapshotter: close: %v\n", err)
		os.Exit(1)
	}
}
