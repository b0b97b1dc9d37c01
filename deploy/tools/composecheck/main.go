// Command composecheck loads Compose files the way `docker compose config` does, offline,
// and applies shippy's own rules on top. It exists because this machine (and CI) has only the
// docker client, without the compose plugin.
//
// Loading uses github.com/compose-spec/compose-go/v2, the library inside Docker Compose:
// interpolation, merging of override files (including !reset/!override), JSON-schema
// validation against the Compose Specification, normalisation and the consistency checks
// (depends_on targets, volumes, networks). All profiles are enabled so that profile-only
// services (cli, ui) are validated too.
//
// Shippy rules, for every service:
//   - it has a healthcheck, or disables it explicitly (only allowed for the one-shot cli);
//   - it has a CPU and a memory limit and a restart policy;
//   - its image is pinned (a tag other than "latest"; our own images may use a variable tag);
//   - services built from deploy/Dockerfile publish no fixed host port (so --scale works),
//     except their catalog `http_port` (services/catalog.toml: the REST gateway's public HTTP
//     port, the one way in from the host); have a SERVICE build arg, and wait for their
//     dependencies to be healthy.
//
// Usage:
//
//	composecheck [-env KEY=VALUE]... [-json OUT] [-expect-error TEXT] [-catalog FILE] -f FILE [-f FILE]...
//
// Prints one line and exits 0 when the project is valid (or, with -expect-error, when loading
// fails with an error containing TEXT); prints the problems and exits 1 otherwise.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

const ownDockerfile = "deploy/Dockerfile"

var (
	catalogName     = regexp.MustCompile(`(?m)^name\s*=\s*"([^"]+)"`)
	catalogHTTPPort = regexp.MustCompile(`(?m)^http_port\s*=\s*(\d+)`)
)

// httpPorts reads the optional `http_port` of each [[service]] of services/catalog.toml.
func httpPorts(file string) (map[string]uint32, error) {
	table, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	out := map[string]uint32{}
	for _, block := range strings.Split(string(table), "[[service]]")[1:] {
		name, http := catalogName.FindStringSubmatch(block), catalogHTTPPort.FindStringSubmatch(block)
		if name == nil || http == nil {
			continue
		}
		port, err := strconv.ParseUint(http[1], 10, 16)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: http_port %q: %v", file, name[1], http[1], err)
		}
		out[name[1]] = uint32(port)
	}
	return out, nil
}

func main() {
	var files, envs listFlag
	var jsonOut, expectErr, workdir, catalog string
	flag.Var(&files, "f", "compose file (repeatable, in override order)")
	flag.Var(&envs, "env", "KEY=VALUE for interpolation (repeatable); the process environment is not used")
	flag.StringVar(&jsonOut, "json", "", "write the resolved project as JSON to this file")
	flag.StringVar(&expectErr, "expect-error", "", "succeed only if loading fails with an error containing this text")
	flag.StringVar(&workdir, "workdir", ".", "project directory (relative paths are resolved from here)")
	flag.StringVar(&catalog, "catalog", "services/catalog.toml", "the table of services (its http_port may be published)")
	flag.Parse()
	if len(files) == 0 {
		fail("composecheck: no -f FILE given")
	}
	label := strings.Join(files, " + ")

	opts, err := cli.NewProjectOptions(files,
		cli.WithWorkingDirectory(workdir),
		cli.WithEnv(envs),
		cli.WithProfiles([]string{"*"}),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(false),
	)
	if err != nil {
		fail("composecheck: %v", err)
	}
	project, err := opts.LoadProject(context.Background())
	if expectErr != "" {
		switch {
		case err == nil:
			fail("FAIL compose %s: loaded, but an error containing %q was expected", label, expectErr)
		case !strings.Contains(err.Error(), expectErr):
			fail("FAIL compose %s: expected an error containing %q, got: %v", label, expectErr, err)
		}
		fmt.Printf("ok   compose %s: refuses to load as intended (error contains %q)\n", label, expectErr)
		return
	}
	if err != nil {
		fail("FAIL compose %s: %v", label, err)
	}

	public, err := httpPorts(catalog)
	if err != nil {
		fail("composecheck: %v", err)
	}
	problems := check(project, public)
	if len(problems) > 0 {
		fmt.Printf("FAIL compose %s: %d problem(s)\n", label, len(problems))
		for _, p := range problems {
			fmt.Printf("  - %s\n", p)
		}
		os.Exit(1)
	}
	if jsonOut != "" {
		data, err := json.MarshalIndent(project, "", "  ")
		if err != nil {
			fail("composecheck: %v", err)
		}
		if err := os.WriteFile(jsonOut, data, 0o644); err != nil {
			fail("composecheck: %v", err)
		}
	}
	names := project.ServiceNames()
	sort.Strings(names)
	fmt.Printf("ok   compose %s: valid (compose-spec schema + consistency + shippy rules), services: %s\n",
		label, strings.Join(names, " "))
}

