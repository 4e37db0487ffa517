// snapshotter-client: one request to a snapshotter agent's Snapshots service
// (containerd.services.snapshots.v1) per run, for the guest tests to drive the agent
// from the shell. It speaks gRPC with containerd's generated client, dialled as
// containerd dials a proxy plugin, and keeps the gRPC status code of a failure.
//
//	snapshotter-client --socket PATH [--namespace NS] [--snapshotter NAME] COMMAND ARGS
//
//	prepare KEY [PARENT] [K=V...]   view KEY [PARENT] [K=V...]   mounts KEY
//	commit NAME KEY [K=V...]        remove KEY                   stat KEY
//	update KEY [--path P]... [K=V...]   usage KEY   list [FILTER...]   cleanup
//
// Mounts print as "TYPE SOURCE OPTIONS" (OPTIONS comma-separated, "-" for none); an info
// as JSON; list prints one info per line. A failure prints "CODE: message" (CODE as
// grpc-go names it, e.g. NotFound) on stderr and exits 1; a usage error exits 2.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/dialer"
	ptypes "github.com/gogo/protobuf/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

type info struct {
	Name    string            `json:"name"`
	Parent  string            `json:"parent"`
	Kind    string            `json:"kind"`
	Created string            `json:"created"`
	Updated string            `json:"updated"`
	Labels  map[string]string `json:"labels"`
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: snapshotter-client --socket PATH [--namespace NS] [--snapshotter NAME] COMMAND ARGS")
	os.Exit(2)
}

// labels parses K=V arguments.
func labels(args []string) map[string]string {
	l := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			usage()
		}
		l[k] = v
	}
	return l
}

func kindName(k snapshotsapi.Kind) string {
	switch k {
	case snapshotsapi.KindActive:
		return "active"
	case snapshotsapi.KindView:
		return "view"
	case snapshotsapi.KindCommitted:
		return "committed"
	}
	return "unknown"
}

func printInfo(i snapshotsapi.Info) {
	b, _ := json.Marshal(info{i.Name, i.Parent, kindName(i.Kind),
		i.CreatedAt.UTC().Format(time.RFC3339Nano), i.UpdatedAt.UTC().Format(time.RFC3339Nano),
		i.Labels})
	fmt.Println(string(b))
}

func printMounts(ms []*types.Mount) {
	for _, m := range ms {
		opts := strings.Join(m.Options, ",")
		if opts == "" {
			opts = "-"
		}
		fmt.Printf("%s %s %s\n", m.Type, m.Source, opts)
	}
}

// split separates KEY [PARENT] from the K=V labels after them.
func split(args []string, max int) ([]string, []string) {
	n := 0
	for n < len(args) && n < max && !strings.Contains(args[n], "=") {
		n++
	}
	return args[:n], args[n:]
}

func main() {
	socket := flag.String("socket", "", "the agent's socket")
	ns := flag.String("namespace", "default", "containerd namespace (containerd-namespace metadata)")
	name := flag.String("snapshotter", "thinproxy", "the snapshotter name in requests")
	flag.Parse()
	args := flag.Args()
	if *socket == "" || len(args) == 0 {
		usage()
	}
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), *ns), 10*time.Minute)
	defer cancel()
	conn, err := grpc.DialContext(ctx, dialer.DialAddress(*socket), grpc.WithInsecure(),
		grpc.WithContextDialer(dialer.ContextDialer))
	if err != nil {
		fmt.Fprintf(os.Stderr, "dial %s: %v\n", *socket, err)
		os.Exit(1)
	}
	defer conn.Close()
	c := snapshotsapi.NewSnapshotsClient(conn)
	cmd, args := args[0], args[1:]

	switch cmd {
	case "prepare", "view":
		pos, l := split(args, 2)
		if len(pos) < 1 {
			usage()
		}
		parent := ""
		if len(pos) == 2 {
			parent = pos[1]
		}
		if cmd == "prepare" {
			var r *snapshotsapi.PrepareSnapshotResponse
			r, err = c.Prepare(ctx, &snapshotsapi.PrepareSnapshotRequest{Snapshotter: *name,
				Key: pos[0], Parent: parent, Labels: labels(l)})
			if err == nil {
				printMounts(r.Mounts)
			}
		} else {
			var r *snapshotsapi.ViewSnapshotResponse
			r, err = c.View(ctx, &snapshotsapi.ViewSnapshotRequest{Snapshotter: *name,
				Key: pos[0], Parent: parent, Labels: labels(l)})
			if err == nil {
				printMounts(r.Mounts)
			}
		}
	case "mounts":
		if len(args) != 1 {
			usage()
		}
		var r *snapshotsapi.MountsResponse
		r, err = c.Mounts(ctx, &snapshotsapi.MountsRequest{Snapshotter: *name, Key: args[0]})
		if err == nil {
			printMounts(r.Mounts)
		}
	case "commit":
		pos, l := split(args, 2)
		if len(pos) != 2 {
			usage()
		}
		_, err = c.Commit(ctx, &snapshotsapi.CommitSnapshotRequest{Snapshotter: *name,
			Name: pos[0], Key: pos[1], Labels: labels(l)})
	case "remove":
		if len(args) != 1 {
			usage()
		}
		_, err = c.Remove(ctx, &snapshotsapi.RemoveSnapshotRequest{Snapshotter: *name, Key: args[0]})
	case "stat":
		if len(args) != 1 {
			usage()
		}
		var r *snapshotsapi.StatSnapshotResponse
		r, err = c.Stat(ctx, &snapshotsapi.StatSnapshotRequest{Snapshotter: *name, Key: args[0]})
		if err == nil {
			printInfo(r.Info)
		}
	case "update":
		if len(args) < 1 {
			usage()
		}
		key, rest := args[0], args[1:]
		var paths, l []string
		for i := 0; i < len(rest); i++ {
			if rest[i] == "--path" && i+1 < len(rest) {
				paths = append(paths, rest[i+1])
				i++
			} else {
				l = append(l, rest[i])
			}
		}
		var r *snapshotsapi.UpdateSnapshotResponse
		r, err = c.Update(ctx, &snapshotsapi.UpdateSnapshotRequest{Snapshotter: *name,
			Info:       snapshotsapi.Info{Name: key, Labels: labels(l)},
			UpdateMask: &ptypes.FieldMask{Paths: paths}})
		if err == nil {
			printInfo(r.Info)
		}
	case "usage":
		if len(args) != 1 {
			usage()
		}
		var r *snapshotsapi.UsageResponse
		r, err = c.Usage(ctx, &snapshotsapi.UsageRequest{Snapshotter: *name, Key: args[0]})
		if err == nil {
			fmt.Printf("{\"size\":%d,\"inodes\":%d}\n", r.Size_, r.Inodes)
		}
	case "list":
		var stream snapshotsapi.Snapshots_ListClient
		stream, err = c.List(ctx, &snapshotsapi.ListSnapshotsRequest{Snapshotter: *name, Filters: args})
		for err == nil {
			var r *snapshotsapi.ListSnapshotsResponse
			r, err = stream.Recv()
			if err == io.EOF {
				err = nil
				break
			}
			if err == nil {
				for _, i := range r.Info {
					printInfo(i)
				}
			}
		}
	case "cleanup":
		_, err = c.Cleanup(ctx, &snapshotsapi.CleanupRequest{Snapshotter: *name})
	default:
		usage()
	}
	if err != nil {
		s, _ := status.FromError(err)
		fmt.Fprintf(os.Stderr, "%s: %s\n", s.Code(), s.Message())
		os.Exit(1)
	}
}
