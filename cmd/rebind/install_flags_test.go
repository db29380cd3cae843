package main

import (
	"reflect"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/rebind-dev/rebind/pkg/migrate"
)

// TestInstallOptions: which flags ask rebind to install the release onto
// --from-pv when its workload is gone, and in which mode.
func TestInstallOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want *migrate.InstallOptions
	}{
		{"no --from-pv", []string{"--chart", "c"}, nil},
		{"--from-pv alone (the workload must exist)", []string{"--from-pv", "pv"}, nil},
		{"--chart with --redeploy helm", []string{"--from-pv", "pv", "--redeploy", "helm", "--chart", "c", "-f", "a.yaml", "-f", "b.yaml"},
			&migrate.InstallOptions{Chart: "c", ValuesFiles: []string{"a.yaml", "b.yaml"}}},
		{"--values-out alone", []string{"--from-pv", "pv", "--values-out", "out.yaml", "--values", "a.yaml"},
			&migrate.InstallOptions{ValuesFiles: []string{"a.yaml"}, ValuesOnly: true, ValuesOut: "out.yaml"}},
		{"--values-out with --redeploy helm --chart installs, and writes the values", []string{"--from-pv", "pv", "--redeploy", "helm", "--chart", "c", "--values-out", "out.yaml"},
			&migrate.InstallOptions{Chart: "c", ValuesOut: "out.yaml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got *migrate.InstallOptions
			app := &cli.App{Flags: migrateFlags(), Action: func(c *cli.Context) error { got = installOptions(c); return nil }}
			if err := app.Run(append([]string{"rebind"}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
