#!/usr/bin/env python3
"""Check that every place naming shippy's images agrees on the same services.

    deploy/check-drift.py [--k8s RENDERED.yaml] [--mode drift|select]

--mode drift (default) compares, by service name, what cannot read services/catalog.toml (the one
table of services: name, gRPC service, binary, port, optional http_port; Rust, deploy/Dockerfile's
`select` stage and deploy/make/docker.mk read it directly) with it:
  - the workspace's binaries: `cargo metadata --no-deps` bin targets (the catalog's, and `shippy`
    for cli);
  - docker-compose.yml: services built from deploy/Dockerfile (SERVICE, PORT and HTTP_PORT build
    args, image name, SHIPPY_SERVER__PORT, and SHIPPY_ADMIN__PORT = the admin port below); for a
    service with an http_port (the gateway): SHIPPY_GATEWAY__HTTP__PORT = it,
    SHIPPY_GATEWAY__HTTP__HOST = 0.0.0.0, and the port published on the host at the same number
    (by default: `${VAR:-8080}:8080`); no other service sets either;
  - Kubernetes: Deployments in the rendered base (--k8s, from `kustomize build`; without it the
    files under deploy/k8s/base are read): name, image, containerPorts `grpc` (the catalog's),
    `admin` and, with an http_port, `http`, SHIPPY_SERVER__PORT, SHIPPY_ADMIN__PORT,
    SHIPPY_GATEWAY__HTTP__PORT, the HTTP probes on the admin port and the prometheus.io/* scrape
    annotations, plus a Service per Deployment (with the http port too) and, for an http_port, an
    Ingress whose backend is that Service's http port;
  - deploy/prometheus/prometheus.yml (the compose observability profile): its DNS service
    discovery names exactly the compose services, on the admin port;
  - the Dockerfile's SOURCE/LICENSES defaults against Cargo.toml [workspace.package];
  - the Rust version: rust-toolchain.toml's channel, the Dockerfile's RUST_VERSION and
    Cargo.toml's rust-version (the channel's minor version).
Services are the catalog's rows (the gRPC services and the gateway); cli is an image and a binary
but no compose long-runner or Deployment.

--mode select runs the Dockerfile's `select` step (the shell script of its first RUN, beside a copy
of the catalog) with /bin/sh for every catalog entry, cli and bad values, and checks that it accepts
exactly those (with their PORT and HTTP_PORT), writes the right binary name, and fails with the
documented message otherwise (wrong or missing PORT / HTTP_PORT too). No Docker needed.

Prints one line (`ok ...` or `FAIL ...` followed by the problems) and exits 0 or 1.
Needs PyYAML (deploy/lint.sh runs it with the .tools venv).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
K8S_BASE = ROOT / "deploy" / "k8s" / "base"
CATALOG = ROOT / "services" / "catalog.toml"
TOOLCHAIN = ROOT / "rust-toolchain.toml"
CARGO_TOML = ROOT / "Cargo.toml"
OWN_DOCKERFILE = "deploy/Dockerfile"
CLI = "cli"
CLI_BIN = "shippy"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
# The admin HTTP port (/metrics, /livez, /readyz) of every service in a container or pod: one fixed
# port for all, since each container has its own network namespace (SHIPPY_ADMIN__PORT).
ADMIN_PORT = "9464"
# Kubernetes probes on the admin port: kind -> path.
ADMIN_PROBES = {"startupProbe": "/livez", "readinessProbe": "/readyz", "livenessProbe": "/livez"}
# The settings of the HTTP listener of a service with an http_port (the REST gateway).
HTTP_PORT_ENV = "SHIPPY_GATEWAY__HTTP__PORT"
HTTP_HOST_ENV = "SHIPPY_GATEWAY__HTTP__HOST"

try:
    import yaml
except ImportError:  # pragma: no cover - reported as a failure below
    yaml = None


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def catalog() -> dict[str, dict]:
    """name -> {bin, port, http_port} from services/catalog.toml, plus cli (binary `shippy`, no
    ports); http_port is "" for a service without one."""
    table = {
        row["name"]: {"bin": row["binary"], "port": str(row["port"]), "http_port": str(row.get("http_port", ""))}
        for row in tomllib.loads(CATALOG.read_text()).get("service", [])
    }
    table[CLI] = {"bin": CLI_BIN, "port": "", "http_port": ""}
    return table


def bad_service_message() -> str:
    """The select step's message for an unknown SERVICE: the catalog's names in order, then cli."""
    names = [row["name"] for row in tomllib.loads(CATALOG.read_text()).get("service", [])]
    return f"SERVICE must be one of {', '.join(names + [CLI])}"


def default_of(value: str) -> str:
    """A compose value with its `${VAR:-default}` / `${VAR-default}` interpolations resolved to
    their defaults (what `docker compose up` uses when VAR is unset)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)


