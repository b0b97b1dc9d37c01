// Command dockerfilecheck runs BuildKit's own Dockerfile front end on deploy/Dockerfile, offline,
// without a Docker engine: the parser, the build-check rules of `docker build --check`, and the
// conversion to a build graph for every SERVICE value. Base images are not pulled: a stand-in
// resolver answers with an empty image config, so the check covers the Dockerfile itself.
//
// For each image it then checks the final image config that BuildKit would write: exposed
// port(s) (the gRPC port, plus the HTTP port of a catalog row with `http_port`), SHIPPY_SERVER__*
// env (and SHIPPY_GATEWAY__HTTP__* for the HTTP port), numeric non-root USER, exec-form ENTRYPOINT and HEALTHCHECK, and
// the OCI labels. (The select step's own shell logic, which rejects bad SERVICE/PORT values at
// build time, is exercised by deploy/check-drift.py --mode select.)
//
// With -dockerignore FILE it checks the build context filter instead: every file the Rust build
// needs (Cargo.toml, Cargo.lock, everything under crates/, services/ and proto/ outside target
// dirs) is sent, and bulky or local paths (target/, .git/, .tools/, logs, deploy/) are not.
//
// Usage: dockerfilecheck [-f deploy/Dockerfile] | dockerfilecheck -dockerignore .dockerignore
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerui"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// catalogName, catalogPort and catalogHTTPPort read services/catalog.toml, the one table of
// services, whose rows the Dockerfile's select stage reads at build time; cli is the one image
// that is not a service. `http_port` is optional (the gateway's).
var (
	catalogName     = regexp.MustCompile(`(?m)^name\s*=\s*"([^"]+)"`)
	catalogPort     = regexp.MustCompile(`(?m)^port\s*=\s*(\d+)`)
	catalogHTTPPort = regexp.MustCompile(`(?m)^http_port\s*=\s*(\d+)`)
)

// catalogRow is one image: its gRPC port and optional HTTP port ("" when none).
type catalogRow struct{ port, httpPort string }

// offlineResolver stands in for the registry: every base image has an empty config.
type offlineResolver struct{}

func (offlineResolver) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	cfg := ocispecs.Image{
		Platform: ocispecs.Platform{Architecture: "amd64", OS: "linux"},
		Config:   ocispecs.ImageConfig{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
	}
	dt, err := json.Marshal(cfg)
	if err != nil {
		return "", "", nil, err
	}
	return ref, digest.FromBytes([]byte(ref)), dt, nil
}

