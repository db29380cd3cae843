// Command grafana-standin serves the Grafana API stand-in over a data
// directory, for demos and manual poking (curl, rebind inventory).
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rebind-dev/rebind/e2e/grafanastandin"
)

func main() {
	dataDir := flag.String("data-dir", "./grafana-data", "directory holding grafana.db (created if missing)")
	addr := flag.String("addr", "127.0.0.1:3000", "listen address")
	user := flag.String("admin-user", "admin", "admin login, stored on first start only")
	pw := flag.String("admin-password", "admin", "admin password, stored on first start only")
	tokens := flag.String("tokens", "", "comma-separated bearer tokens accepted as org 1 Admin service accounts")
	seed := flag.Int("seed-dashboards", 0, "seed this many dashboards per org before serving")
	seedFolders := flag.Int("seed-folders", 3, "folders per org when seeding")
	seedOrgs := flag.Int("seed-orgs", 1, "orgs when seeding")
	flag.Parse()

	if *seed > 0 {
		if err := grafanastandin.Seed(*dataDir, grafanastandin.SeedSpec{Orgs: *seedOrgs, FoldersPerOrg: *seedFolders, DashboardsPerOrg: *seed, Seed: 1}); err != nil {
			log.Fatalf("seeding: %v", err)
		}
	}
	var toks []string
	if *tokens != "" {
		toks = strings.Split(*tokens, ",")
	}
	s, err := grafanastandin.Open(*dataDir, grafanastandin.Options{AdminUser: *user, AdminPassword: *pw, Tokens: toks})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	srv := &http.Server{Addr: *addr, Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Printf("grafana stand-in serving %s on http://%s", *dataDir, *addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