def published_ports(ports: list) -> dict[str, str]:
    """container port -> host port (default interpolation, "" for an ephemeral one) of a compose
    service's `ports`, short ("[ip:]host:container[/proto]") or long syntax."""
    out = {}
    for p in ports or []:
        if isinstance(p, dict):
            out[str(p.get("target", ""))] = default_of(str(p.get("published", "")))
            continue
        spec = default_of(str(p)).split("/")[0]
        parts = spec.rsplit(":", 2)
        target = parts[-1]
        host = parts[-2] if len(parts) >= 2 else ""
        out[target] = host
    return out


def binary_for(service: str) -> str:
    return catalog()[service]["bin"]


# --------------------------------------------------------------------------------- sources


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined as the Dockerfile parser does."""
    out: list[tuple[str, str]] = []
    buf: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped
        if line.rstrip().endswith("\\"):
            buf.append(line.rstrip()[:-1])
            continue
        buf.append(line)
        joined = "\n".join(buf).strip()
        buf = []
        word, _, rest = joined.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def select_script() -> str:
    """The shell script of the first RUN in the `select` stage."""
    in_select = False
    for word, args in dockerfile_instructions(DOCKERFILE.read_text()):
        if word == "FROM":
            in_select = bool(re.search(r"\bAS\s+select\s*$", args, re.IGNORECASE))
        elif in_select and word == "RUN":
            return args
    raise SystemExit(f"FAIL drift: {rel(DOCKERFILE)} has no RUN in a stage named `select`")


def dockerfile_arg_default(name: str) -> str | None:
    for word, args in dockerfile_instructions(DOCKERFILE.read_text()):
        if word == "ARG":
            m = re.match(rf"{name}=(.*)$", args)
            if m:
                return m.group(1).strip().strip('"')
    return None


def cargo_bins() -> tuple[set[str], str]:
    cargo = shutil.which("cargo")
    if not CARGO_TOML.exists() or cargo is None:
        why = "no Cargo.toml yet" if not CARGO_TOML.exists() else "cargo not found"
        return {row["bin"] for row in catalog().values()}, f"services/catalog.toml ({why})"
    proc = subprocess.run(
        [cargo, "metadata", "--no-deps", "--format-version", "1", "--offline"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        errors = [l for l in proc.stderr.splitlines() if l.startswith("error")] or proc.stderr.splitlines()[-1:]
        raise SystemExit(f"FAIL drift: `cargo metadata --no-deps` failed: {' / '.join(errors)}")
    meta = json.loads(proc.stdout)
    bins = {
        t["name"]
        for p in meta["packages"]
        for t in p["targets"]
        if "bin" in t["kind"]
    }
    return bins, "cargo metadata"


def compose_services() -> dict[str, dict]:
    data = yaml.safe_load(COMPOSE.read_text())
    out = {}
    for name, svc in (data.get("services") or {}).items():
        build = svc.get("build")
        if not isinstance(build, dict) or build.get("dockerfile") != OWN_DOCKERFILE:
            continue
        args = build.get("args") or {}
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env if "=" in e)
        out[name] = {
            "SERVICE": str(args.get("SERVICE", "")),
            "PORT": str(args.get("PORT", "")),
            "HTTP_PORT": str(args.get("HTTP_PORT", "")),
            "image": str(svc.get("image", "")),
            "env_port": str(env.get("SHIPPY_SERVER__PORT", "")),
            "env_admin": str(env.get("SHIPPY_ADMIN__PORT", "")),
            "env_http_port": str(env.get(HTTP_PORT_ENV, "")),
            "env_http_host": str(env.get(HTTP_HOST_ENV, "")),
            "published": published_ports(svc.get("ports") or []),
        }
    return out


def prometheus_dns_targets() -> tuple[list[str], set[str]] | None:
    """(names, ports) of the dns_sd_configs of deploy/prometheus/prometheus.yml; None without it."""
    if not PROMETHEUS.exists():
        return None
    names: list[str] = []
    ports: set[str] = set()
    for job in yaml.safe_load(PROMETHEUS.read_text()).get("scrape_configs") or []:
        for sd in job.get("dns_sd_configs") or []:
            names.extend(sd.get("names") or [])
            ports.add(str(sd.get("port", "")))
    return names, ports


def k8s_docs(rendered: Path | None) -> list[dict]:
    files = [rendered] if rendered else sorted(K8S_BASE.rglob("*.yaml"))
    docs = []
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if isinstance(doc, dict) and "kind" in doc:
                docs.append(doc)
    return docs


def k8s_deployments(docs: list[dict]) -> dict[str, dict]:
    out = {}
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        name = d["metadata"]["name"]
        c = d["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: str(e.get("value", "")) for e in c.get("env", [])}
        # Each probe as "http <port> <path>" or "grpc <port>" (or "(none)").
        probes = {}
        for kind in ADMIN_PROBES:
            probe = c.get(kind) or {}
            if "httpGet" in probe:
                probes[kind] = f"http {probe['httpGet'].get('port', '')} {probe['httpGet'].get('path', '')}"
            elif "grpc" in probe:
                probes[kind] = f"grpc {probe['grpc'].get('port', '')}"
            else:
                probes[kind] = "(none)"
        out[name] = {
            "image": c.get("image", ""),
            "ports": {str(p.get("name", "")): str(p["containerPort"]) for p in c.get("ports", [])},
            "env_port": env.get("SHIPPY_SERVER__PORT", ""),
            "env_admin": env.get("SHIPPY_ADMIN__PORT", ""),
            "env_http_port": env.get(HTTP_PORT_ENV, ""),
            "env_http_host": env.get(HTTP_HOST_ENV, ""),
            "probes": probes,
            "annotations": d["spec"]["template"].get("metadata", {}).get("annotations") or {},
        }
    return out


def k8s_services(docs: list[dict]) -> dict[str, dict[str, dict]]:
    """Service name -> port name -> {port, targetPort} (both as strings)."""
    return {
        d["metadata"]["name"]: {
            str(p.get("name", "")): {"port": str(p["port"]), "targetPort": str(p.get("targetPort", p["port"]))}
            for p in d["spec"].get("ports", [])
        }
        for d in docs
        if d["kind"] == "Service"
    }


def k8s_ingress_backends(docs: list[dict]) -> list[tuple[str, str, str, str]]:
    """(ingress, path, service, port name or number) for every path of every networking.k8s.io/v1
    Ingress."""
    out = []
    for d in docs:
        if d["kind"] != "Ingress" or d.get("apiVersion") != "networking.k8s.io/v1":
            continue
        for rule in d["spec"].get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                svc = (path.get("backend") or {}).get("service") or {}
                port = svc.get("port") or {}
                out.append((d["metadata"]["name"], str(path.get("path", "")), str(svc.get("name", "")),
                            str(port.get("name", port.get("number", "")))))
        default = (d["spec"].get("defaultBackend") or {}).get("service")
        if default:
            port = default.get("port") or {}
            out.append((d["metadata"]["name"], "(default)", str(default.get("name", "")),
                        str(port.get("name", port.get("number", "")))))
    return out


# --------------------------------------------------------------------------------- checks


def check_drift(rendered: Path | None) -> int:
    problems: list[str] = []
    add = problems.append

    table = catalog()
    bins, bins_source = cargo_bins()
    compose = compose_services()
    k8s_path = rendered or K8S_BASE
    docs = k8s_docs(rendered)
    deployments = k8s_deployments(docs)
    k8s_svcs = k8s_services(docs)
    ingress_backends = k8s_ingress_backends(docs)

    services = sorted(s for s in table if s != CLI)
    images = sorted(table)

    # Binaries of the workspace <-> the catalog.
    wanted_bins = {row["bin"]: name for name, row in table.items()}
    for b in sorted(bins):
        if b not in wanted_bins:
            add(f"binary `{b}` ({bins_source}) is not in {rel(CATALOG)}")
    for b, s in sorted(wanted_bins.items()):
        if b not in bins:
            add(f"{rel(CATALOG)}: `{s}` names binary `{b}`, which {bins_source} does not list")
    ports = {s: table[s]["port"] for s in images}
    http_ports = {s: table[s]["http_port"] for s in images}

    # docker-compose.yml.
    by_arg = {c["SERVICE"]: name for name, c in compose.items()}
    for s in images:
        if s not in by_arg:
            add(f"{rel(COMPOSE)}: no service builds {OWN_DOCKERFILE} with SERVICE={s}")
    for name, c in sorted(compose.items()):
        s = c["SERVICE"]
        if s not in table:
            add(f"{rel(COMPOSE)}: service `{name}` builds SERVICE={s or '(empty)'}, which {rel(DOCKERFILE)} rejects")
            continue
        if name != s:
            add(f"{rel(COMPOSE)}: service `{name}` builds SERVICE={s}; name it `{s}`")
        if c["PORT"] != ports[s]:
            add(f"{rel(COMPOSE)}: service `{name}` passes PORT={c['PORT'] or '(none)'}, {rel(DOCKERFILE)} wants {ports[s] or '(none)'}")
        if not c["image"].startswith(f"shippy/{s}:"):
            add(f"{rel(COMPOSE)}: service `{name}` image `{c['image']}`, expected shippy/{s}:<tag>")
        if s != CLI and c["env_port"] != ports[s]:
            add(f"{rel(COMPOSE)}: service `{name}` SHIPPY_SERVER__PORT={c['env_port'] or '(unset)'}, expected {ports[s]}")
        if s != CLI and c["env_admin"] != ADMIN_PORT:
            add(f"{rel(COMPOSE)}: service `{name}` SHIPPY_ADMIN__PORT={c['env_admin'] or '(unset)'}, expected {ADMIN_PORT} (the port {rel(PROMETHEUS)} scrapes)")
        http = http_ports[s]
        if c["HTTP_PORT"] != http:
            add(f"{rel(COMPOSE)}: service `{name}` passes HTTP_PORT={c['HTTP_PORT'] or '(none)'}, {rel(DOCKERFILE)} wants {http or '(none)'}")
        if c["env_http_port"] != http:
            add(f"{rel(COMPOSE)}: service `{name}` {HTTP_PORT_ENV}={c['env_http_port'] or '(unset)'}, expected {http or '(unset): no http_port in ' + rel(CATALOG)}")
        if http and c["env_http_host"] != "0.0.0.0":
            add(f"{rel(COMPOSE)}: service `{name}` {HTTP_HOST_ENV}={c['env_http_host'] or '(unset)'}, expected 0.0.0.0 (the published port cannot reach loopback)")
        if http and c["published"].get(http) != http:
            add(f"{rel(COMPOSE)}: service `{name}` publishes {sorted(c['published'].items()) or 'nothing'} (container: host), expected its http_port {http} on host port {http} by default")

    # deploy/prometheus/prometheus.yml: scrapes every compose service on the admin port.
    scraped = prometheus_dns_targets()
    if scraped is None:
        add(f"{rel(PROMETHEUS)}: missing (the observability profile of {rel(COMPOSE)} mounts it)")
    else:
        names, sd_ports = scraped
        if sorted(names) != services:
            add(f"{rel(PROMETHEUS)}: dns_sd_configs names {sorted(names)}, expected the compose services {services}")
        if sd_ports != {ADMIN_PORT}:
            add(f"{rel(PROMETHEUS)}: dns_sd_configs port(s) {sorted(sd_ports)}, expected {ADMIN_PORT}")

    # Kubernetes.
    for s in services:
        if s not in deployments:
            add(f"{rel(k8s_path)}: no Deployment `{s}`")
            continue
        d = deployments[s]
        if not re.match(rf"^(.*/)?shippy/{s}(:|@|$)", d["image"]):
            add(f"{rel(k8s_path)}: Deployment `{s}` image `{d['image']}`, expected shippy/{s}:<tag>")
        want_ports = {"grpc": ports[s], "admin": ADMIN_PORT}
        if http_ports[s]:
            want_ports["http"] = http_ports[s]
        if d["ports"] != want_ports:
            add(f"{rel(k8s_path)}: Deployment `{s}` containerPorts {d['ports']}, expected {want_ports}")
        if d["env_port"] != ports[s]:
            add(f"{rel(k8s_path)}: Deployment `{s}` SHIPPY_SERVER__PORT={d['env_port'] or '(unset)'}, expected {ports[s]}")
        if d["env_admin"] != ADMIN_PORT:
            add(f"{rel(k8s_path)}: Deployment `{s}` SHIPPY_ADMIN__PORT={d['env_admin'] or '(unset)'}, expected {ADMIN_PORT}")
        for kind, path in ADMIN_PROBES.items():
            if d["probes"][kind] not in (f"http admin {path}", f"http {ADMIN_PORT} {path}"):
                add(f"{rel(k8s_path)}: Deployment `{s}` {kind} is `{d['probes'][kind]}`, expected httpGet {path} on the admin port")
        want_annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": ADMIN_PORT, "prometheus.io/path": "/metrics"}
        got_annotations = {k: str(d["annotations"].get(k, "")) for k in want_annotations}
        if got_annotations != want_annotations:
            add(f"{rel(k8s_path)}: Deployment `{s}` pod annotations {got_annotations}, expected {want_annotations}")
        if d["env_http_port"] != http_ports[s]:
            add(f"{rel(k8s_path)}: Deployment `{s}` {HTTP_PORT_ENV}={d['env_http_port'] or '(unset)'}, expected {http_ports[s] or '(unset)'}")
        if http_ports[s] and d["env_http_host"] != "0.0.0.0":
            add(f"{rel(k8s_path)}: Deployment `{s}` {HTTP_HOST_ENV}={d['env_http_host'] or '(unset)'}, expected 0.0.0.0")
        svc_ports = k8s_svcs.get(s, {})
        if ports[s] not in {p["port"] for p in svc_ports.values()}:
            add(f"{rel(k8s_path)}: no Service `{s}` with port {ports[s]}")
        if http_ports[s]:
            http = svc_ports.get("http")
            if http is None or http["port"] != http_ports[s] or http["targetPort"] not in ("http", http_ports[s]):
                add(f"{rel(k8s_path)}: Service `{s}` port `http` is {http}, expected port {http_ports[s]} -> targetPort http")
            routed = [b for b in ingress_backends if b[2] == s and b[3] in ("http", http_ports[s])]
            if not any(path in ("/", "(default)") for _, path, _, _ in routed):
                add(f"{rel(k8s_path)}: no networking.k8s.io/v1 Ingress routes `/` to Service `{s}` port http ({http_ports[s]}); Ingress backends: {ingress_backends}")
    for name in sorted(deployments):
        if name not in services:
            add(f"{rel(k8s_path)}: Deployment `{name}` is not a SERVICE of {rel(DOCKERFILE)}")

    # Label defaults <-> Cargo.toml.
    if CARGO_TOML.exists():
        pkg = tomllib.loads(CARGO_TOML.read_text()).get("workspace", {}).get("package", {})
        for arg, key in (("SOURCE", "repository"), ("LICENSES", "license")):
            if key in pkg and dockerfile_arg_default(arg) != pkg[key]:
                add(f"{rel(DOCKERFILE)}: ARG {arg} default {dockerfile_arg_default(arg)!r}, Cargo.toml [workspace.package] {key} is {pkg[key]!r}")

    # One Rust: rust-toolchain.toml, the Dockerfile's RUST_VERSION, Cargo.toml's rust-version.
    channel = tomllib.loads(TOOLCHAIN.read_text()).get("toolchain", {}).get("channel", "") if TOOLCHAIN.exists() else ""
    if not channel:
        add(f"{rel(TOOLCHAIN)}: no [toolchain] channel")
    elif dockerfile_arg_default("RUST_VERSION") != channel:
        add(f"{rel(DOCKERFILE)}: ARG RUST_VERSION={dockerfile_arg_default('RUST_VERSION')}, {rel(TOOLCHAIN)} says {channel}")
    if CARGO_TOML.exists() and channel:
        msrv = tomllib.loads(CARGO_TOML.read_text()).get("workspace", {}).get("package", {}).get("rust-version", "")
        if msrv != ".".join(channel.split(".")[:2]):
            add(f"Cargo.toml: rust-version {msrv!r}, expected {'.'.join(channel.split('.')[:2])!r} (the minor of {rel(TOOLCHAIN)})")

    if problems:
        print(f"FAIL drift: {len(problems)} problem(s)")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(
        f"ok   drift: {' '.join(images)} of {rel(CATALOG)} agree with {bins_source} ({len(bins)} bins), "
        f"docker-compose.yml, k8s Deployments/Services/Ingress, deploy/prometheus/prometheus.yml (admin port {ADMIN_PORT}; "
        f"http ports {' '.join(f'{s}={p}' for s, p in sorted(http_ports.items()) if p) or 'none'}); "
        f"Rust {channel} in rust-toolchain.toml, Dockerfile, Cargo.toml"
    )
    return 0


def run_select(script: str, service: str | None, port: str | None, http_port: str | None = None) -> tuple[int, str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if service is not None:
        env["SERVICE"] = service
    if port is not None:
        env["PORT"] = port
    if http_port is not None:
        env["HTTP_PORT"] = http_port
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(CATALOG, Path(tmp, "catalog.toml"))
        proc = subprocess.run(["/bin/sh", "-c", script], cwd=tmp, env=env, capture_output=True, text=True)
        out = Path(tmp, "bin-name")
        written = out.read_text().strip() if out.exists() else ""
    return proc.returncode, proc.stderr.strip(), written


def check_select() -> int:
    script = select_script()
    table = catalog()
    problems = []
    bad_message = bad_service_message()
    for s, row in sorted(table.items()):
        http = row["http_port"] or None
        rc, err, written = run_select(script, s, row["port"], http)
        if rc != 0 or written != row["bin"]:
            problems.append(f"SERVICE={s} PORT={row['port']} HTTP_PORT={http or ''}: exit {rc}, wrote {written!r} (want {row['bin']!r}); {err}")
        if row["port"]:
            rc, err, _ = run_select(script, s, "1", http)
            if rc == 0 or f"PORT must be '{row['port']}'" not in err:
                problems.append(f"SERVICE={s} PORT=1: exit {rc}, stderr {err!r}: a wrong port must fail")
            rc, err, _ = run_select(script, s, None, http)
            if rc == 0:
                problems.append(f"SERVICE={s} without PORT: accepted, must fail")
        # HTTP_PORT: required and checked where the catalog has one, refused where it has none.
        rc, err, _ = run_select(script, s, row["port"], "1")
        if rc == 0 or f"HTTP_PORT must be '{row['http_port']}'" not in err:
            problems.append(f"SERVICE={s} HTTP_PORT=1: exit {rc}, stderr {err!r}: a wrong HTTP port must fail")
        if http:
            rc, err, _ = run_select(script, s, row["port"], None)
            if rc == 0 or f"HTTP_PORT must be '{http}'" not in err:
                problems.append(f"SERVICE={s} without HTTP_PORT: exit {rc}, stderr {err!r}: must fail")
    for bad in ("", "bogus", "Vessel", "shippy-vessel", None):
        rc, err, _ = run_select(script, bad, None)
        if rc == 0 or bad_message not in err:
            problems.append(f"SERVICE={bad!r}: exit {rc}, stderr {err!r}: want a failure saying '{bad_message}'")
    if problems:
        print(f"FAIL dockerfile select step: {len(problems)} problem(s)")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(f"ok   dockerfile select step: accepts {' '.join(sorted(table))}, rejects empty/unknown SERVICE and wrong PORT/HTTP_PORT (run with /bin/sh)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k8s", type=Path, help="rendered `kustomize build deploy/k8s/base` output")
    ap.add_argument("--mode", choices=("drift", "select"), default="drift")
    opts = ap.parse_args()
    if opts.mode == "select":
        return check_select()
    if yaml is None:
        print("FAIL drift: PyYAML is missing; run deploy/lint.sh (it provides .tools/venv) or pip install PyYAML")
        return 1
    return check_drift(opts.k8s)


if __name__ == "__main__":
    sys.exit(main())