func main() {
	path := flag.String("f", "deploy/Dockerfile", "Dockerfile to check")
	catalog := flag.String("catalog", "services/catalog.toml", "the table of services the Dockerfile reads")
	ignore := flag.String("dockerignore", "", "check this .dockerignore (run from the build context root) instead")
	flag.Parse()
	if *ignore != "" {
		os.Exit(checkDockerignore(*ignore))
	}
	dt, err := os.ReadFile(*path)
	if err != nil {
		fmt.Printf("FAIL dockerfile (buildkit): %v\n", err)
		os.Exit(1)
	}
	ctx := context.Background()
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	// 1. The build-check rules (what `docker build --check` reports), over all stages.
	_, _, _, _, err = dockerfile2llb.Dockerfile2LLB(ctx, dt, dockerfile2llb.ConvertOpt{
		MetaResolver: offlineResolver{},
		AllStages:    true,
		Config:       dockerui.Config{BuildArgs: map[string]string{"SERVICE": "vessel", "PORT": "50052"}},
		Warn: func(rule, _, _, msg string, loc []parser.Range) {
			line := 0
			if len(loc) > 0 {
				line = loc[0].Start.Line
			}
			add("%s:%d %s: %s", *path, line, rule, msg)
		},
	})
	if err != nil {
		add("check: %v", err)
	}

	// 2. Convert for every SERVICE of the select table and inspect the final image config.
	images := map[string]catalogRow{}
	if table, err := os.ReadFile(*catalog); err != nil {
		add("catalog: %v", err)
	} else {
		blocks := strings.Split(string(table), "[[service]]")[1:]
		if len(blocks) == 0 {
			add("%s: no [[service]] rows", *catalog)
		}
		for _, block := range blocks {
			name := catalogName.FindStringSubmatch(block)
			port := catalogPort.FindStringSubmatch(block)
			if name == nil || port == nil {
				add("%s: expected one name and one port per [[service]]", *catalog)
				continue
			}
			row := catalogRow{port: port[1]}
			if http := catalogHTTPPort.FindStringSubmatch(block); http != nil {
				row.httpPort = http[1]
			}
			images[name[1]] = row
		}
		images["cli"] = catalogRow{}
	}
	names := make([]string, 0, len(images))
	for name := range images {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, svc := range names {
		port, httpPort := images[svc].port, images[svc].httpPort
		args := map[string]string{"SERVICE": svc, "VERSION": "1.2.3", "REVISION": "abc1234"}
		if port != "" {
			args["PORT"] = port
		}
		if httpPort != "" {
			args["HTTP_PORT"] = httpPort
		}
		// Warnings were reported once, by step 1.
		_, img, _, _, err := dockerfile2llb.Dockerfile2LLB(ctx, dt, dockerfile2llb.ConvertOpt{
			MetaResolver: offlineResolver{},
			Config:       dockerui.Config{BuildArgs: args},
		})
		if err != nil {
			add("SERVICE=%s: conversion failed: %v", svc, err)
			continue
		}
		c := img.Config
		var exposed []string
		for p := range c.ExposedPorts {
			exposed = append(exposed, p)
		}
		wantExposed := []string{}
		if port != "" {
			wantExposed = append(wantExposed, port+"/tcp")
		}
		if httpPort != "" {
			wantExposed = append(wantExposed, httpPort+"/tcp")
		}
		sort.Strings(wantExposed)
		if !slices.Equal(sortCopy(exposed), wantExposed) {
			add("SERVICE=%s: EXPOSE %v, want %v", svc, exposed, wantExposed)
		}
		env := map[string]string{}
		for _, kv := range c.Env {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		wantPort := port
		if wantPort == "" {
			wantPort = "0"
		}
		if env["SHIPPY_SERVER__HOST"] != "0.0.0.0" || env["SHIPPY_SERVER__PORT"] != wantPort {
			add("SERVICE=%s: env SHIPPY_SERVER__HOST=%q SHIPPY_SERVER__PORT=%q, want 0.0.0.0 and %s", svc, env["SHIPPY_SERVER__HOST"], env["SHIPPY_SERVER__PORT"], wantPort)
		}
		// The HTTP listener, where there is one, binds every interface on the catalog's port, as
		// the gRPC one does; other images carry no gateway settings.
		if httpPort != "" && (env["SHIPPY_GATEWAY__HTTP__HOST"] != "0.0.0.0" || env["SHIPPY_GATEWAY__HTTP__PORT"] != httpPort) {
			add("SERVICE=%s: env SHIPPY_GATEWAY__HTTP__HOST=%q SHIPPY_GATEWAY__HTTP__PORT=%q, want 0.0.0.0 and %s", svc, env["SHIPPY_GATEWAY__HTTP__HOST"], env["SHIPPY_GATEWAY__HTTP__PORT"], httpPort)
		}
		if _, set := env["SHIPPY_GATEWAY__HTTP__PORT"]; httpPort == "" && set {
			add("SERVICE=%s: env SHIPPY_GATEWAY__HTTP__PORT is set, but the catalog gives it no http_port", svc)
		}
		if c.WorkingDir != "/home/shippy" || env["HOME"] != "/home/shippy" {
			add("SERVICE=%s: WORKDIR %q, HOME %q, want /home/shippy (the one directory owned by 10001)", svc, c.WorkingDir, env["HOME"])
		}
		if c.User != "10001:10001" {
			add("SERVICE=%s: USER %q, want 10001:10001", svc, c.User)
		}
		if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/app"}) {
			add("SERVICE=%s: ENTRYPOINT %q, want [/usr/local/bin/app]", svc, c.Entrypoint)
		}
		if hc := img.Config.Healthcheck; hc == nil || !slices.Equal(hc.Test, []string{"CMD", "/usr/local/bin/app", "healthcheck"}) {
			add("SERVICE=%s: HEALTHCHECK %+v, want exec form [/usr/local/bin/app healthcheck]", svc, hc)
		}
		for k, want := range map[string]string{
			"org.opencontainers.image.title":    "shippy-" + svc,
			"org.opencontainers.image.version":  "1.2.3",
			"org.opencontainers.image.revision": "abc1234",
		} {
			if got := c.Labels[k]; got != want {
				add("SERVICE=%s: label %s=%q, want %q", svc, k, got, want)
			}
		}
		if c.Labels["org.opencontainers.image.source"] == "" {
			add("SERVICE=%s: label org.opencontainers.image.source is empty", svc)
		}
	}

	if len(problems) > 0 {
		fmt.Printf("FAIL dockerfile (buildkit): %d problem(s)\n", len(problems))
		for _, p := range problems {
			fmt.Printf("  - %s\n", p)
		}
		os.Exit(1)
	}
	fmt.Printf("ok   dockerfile (buildkit): build checks clean; %s convert with the expected port, env, user, entrypoint, healthcheck, labels\n",
		strings.Join(names, " "))
}

func sortCopy(s []string) []string {
	out := append([]string{}, s...)
	sort.Strings(out)
	if out == nil {
		return []string{}
	}
	return out
}

// checkDockerignore applies the .dockerignore patterns as BuildKit does (moby/patternmatcher).
func checkDockerignore(file string) int {
	label := "FAIL " + file
	f, err := os.Open(file)
	if err != nil {
		fmt.Printf("%s: %v\n", label, err)
		return 1
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		fmt.Printf("%s: %v\n", label, err)
		return 1
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		fmt.Printf("%s: %v\n", label, err)
		return 1
	}
	excluded := func(p string) bool {
		m, err := pm.MatchesOrParentMatches(p)
		return err == nil && m
	}

	var problems []string
	needed := []string{"Cargo.toml", "Cargo.lock"}
	for _, dir := range []string{"crates", "services", "proto"} {
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if d.IsDir() && (d.Name() == "target" || d.Name() == "node_modules") {
				return filepath.SkipDir
			}
			if !d.IsDir() {
				needed = append(needed, filepath.ToSlash(p))
			}
			return nil
		})
	}
	for _, p := range needed {
		if _, err := os.Stat(p); err != nil {
			problems = append(problems, p+" is missing (cargo build --locked needs it)")
		} else if excluded(p) {
			problems = append(problems, p+" is excluded, but the build needs it")
		}
	}
	unwanted := []string{
		"target/release/shippy", "crates/cli/target/debug/x", ".git/HEAD", ".tools/bin/kustomize",
		"build.log", "services/vessel/run.log", ".demo/state", "tmp/x", ".env",
		"deploy/k8s/base/kustomization.yaml", "docker-compose.yml",
	}
	for _, p := range unwanted {
		if !excluded(p) {
			problems = append(problems, p+" would be sent to the build context")
		}
	}
	if len(problems) > 0 {
		fmt.Printf("%s: %d problem(s)\n", label, len(problems))
		for _, p := range problems {
			fmt.Printf("  - %s\n", p)
		}
		return 1
	}
	fmt.Printf("ok   %s: keeps the %d files the build needs, drops target/, .git, .tools, logs, local data, deploy/\n", file, len(needed))
	return 0
}
