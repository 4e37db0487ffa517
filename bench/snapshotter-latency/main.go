// snapshotter-latency: how long a snapshotter takes to Prepare, Commit and Remove, timed
// at the containerd.services.snapshots.v1 API (containerd's proxy client), so that the
// same calls measure a snapshotter inside containerd (its socket, a snapshotter's name:
// devmapper, overlayfs, or a proxy plugin such as thinproxy) or an agent's own socket;
// or containerd's devmapper snapshotter itself, in this process, on a dm-thin pool.
//
//	snapshotter-latency --address SOCKET [--snapshotter NAME] [--namespace NS] [--rounds N]
//	snapshotter-latency --devmapper-pool POOL --devmapper-root DIR [--rounds N]
//
// Through containerd, Remove only drops containerd's own record: the snapshotter's
// Remove comes later, from its garbage collection. A snapshotter's own Remove is timed
// at the snapshotter: an agent's socket, or devmapper in this process (with the
// configuration of tests/vm/containerd.sh's devmapper_config), as containerd's garbage
// collection calls it.
//
// Each round: Prepare a parentless key (a new file system), Commit it, Prepare a child of
// it, Remove the child, Remove the committed parent. Prints one line per operation:
// its name, rounds, then median, 90th percentile, min and max in milliseconds.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/dialer"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/devmapper"
	"github.com/containerd/containerd/snapshots/proxy"
	"google.golang.org/grpc"
)

func main() {
	address := flag.String("address", "/run/containerd/containerd.sock", "the snapshots service's unix socket")
	name := flag.String("snapshotter", "thinproxy", "the snapshotter's name in the requests")
	ns := flag.String("namespace", "bench", "the containerd namespace")
	rounds := flag.Int("rounds", 10, "rounds")
	pool := flag.String("devmapper-pool", "", "time containerd's devmapper snapshotter in this process, on this dm-thin pool")
	root := flag.String("devmapper-root", "", "the devmapper snapshotter's directory (its metadata)")
	flag.Parse()
	if flag.NArg() != 0 || *rounds < 1 || (*pool == "") != (*root == "") {
		fmt.Fprintln(os.Stderr, "usage: snapshotter-latency --address SOCKET [--snapshotter NAME] [--namespace NS] [--rounds N]\n"+
			"       snapshotter-latency --devmapper-pool POOL --devmapper-root DIR [--rounds N]")
		os.Exit(2)
	}
	ctx := namespaces.WithNamespace(context.Background(), *ns)
	var sn snapshots.Snapshotter
	if *pool != "" {
		dm, err := devmapper.NewSnapshotter(ctx, &devmapper.Config{RootPath: *root, PoolName: *pool,
			BaseImageSize: "64MB", DiscardBlocks: true})
		if err != nil {
			fmt.Fprintf(os.Stderr, "snapshotter-latency: devmapper on %s: %v\n", *pool, err)
			os.Exit(1)
		}
		defer dm.Close()
		sn = dm
	} else {
		conn, err := grpc.Dial(dialer.DialAddress(*address), grpc.WithInsecure(),
			grpc.WithContextDialer(dialer.ContextDialer))
		if err != nil {
			fmt.Fprintf(os.Stderr, "snapshotter-latency: %s: %v\n", *address, err)
			os.Exit(1)
		}
		defer conn.Close()
		sn = proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), *name)
	}
	if err := run(ctx, sn, *rounds); err != nil {
		fmt.Fprintf(os.Stderr, "snapshotter-latency: %v\n", err)
		os.Exit(1)
	}
}

// op is one timed call.
type op struct {
	name  string
	times []time.Duration
}

func (o *op) time(f func() error) error {
	start := time.Now()
	if err := f(); err != nil {
		return fmt.Errorf("%s: %w", o.name, err)
	}
	o.times = append(o.times, time.Since(start))
	return nil
}

func (o *op) print() {
	sort.Slice(o.times, func(i, j int) bool { return o.times[i] < o.times[j] })
	n := len(o.times)
	ms := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds()*1000, 'f', 1, 64) }
	fmt.Printf("%s %d %s %s %s %s\n", o.name, n, ms(o.times[n/2]), ms(o.times[(n*9)/10]),
		ms(o.times[0]), ms(o.times[n-1]))
}

func run(ctx context.Context, sn snapshots.Snapshotter, rounds int) error {
	// Roots of containerd's garbage collection, so that it leaves them alone meanwhile.
	gcRoot := snapshots.WithLabels(map[string]string{
		"containerd.io/gc.root": time.Now().UTC().Format(time.RFC3339)})

	prepare := &op{name: "prepare"}
	commit := &op{name: "commit"}
	child := &op{name: "prepare-child"}
	remove := &op{name: "remove"}
	removeCommitted := &op{name: "remove-committed"}
	tag := strconv.FormatInt(time.Now().UnixNano(), 36)
	for i := 0; i < rounds; i++ {
		base := fmt.Sprintf("latency-%s-%d", tag, i)
		if err := prepare.time(func() error {
			_, err := sn.Prepare(ctx, base+"-active", "", gcRoot)
			return err
		}); err != nil {
			return err
		}
		if err := commit.time(func() error { return sn.Commit(ctx, base, base+"-active", gcRoot) }); err != nil {
			return err
		}
		if err := child.time(func() error {
			_, err := sn.Prepare(ctx, base+"-child", base, gcRoot)
			return err
		}); err != nil {
			return err
		}
		if err := remove.time(func() error { return sn.Remove(ctx, base+"-child") }); err != nil {
			return err
		}
		if err := removeCommitted.time(func() error { return sn.Remove(ctx, base) }); err != nil {
			return err
		}
	}
	for _, o := range []*op{prepare, commit, child, remove, removeCommitted} {
		o.print()
	}
	return nil
}