// check applies shippy's rules; public holds the catalog's http_port per SERVICE, the one container
// port our images may publish on a fixed host port.
func check(p *types.Project, public map[string]uint32) []string {
	var out []string
	add := func(svc, format string, args ...any) {
		out = append(out, svc+": "+fmt.Sprintf(format, args...))
	}
	names := p.ServiceNames()
	sort.Strings(names)
	for _, name := range names {
		s := p.Services[name]
		own := s.Build != nil && filepath.ToSlash(s.Build.Dockerfile) == ownDockerfile
		service := ""
		if own {
			if v := s.Build.Args["SERVICE"]; v != nil {
				service = *v
			}
			if service == "" {
				add(name, "built from %s without a SERVICE build arg", ownDockerfile)
			}
		}

		switch {
		case s.HealthCheck == nil:
			add(name, "no healthcheck")
		case s.HealthCheck.Disable && service != "cli":
			add(name, "healthcheck disabled (only the one-shot cli may do that)")
		case !s.HealthCheck.Disable && len(s.HealthCheck.Test) > 0 && s.HealthCheck.Test[0] == "CMD-SHELL" && own:
			add(name, "healthcheck uses CMD-SHELL, but our images have no shell")
		}

		limits := (*types.Resource)(nil)
		if s.Deploy != nil {
			limits = s.Deploy.Resources.Limits
		}
		hasCPU := s.CPUS > 0 || (limits != nil && limits.NanoCPUs > 0)
		hasMem := s.MemLimit > 0 || (limits != nil && limits.MemoryBytes > 0)
		if !hasCPU {
			add(name, "no CPU limit")
		}
		if !hasMem {
			add(name, "no memory limit")
		}
		if s.Restart == "" {
			add(name, "no restart policy")
		}

		image, tag := splitImage(s.Image)
		switch {
		case s.Image == "":
			add(name, "no image name")
		case tag == "" || tag == "latest":
			add(name, "image %q is not pinned to a version tag", s.Image)
		case own && !strings.HasPrefix(image, "shippy/"):
			add(name, "image %q should be shippy/<service>", s.Image)
		}

		if own {
			for _, port := range s.Ports {
				if want, ok := public[service]; ok && port.Target == want {
					continue // the gateway's public HTTP port (check-drift.py checks its number)
				}
				if port.Published != "" {
					add(name, "publishes fixed host port %s:%d (breaks `docker compose up --scale`); use an ephemeral one", port.Published, port.Target)
				}
			}
			if s.ContainerName != "" {
				add(name, "container_name is set (breaks --scale)")
			}
			for dep, cfg := range s.DependsOn {
				if cfg.Condition != types.ServiceConditionHealthy {
					add(name, "depends_on %s uses condition %q, want service_healthy", dep, cfg.Condition)
				}
			}
		}
	}
	return out
}

// splitImage returns the repository and the tag ("" when none) of an image reference.
func splitImage(ref string) (string, string) {
	if i := strings.Index(ref, "@"); i >= 0 {
		return ref[:i], ref[i+1:] // a digest pins it too
	}
	slash := strings.LastIndex(ref, "/")
	colon := strings.LastIndex(ref, ":")
	if colon > slash {
		return ref[:colon], ref[colon+1:]
	}
	return ref, ""
}

func fail(format string, args ...any) {
	fmt.Println(fmt.Sprintf(format, args...))
	os.Exit(1)
}
