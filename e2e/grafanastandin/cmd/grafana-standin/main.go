// Command grafana-standin serves the Grafana API stand-in over a data
// directory, for demos and manual poking (curl, rebind inventory).
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"strconv"
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
	orgTokens := flag.String("org-tokens", "", "comma-separated token=orgID pairs: bearer tokens of Admin service accounts of other orgs")
	version := flag.String("grafana-version", string(grafanastandin.DefaultVersion),
		"Grafana release to imitate (API behaviour and grafana.db layout); any release number maps to a modelled one of 9.5, 10.4, 11.6, 12.4, 13.0")
	seed := flag.Int("seed-dashboards", 0, "seed this many dashboards per org before serving")
	seedFolders := flag.Int("seed-folders", 3, "folders per org when seeding")
	seedOrgs := flag.Int("seed-orgs", 1, "orgs when seeding")
	seedDepth := flag.Int("seed-folder-depth", 0, "nest each org's seeded folders this deep (needs -grafana-version 11.6 or later)")
	seedUnified := flag.Bool("seed-unified-storage", false, "seed with the folders and dashboards migration to unified storage done (12.4, 13.0)")
	seedStale := flag.Bool("seed-stale-legacy", false, "with -seed-unified-storage: leave the legacy dashboard table behind the resource table")
	seedV2 := flag.Int("seed-v2-dashboards", 0, "with -seed-unified-storage: schema v2 dashboards per org")
	seedAlerts := flag.Int("seed-alert-rules", 0, "alert rules per org when seeding (needs -seed-folders > 0)")
	seedLibrary := flag.Int("seed-library-panels", 0, "library panels per org when seeding")
	seedDS := flag.Int("seed-datasources", 0, "data sources per org when seeding")
	pprofAddr := flag.String("debug-pprof-addr", "", "serve Go's /debug/pprof on this address (to profile the stand-in under a benchmark)")
	flag.Parse()
	if *pprofAddr != "" {
		go func() { log.Println(http.ListenAndServe(*pprofAddr, nil)) }() // net/http/pprof registers on the default mux
	}

	v, err := grafanastandin.ParseVersion(*version)
	if err != nil {
		log.Fatal(err)
	}
	if *seed > 0 || *seedV2 > 0 {
		if err := grafanastandin.Seed(*dataDir, grafanastandin.SeedSpec{Orgs: *seedOrgs, FoldersPerOrg: *seedFolders, DashboardsPerOrg: *seed, Seed: 1,
			Version: v, FolderDepth: *seedDepth, UnifiedStorage: *seedUnified, StaleLegacy: *seedStale, V2DashboardsPerOrg: *seedV2,
			AlertRulesPerOrg: *seedAlerts, LibraryPanelsPerOrg: *seedLibrary, DataSourcesPerOrg: *seedDS}); err != nil {
			log.Fatalf("seeding: %v", err)
		}
	}
	var toks []string
	if *tokens != "" {
		toks = strings.Split(*tokens, ",")
	}
	byOrg := map[string]int64{}
	if *orgTokens != "" {
		for _, pair := range strings.Split(*orgTokens, ",") {
			tok, org, ok := strings.Cut(pair, "=")
			id, err := strconv.ParseInt(org, 10, 64)
			if !ok || tok == "" || err != nil {
				log.Fatalf("-org-tokens: %q is not token=orgID", pair)
			}
			byOrg[tok] = id
		}
	}
	s, err := grafanastandin.Open(*dataDir, grafanastandin.Options{AdminUser: *user, AdminPassword: *pw, Tokens: toks, OrgTokens: byOrg, Version: v})
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
	log.Printf("grafana stand-in (Grafana %s) serving %s on http://%s", v, *dataDir, *addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
