// Command s3server is the sandbox's object store: gofakes3 (MIT) with its
// in-memory backend, serving path-style S3 on loopback for Velero's AWS
// plugin. In memory because gofakes3's fs backend answers NoSuchBucket for a
// prefix that does not exist yet, which Velero takes for a missing bucket
// and marks the location Unavailable. The store lives as long as the
// process: one process can serve several sandboxes (clusters of one cloud
// account), which is how a backup taken in one is restored in another.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "address to serve on")
	addrFile := flag.String("address-file", "", "write the bound address here once serving (for a :0 port)")
	var buckets multi
	flag.Var(&buckets, "bucket", "bucket to create at start (repeatable)")
	flag.Parse()

	backend := s3mem.New()
	for _, b := range buckets {
		if err := backend.CreateBucket(b); err != nil {
			log.Fatalf("bucket %s: %v", b, err)
		}
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	if *addrFile != "" {
		// Written through a rename: a reader never sees half an address.
		tmp := *addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(l.Addr().String()), 0o644); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(tmp, *addrFile); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Fprintf(os.Stderr, "s3server: serving on http://%s\n", l.Addr())
	srv := &http.Server{Handler: gofakes3.New(backend, gofakes3.WithAutoBucket(false)).Server()}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		_ = srv.Close()
	}()
	if err := srv.Serve(l); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

type multi []string

func (m *multi) String() string     { return fmt.Sprint(*m) }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }
