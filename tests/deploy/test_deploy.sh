#!/usr/bin/env bash
# test_deploy.sh - checks pgfan's deployment files without running them:
#   ./tests/deploy/test_deploy.sh [--pgfan BINARY] [--skip-install] [--update-man]
#
#   systemd  deploy/systemd/pgfan.service: `systemd-analyze verify`, the
#            exposure of `systemd-analyze security --offline=yes` (<= 2.0),
#            the settings the daemon relies on
#   k8s      deploy/k8s/*.yaml: every manifest parses, the Deployment's
#            strategy, probes, security context, resources, Secret and
#            volumes; `kubectl kustomize` when kubectl exists; the ConfigMap's
#            pgfan.conf passes `pgfan check-config`
#   probes   the exec probes and the Docker HEALTHCHECK, run with the real
#            binary against a fake status socket (healthy, unhealthy, absent)
#   docker   deploy/docker: Dockerfile stages and packages (every library the
#            binary needs is installed in the runtime stage), compose.yaml
#            services, mounts and settings, pgfan.compose.conf passes
#            check-config; `docker compose config -q` when it exists
#   man      docs/pgfan.1 renders without groff warnings, documents every
#            command and option of `pgfan --help`, and its configuration
#            reference matches deploy/pgfan.conf.example
#   install  `meson install --destdir` of a scratch build (prefix /usr) lists
#            the binary, the unit, the example configuration and the man page;
#            a /usr/local setup points the unit's ExecStart at /usr/local/bin
#
#   --pgfan BINARY  the pgfan to test with (default: build/daemon/pgfan)
#   --skip-install  skip the scratch build (the slow part)
#   --update-man    regenerate the configuration reference of docs/pgfan.1
#                   from deploy/pgfan.conf.example, then run the checks
#
# Needs: systemd (systemd-analyze), python3 with yaml (python3-yaml), groff,
# meson and ninja; all in deploy/install-deps.sh. Prints PASS/FAIL per check
# and ends with "N passed, N failed"; exits 1 when a check failed.
set -uo pipefail

CALLER_DIR=$(pwd -P)
cd "$(dirname "$0")/../.." || exit 2
ROOT=$(pwd -P)
PGFAN=$ROOT/build/daemon/pgfan
SKIP_INSTALL=0
UPDATE_MAN=0

usage() {
    sed -n '2,34s/^# \{0,1\}//p' "$0"
    exit "$1"
}

while (($# > 0)); do
    case "$1" in
    --pgfan)
        (($# >= 2)) || usage 2
        PGFAN=$2
        shift
        ;;
    --skip-install) SKIP_INSTALL=1 ;;
    --update-man) UPDATE_MAN=1 ;;
    -h | --help) usage 0 ;;
    *)
        echo "test_deploy.sh: unknown argument: $1" >&2
        usage 2
        ;;
    esac
    shift
done

# The unit's ExecStart needs an absolute path.
[[ "$PGFAN" == /* ]] || PGFAN=$CALLER_DIR/$PGFAN

PASSED=0
FAILED=0
TMP=$(mktemp -d /tmp/pgfan-deploy.XXXXXX)
trap 'declare -F pg_cleanup >/dev/null && pg_cleanup; rm -rf "$TMP"' EXIT

pass() {
    echo "PASS  $1"
    PASSED=$((PASSED + 1))
}

fail() {
    echo "FAIL  $1"
    FAILED=$((FAILED + 1))
}

# check NAME COMMAND...: runs COMMAND; PASS when it exits 0. Output lines
# starting with "note:" are shown either way, everything on failure.
check() {
    local name=$1
    shift
    if "$@" >"$TMP/out" 2>&1; then
        pass "$name"
        sed -n 's/^note: /      /p' "$TMP/out"
    else
        fail "$name"
        sed 's/^/      /' "$TMP/out" | tail -n 30
    fi
}

# ---- tools ----

PY=
for candidate in /usr/bin/python3 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import yaml' 2>/dev/null; then
        PY=$candidate
        break
    fi
done

need_tools() {
    local missing=()
    [[ -x "$PGFAN" ]] || missing+=("pgfan binary $PGFAN (build it: ninja -C build)")
    [[ -n "$PY" ]] || missing+=("python3 with yaml (apt-get install python3-yaml)")
    command -v systemd-analyze >/dev/null || missing+=("systemd-analyze (apt-get install systemd)")
    command -v groff >/dev/null || missing+=("groff (apt-get install groff-base)")
    if ((${#missing[@]} > 0)); then
        printf 'missing: %s\n' "${missing[@]}"
        echo "HINT: deploy/install-deps.sh installs the packages"
        return 1
    fi
}
if ! check "tools: pgfan, python3-yaml, systemd-analyze, groff present" need_tools; then
    echo "$PASSED passed, $FAILED failed"
    exit 1
fi

# The Python half: YAML manifests, the fake status socket, the man page
# generator. One file, one subcommand per check.
cat >"$TMP/deploy.py" <<'PYEOF'
import glob, json, os, re, socket, subprocess, sys, threading
import yaml

ROOT = os.environ["ROOT"]
PGFAN = os.environ["PGFAN"]
TMP = os.environ["TMP"]
fails = []

def expect(cond, what):
    if not cond:
        fails.append(what)
    return cond

def finish():
    for f in fails:
        print("error: " + f)
    sys.exit(1 if fails else 0)

def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]

def k8s_docs():
    out = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy/k8s/*.yaml"))):
        for d in load_all(path):
            out[(d.get("kind"), d.get("metadata", {}).get("name"))] = (os.path.basename(path), d)
    return out

def find(docs, kind):
    return [d for (k, _), (_, d) in docs.items() if k == kind]

def seconds(text):
    """A duration of compose/systemd style (90s, 1m30s, 2min) in seconds."""
    total = 0.0
    for num, unit in re.findall(r"([0-9.]+)\s*(ms|min|m|h|s|)", str(text)):
        total += float(num) * {"ms": 0.001, "s": 1, "": 1, "m": 60, "min": 60, "h": 3600}[unit]
    return total

def conf_value(text, section, key):
    """key of [section] in a pgfan INI text, or None (commented lines skipped)."""
    cur = None
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"^\[(.+)\]$", line)
        if m:
            cur = m.group(1)
            continue
        m = re.match(r"^([A-Za-z0-9_.]+)\s*=\s*(.*?)(\s+;.*)?$", line)
        if m and cur == section and m.group(1) == key:
            return m.group(2)
    return None

def example_default(section, key):
    with open(os.path.join(ROOT, "deploy/pgfan.conf.example")) as f:
        return conf_value(f.read(), section, key)

# ---- kubernetes ----

def cmd_k8s_parse():
    files = sorted(glob.glob(os.path.join(ROOT, "deploy/k8s/*.yaml")))
    expect(len(files) >= 4, "expected at least 4 manifests, found %d" % len(files))
    for path in files:
        name = os.path.basename(path)
        try:
            docs = load_all(path)
        except yaml.YAMLError as e:
            expect(False, "%s: %s" % (name, e))
            continue
        expect(docs, name + ": empty")
        for d in docs:
            expect(isinstance(d, dict) and d.get("apiVersion") and d.get("kind"),
                   name + ": a document without apiVersion/kind")
            if d.get("kind") != "Kustomization":
                expect(d.get("metadata", {}).get("name"), name + ": a document without metadata.name")
        print("note: %s: %s" % (name, ", ".join(str(d.get("kind")) for d in docs)))
    kust = load_all(os.path.join(ROOT, "deploy/k8s/kustomization.yaml"))[0]
    res = kust.get("resources", [])
    for r in res:
        expect(os.path.exists(os.path.join(ROOT, "deploy/k8s", r)), "kustomization: missing resource " + r)
    expect("deployment.yaml" in res and "configmap.yaml" in res, "kustomization: lacks deployment/configmap")
    expect("secret.example.yaml" not in res, "kustomization must not apply the example Secret")
    finish()

def container_of(dep):
    cs = dep["spec"]["template"]["spec"]["containers"]
    expect(len(cs) == 1, "one container expected")
    return cs[0]

def cmd_k8s_deployment():
    docs = k8s_docs()
    deps = find(docs, "Deployment")
    if not expect(len(deps) == 1, "exactly one Deployment expected"):
        finish()
    dep = deps[0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    c = container_of(dep)
    expect(spec.get("replicas") == 1, "replicas must be 1 (one consumer per slot)")
    expect(spec.get("strategy", {}).get("type") == "Recreate", "strategy must be Recreate")
    cm = find(docs, "ConfigMap")
    conf = cm[0]["data"]["pgfan.conf"] if cm else ""
    shutdown = seconds(conf_value(conf, "source", "shutdown_timeout") or example_default("source", "shutdown_timeout"))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    expect(grace >= 90 and grace > shutdown,
           "terminationGracePeriodSeconds %s must be >= 90 and above shutdown_timeout %ss" % (grace, shutdown))
    print("note: terminationGracePeriodSeconds %s, shutdown_timeout %gs" % (grace, shutdown))
    psc = pod.get("securityContext", {})
    csc = c.get("securityContext", {})
    expect(psc.get("runAsNonRoot") is True, "pod runAsNonRoot must be true")
    expect(isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0, "pod runAsUser must be a non-zero UID")
    expect(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
    expect(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
    expect("ALL" in csc.get("capabilities", {}).get("drop", []), "capabilities must drop ALL")
    res = c.get("resources", {})
    expect(res.get("requests", {}).get("memory") and res.get("requests", {}).get("cpu"), "resources.requests cpu+memory")
    expect(res.get("limits", {}).get("memory"), "resources.limits.memory")
    expect(c.get("args", [])[:1] == ["run"] or c.get("command", [])[-3:-2] == ["run"], "the container must `run`")
    # The Secret: PGFAN_SOURCE_DSN from secretKeyRef, names matching the example.
    env = {e["name"]: e for e in c.get("env", [])}
    ref = env.get("PGFAN_SOURCE_DSN", {}).get("valueFrom", {}).get("secretKeyRef")
    secrets = find(docs, "Secret")
    if expect(ref, "PGFAN_SOURCE_DSN must come from a secretKeyRef") and expect(secrets, "no example Secret"):
        s = secrets[0]
        expect(s["metadata"]["name"] == ref["name"], "secretKeyRef name %s != example Secret %s" % (ref["name"], s["metadata"]["name"]))
        expect(ref["key"] in s.get("stringData", {}) or ref["key"] in s.get("data", {}),
               "the example Secret lacks key " + ref["key"])
    # Volumes: the status socket's directory is an emptyDir; the ConfigMap is mounted at /etc/pgfan.
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    sock = env.get("PGFAN_STATUS_SOCKET", {}).get("value") or conf_value(conf, "status", "socket")
    sockdir = os.path.dirname(sock or "")
    expect(sockdir in mounts and "emptyDir" in vols.get(mounts[sockdir], {}),
           "the status socket directory %s must be an emptyDir mount" % sockdir)
    cfgmount = mounts.get("/etc/pgfan")
    expect(cfgmount and vols.get(cfgmount, {}).get("configMap", {}).get("name") == (cm[0]["metadata"]["name"] if cm else None),
           "/etc/pgfan must mount the ConfigMap")
    expect(conf_value(conf, "status", "socket") in (None, sock), "[status] socket and PGFAN_STATUS_SOCKET disagree")
    path = conf_value(conf, "sink.file", "path")
    if path:
        pdir = os.path.dirname(path)
        expect(pdir in mounts and "persistentVolumeClaim" in vols.get(mounts[pdir], {}),
               "the file sink's directory %s must be a PersistentVolumeClaim mount" % pdir)
    # Probes: liveness never depends on PostgreSQL or the sinks.
    probes = {}
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        p = c.get(kind)
        if expect(p and "exec" in p, kind + " must be an exec probe"):
            probes[kind] = p["exec"]["command"]
            expect(p["exec"]["command"][:2] == ["pgfan", "status"], kind + " must run `pgfan status`")
            expect(sock in p["exec"]["command"], kind + " must name the socket " + str(sock))
    if "livenessProbe" in probes:
        expect("--check" not in probes["livenessProbe"], "livenessProbe must not use --check (lag/sinks)")
    if "readinessProbe" in probes:
        r = probes["readinessProbe"]
        expect("--check" in r and "--max-lag-seconds" in r, "readinessProbe must be --check --max-lag-seconds N")
    sp = c.get("startupProbe", {})
    budget = sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3)
    expect(budget >= 120, "startupProbe budget %ss is short" % budget)
    with open(os.path.join(TMP, "probes.json"), "w") as f:
        json.dump(probes, f)
    print("note: probes: " + "; ".join("%s `%s`" % (k, " ".join(v)) for k, v in probes.items()))
    finish()

def cmd_k8s_extract():
    """Writes the ConfigMap's pgfan.conf and the example Secret's DSN to TMP."""
    docs = k8s_docs()
    cm = find(docs, "ConfigMap")[0]
    s = find(docs, "Secret")[0]
    with open(os.path.join(TMP, "k8s.conf"), "w") as f:
        f.write(cm["data"]["pgfan.conf"])
    with open(os.path.join(TMP, "k8s.dsn"), "w") as f:
        f.write(s["stringData"]["dsn"])

# ---- probes against a fake status socket ----

SAMPLE = {"version": "0.1.0", "pid": 1234, "state": "streaming", "slot": "pgfan", "database": "shop",
          "system_id": "7312", "received_lsn": "0/16B3748", "confirmed_lsn": "0/16B3700",
          "server_wal_end": "0/16B3800", "lag_bytes": 256, "lag_seconds": 0.25,
          "inflight_transactions": 3, "uptime_seconds": 12.3, "last_error": "",
          "sinks": [{"name": "file", "state": "ok", "durable_lsn": "0/16B3700", "queue_depth": 0,
                     "queued_bytes": 0, "events": 10, "bytes": 1234, "retries": 0, "errors": 0,
                     "dead_letters": 0, "last_error": ""}]}

class FakeStatus:
    """Answers every connection with the current document, like pgfan's status socket."""
    def __init__(self, path):
        self.doc = SAMPLE
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            conn, _ = self.sock.accept()
            try:
                conn.sendall((json.dumps(self.doc) + "\n").encode())
            finally:
                conn.close()

def run_probe(cmd, sock, real_sock):
    argv = [PGFAN if a == "pgfan" else a for a in cmd]
    argv = [real_sock if a == sock else a for a in argv]
    if "-s" not in argv and "--socket" not in argv:
        argv += ["-s", real_sock]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    return p.returncode, (p.stdout + p.stderr).strip().replace("\n", " | ")

def cmd_probes():
    with open(os.path.join(TMP, "probes.json")) as f:
        probes = json.load(f)
    m = re.search(r"^HEALTHCHECK.*?CMD\s+(\[.*?\])\s*$",
                  open(os.path.join(ROOT, "deploy/docker/Dockerfile")).read().replace("\\\n", " "),
                  re.M | re.S)
    if expect(m, "Dockerfile: no HEALTHCHECK CMD [...]"):
        probes["docker HEALTHCHECK"] = json.loads(m.group(1))
    sock = next((a for a in probes.get("livenessProbe", []) if a.endswith(".sock")), "/run/pgfan/status.sock")
    real = os.path.join(TMP, "status.sock")
    fake = FakeStatus(real)
    lagging = dict(SAMPLE, lag_seconds=1000.0)
    connecting = dict(SAMPLE, state="reconnecting", last_error="could not connect to server")
    failed_sink = dict(SAMPLE, sinks=[dict(SAMPLE["sinks"][0], state="failed", last_error="disk full")])
    # (document or None for no socket, expected exit code per probe kind)
    cases = [
        ("streaming", SAMPLE, {"startupProbe": 0, "livenessProbe": 0, "readinessProbe": 0, "docker HEALTHCHECK": 0}),
        ("lag 1000 s", lagging, {"startupProbe": 0, "livenessProbe": 0, "readinessProbe": 1, "docker HEALTHCHECK": 1}),
        ("reconnecting", connecting, {"startupProbe": 0, "livenessProbe": 0, "readinessProbe": 1, "docker HEALTHCHECK": 1}),
        ("failed sink", failed_sink, {"livenessProbe": 0, "readinessProbe": 1, "docker HEALTHCHECK": 1}),
        ("no socket", None, {"startupProbe": 2, "livenessProbe": 2, "readinessProbe": 2, "docker HEALTHCHECK": 2}),
    ]
    for name, doc, want in cases:
        target = real if doc is not None else os.path.join(TMP, "absent.sock")
        if doc is not None:
            fake.doc = doc
        for kind, code in want.items():
            if kind not in probes:
                continue
            got, text = run_probe(probes[kind], sock, target)
            ok = expect(got == code and "Try 'pgfan --help'" not in text,
                        "%s, %s: exit %d (want %d): %s" % (name, kind, got, code, text[:200]))
            if ok and kind == "readinessProbe":
                print("note: %s: readiness exit %d: %s" % (name, got, text[:100]))
    finish()

# ---- docker ----

def cmd_compose():
    d = os.path.join(ROOT, "deploy/docker")
    c = load_all(os.path.join(d, "compose.yaml"))[0]
    svcs = c.get("services", {})
    for s in ("postgres", "kafka", "elasticsearch", "kibana", "pgfan"):
        expect(s in svcs, "compose: no service " + s)
    if fails:
        finish()
    pg = svcs["postgres"]
    cmd = " ".join(pg.get("command", [])) if isinstance(pg.get("command"), list) else str(pg.get("command"))
    expect("wal_level=logical" in cmd, "postgres: wal_level=logical missing")
    m = re.search(r"output_plugin_libraries=(\S+)", cmd)
    expect(m and "wal2json" in m.group(1).split(","), "postgres: output_plugin_libraries must list wal2json")
    build = pg.get("build", {})
    inline = build.get("dockerfile_inline", "") if isinstance(build, dict) else ""
    expect("postgresql-15-wal2json" in inline and re.search(r"FROM postgres:15", inline),
           "postgres: the image must be postgres:15 + postgresql-15-wal2json")
    for svc_name, svc in svcs.items():
        for v in svc.get("volumes", []):
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith("."):
                expect(os.path.exists(os.path.join(d, src)), "%s: mounted file %s does not exist" % (svc_name, src))
    kafka_env = svcs["kafka"].get("environment", {})
    expect("broker" in str(kafka_env.get("KAFKA_PROCESS_ROLES", "")) and "controller" in str(kafka_env.get("KAFKA_PROCESS_ROLES", "")),
           "kafka: KRaft (broker,controller) expected")
    expect(re.search(r"elasticsearch:8\.", svcs["elasticsearch"].get("image", "")), "elasticsearch: 8.x image expected")
    expect(re.search(r"kibana:8\.", svcs["kibana"].get("image", "")), "kibana: 8.x image expected")
    pf = svcs["pgfan"]
    b = pf.get("build", {})
    expect(os.path.exists(os.path.join(d, b.get("context", "."), b.get("dockerfile", "Dockerfile"))),
           "pgfan: build.dockerfile does not exist relative to build.context")
    conf_mount = [v for v in pf.get("volumes", []) if isinstance(v, str) and v.split(":")[1] == "/etc/pgfan/pgfan.conf"]
    expect(conf_mount, "pgfan: /etc/pgfan/pgfan.conf must be mounted")
    expect(seconds(pf.get("stop_grace_period", "10s")) >= 90, "pgfan: stop_grace_period must be >= 90s")
    expect(set(pf.get("depends_on", {})) >= {"postgres", "kafka"}, "pgfan must depend on postgres and kafka")
    env = pf.get("environment", {})
    dsn = env.get("PGFAN_SOURCE_DSN", "")
    host = re.search(r"host=(\S+)", dsn)
    expect(host and host.group(1) in svcs, "pgfan: PGFAN_SOURCE_DSN host must be a compose service")
    user = re.search(r"user=(\S+)", dsn)
    init = open(os.path.join(d, "postgres-init.sql")).read()
    expect(user and re.search(r"CREATE ROLE %s\b[^;]*\bREPLICATION\b" % re.escape(user.group(1)), init, re.I),
           "postgres-init.sql must create the DSN's role with REPLICATION")
    pw = re.search(r"password=(\S+)", dsn)
    expect(pw and ("PASSWORD '%s'" % pw.group(1)) in init, "postgres-init.sql password differs from the DSN's")
    conf = open(os.path.join(d, "pgfan.compose.conf")).read()
    brokers = conf_value(conf, "sink.kafka", "brokers")
    if brokers:
        expect(all(b.split(":")[0] in svcs for b in brokers.split(",")), "[sink.kafka] brokers must be compose services")
        expect("PLAINTEXT://kafka:9092" in str(kafka_env.get("KAFKA_ADVERTISED_LISTENERS", "")) or brokers != "kafka:9092",
               "kafka must advertise the address pgfan uses")
    with open(os.path.join(TMP, "compose.dsn"), "w") as f:
        f.write(dsn)
    print("note: services: " + ", ".join(svcs))
    finish()

# ---- man page ----

def roff_text(s):
    s = s.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + s if s[:1] in (".", "'") else s

def gen_man_config():
    """The CONFIGURATION REFERENCE body from deploy/pgfan.conf.example."""
    lines = open(os.path.join(ROOT, "deploy/pgfan.conf.example")).read().splitlines()
    out, comment, started = [], [], False
    for line in lines:
        sec = re.match(r"^;?\[(.+)\]$", line)
        key = re.match(r"^;?([A-Za-z0-9_.<>-]+) = ?(.*)$", line)
        if sec:
            started = True
            out.append(".SS [%s]" % sec.group(1))
            if comment:
                out.append(roff_text(" ".join(comment)))
            comment = []
        elif key and started:
            out.append(".TP")
            out.append("\\fB%s\\fR = \\fI%s\\fR" % (roff_text(key.group(1)), roff_text(key.group(2)) or "\\(lq\\(rq"))
            out.append(roff_text(" ".join(comment)) if comment else "(no description)")
            comment = []
        elif line.startswith(";"):
            comment.append(line[1:].strip())
        else:
            comment = []
    return out

MAN = os.path.join(ROOT, "docs/pgfan.1")
BEGIN = ".\\\" BEGIN CONFIG"
END = ".\\\" END CONFIG"

def cmd_man_update():
    text = open(MAN).read().split("\n")
    b = next(i for i, l in enumerate(text) if l.startswith(BEGIN))
    e = next(i for i, l in enumerate(text) if l.startswith(END))
    text[b + 1:e] = gen_man_config()
    open(MAN, "w").write("\n".join(text))
    print("updated the configuration reference of docs/pgfan.1")

def cmd_man_config():
    text = open(MAN).read().split("\n")
    b = [i for i, l in enumerate(text) if l.startswith(BEGIN)]
    e = [i for i, l in enumerate(text) if l.startswith(END)]
    if expect(len(b) == 1 and len(e) == 1, "docs/pgfan.1: BEGIN CONFIG/END CONFIG markers missing"):
        want = gen_man_config()
        have = text[b[0] + 1:e[0]]
        if not expect(have == want, "docs/pgfan.1: the configuration reference differs from "
                      "deploy/pgfan.conf.example; regenerate it: tests/deploy/test_deploy.sh --update-man"):
            import difflib
            for l in list(difflib.unified_diff(have, want, "docs/pgfan.1", "generated", lineterm="", n=0))[:20]:
                print("  " + l)
        keys = sum(1 for l in want if l == ".TP")
        print("note: configuration reference: %d sections, %d keys" % (sum(1 for l in want if l.startswith(".SS")), keys))
    finish()

def cmd_man_help():
    rendered = open(os.path.join(TMP, "man.txt")).read()
    helptext = subprocess.run([PGFAN, "--help"], capture_output=True, text=True).stdout
    opts = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])\b", helptext))
    cmds = set(re.findall(r"^\s+pgfan ([a-z][a-z-]+)", helptext, re.M))
    expect(cmds, "pgfan --help lists no commands")
    for w in sorted(opts | cmds):
        expect(re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(w), rendered), "docs/pgfan.1 does not mention " + w)
    for section in ("SYNOPSIS", "COMMANDS", "OPTIONS", "CONFIGURATION", "ENVIRONMENT", "FILES",
                    "EXIT STATUS", "SIGNALS", "EXAMPLES"):
        expect(re.search(r"^%s$" % section, rendered, re.M), "docs/pgfan.1: no section " + section)
    print("note: %d commands and %d options of --help documented" % (len(cmds), len(opts)))
    finish()

globals()["cmd_" + sys.argv[1].replace("-", "_")]()
PYEOF
export ROOT PGFAN TMP

py() { "$PY" "$TMP/deploy.py" "$@"; }

# ---- systemd ----

UNIT=$ROOT/deploy/systemd/pgfan.service

# verify needs ExecStart to exist and man:pgfan(1) to resolve: a copy that
# runs the built binary, and MANPATH with the man page.
mkdir -p "$TMP/unit" "$TMP/man/man1"
sed "s|^ExecStart=/usr/bin/pgfan |ExecStart=$PGFAN |" "$UNIT" >"$TMP/unit/pgfan.service"
cp "$ROOT/docs/pgfan.1" "$TMP/man/man1/pgfan.1"

unit_verify() {
    grep -q "^ExecStart=$PGFAN run -c /etc/pgfan/pgfan.conf$" "$TMP/unit/pgfan.service" ||
        { echo "ExecStart is not '/usr/bin/pgfan run -c /etc/pgfan/pgfan.conf'"; return 1; }
    local out
    out=$(cd "$TMP/unit" && MANPATH="$TMP/man" systemd-analyze verify pgfan.service 2>&1)
    local rc=$?
    [[ -z "$out" ]] || echo "$out"
    ((rc == 0)) && [[ -z "$out" ]]
}

unit_security() {
    local out level
    out=$(systemd-analyze security --offline=yes --no-pager "$TMP/unit/pgfan.service" 2>&1)
    level=$(sed -n 's/.*Overall exposure level for pgfan.service: \([0-9.]*\).*/\1/p' <<<"$out")
    if [[ -z "$level" ]]; then
        echo "$out" | tail -n 5
        return 1
    fi
    echo "note: exposure level $level (target <= 2.0)"
    grep '✗' <<<"$out" | sed 's/^✗ \([^ ]*\).*/note:   not set: \1/' | sed 's/  */ /g'
    awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }'
}

unit_settings() {
    local want=(
        Type=notify Restart=on-failure RestartSec=5s RestartPreventExitStatus=2 WatchdogSec=30s
        TimeoutStopSec=90s KillSignal=SIGTERM RuntimeDirectory=pgfan RuntimeDirectoryMode=0750
        StateDirectory=pgfan DynamicUser=yes UMask=0027 ProtectSystem=strict ProtectHome=yes
        PrivateDevices=yes 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' RestrictNamespaces=yes
        LockPersonality=yes MemoryDenyWriteExecute=yes SystemCallFilter=@system-service
        CapabilityBoundingSet= 'Environment=PGFAN_STATUS_SOCKET=%t/pgfan/status.sock'
        'Environment=PGPASSFILE=%d/pgpass' 'LoadCredential=pgpass:/etc/pgfan/pgpass'
        EnvironmentFile=-/etc/pgfan/pgfan.env 'WorkingDirectory=%S/pgfan'
    )
    local rc=0 line stop shutdown
    for line in "${want[@]}"; do
        grep -qxF -- "$line" "$UNIT" || { echo "missing: $line"; rc=1; }
    done
    # The stop timeout must cover the drain.
    stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$UNIT")
    shutdown=$(sed -n 's/^shutdown_timeout = \([0-9]*\)s$/\1/p' "$ROOT/deploy/pgfan.conf.example")
    if ! ((stop > shutdown)); then
        echo "TimeoutStopSec=${stop}s does not exceed the default shutdown_timeout ${shutdown}s"
        rc=1
    fi
    echo "note: TimeoutStopSec ${stop}s > shutdown_timeout ${shutdown}s"
    return $rc
}

check "systemd: systemd-analyze verify pgfan.service" unit_verify
check "systemd: systemd-analyze security exposure <= 2.0" unit_security
check "systemd: notify, watchdog, restart, directories, credentials, hardening" unit_settings

# ---- kubernetes ----

k8s_config() {
    py k8s-extract || return 1
    PGFAN_SOURCE_DSN=$(<"$TMP/k8s.dsn") "$PGFAN" check-config -c "$TMP/k8s.conf" >"$TMP/k8s.effective" || return 1
    grep -q 'password' "$TMP/k8s.effective" && grep -q 'change-me' "$TMP/k8s.effective" &&
        { echo "check-config printed the Secret's password"; return 1; }
    echo "note: ConfigMap pgfan.conf + Secret DSN: valid"
}

kustomize_build() {
    if ! command -v kubectl >/dev/null; then
        echo "note: kubectl not installed: skipped"
        return 0
    fi
    kubectl kustomize "$ROOT/deploy/k8s" >"$TMP/kustomized.yaml" || return 1
    "$PY" -c 'import sys, yaml; d = [x for x in yaml.safe_load_all(open(sys.argv[1])) if x]; \
print("note: kubectl kustomize: " + ", ".join(x["kind"] for x in d)); \
sys.exit(0 if {"Deployment", "ConfigMap"} <= {x["kind"] for x in d} else 1)' "$TMP/kustomized.yaml"
}

check "k8s: every manifest parses" py k8s-parse
check "k8s: Deployment (Recreate, grace, probes, security, resources, Secret, volumes)" py k8s-deployment
check "k8s: ConfigMap pgfan.conf passes pgfan check-config" k8s_config
check "k8s: kubectl kustomize deploy/k8s" kustomize_build
check "probes: k8s exec probes and Docker HEALTHCHECK against a fake status socket" py probes

# ---- docker ----

DOCKERFILE=$ROOT/deploy/docker/Dockerfile

# The packages installed by the RUN apt-get install of stage $1 (0 or 1).
stage_packages() {
    awk -v want="$1" '
        /^FROM / { stage++ }
        stage - 1 == want && /apt-get install/ { on = 1 }
        on { line = line " " $0; if ($0 !~ /\\$/) on = 0 }
        END { print line }' "$DOCKERFILE" |
        tr ' \\' '\n\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -vxE 'apt-get|install|rm|update|&&'
}

# Debian package of a file (usrmerge: try the path as found, then resolved).
package_of() {
    local p
    for p in "$1" "$(readlink -f "$1")" "${1/#\/usr\/lib/\/lib}"; do
        dpkg -S "$p" 2>/dev/null | head -n 1 | cut -d: -f1 && return 0
    done
    return 1
}

dockerfile_checks() {
    local rc=0 froms build runtime lib path pkg dep pc
    froms=$(grep -c '^FROM ' "$DOCKERFILE")
    ((froms == 2)) || { echo "expected 2 stages, found $froms"; rc=1; }
    grep -q '^FROM debian:${DEBIAN_RELEASE} AS build$' "$DOCKERFILE" && grep -q '^ARG DEBIAN_RELEASE=bookworm$' "$DOCKERFILE" ||
        { echo "build stage must be debian:bookworm"; rc=1; }
    grep -q '^FROM debian:${DEBIAN_RELEASE}-slim AS runtime$' "$DOCKERFILE" ||
        { echo "runtime stage must be debian:bookworm-slim"; rc=1; }
    grep -qE '^USER [1-9][0-9]*:[1-9][0-9]*$' "$DOCKERFILE" || { echo "USER must be a numeric non-root uid:gid"; rc=1; }
    grep -qxF 'ENTRYPOINT ["pgfan"]' "$DOCKERFILE" && grep -qxF 'CMD ["run", "-c", "/etc/pgfan/pgfan.conf"]' "$DOCKERFILE" ||
        { echo "ENTRYPOINT/CMD must run pgfan run -c /etc/pgfan/pgfan.conf"; rc=1; }
    build=$(stage_packages 0)
    runtime=$(stage_packages 1)
    echo "note: runtime packages: ${runtime//$'\n'/ }"
    # Every library the binary links is installed in the runtime stage.
    # (Sanitizer runtimes: the test may run with the ASan build's binary.)
    for lib in $(readelf -d "$PGFAN" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | grep -vE '^lib(a|ub|l|t)san\.'); do
        path=$(ldconfig -p | awk -v s="$lib" '$1 == s && /x86-64/ { print $NF; exit }')
        pkg=$(package_of "$path")
        [[ "$pkg" == libc6 || -z "$pkg" && "$lib" == libc.so.6 ]] && continue
        grep -qxF "$pkg" <<<"$runtime" || { echo "runtime stage lacks $pkg (for $lib)"; rc=1; }
    done
    # Every dependency() of the meson build has its -dev package in the build stage.
    local -a buildfiles
    mapfile -t buildfiles < <(find "$ROOT" -name meson.build -not -path '*/build*/*' -not -path '*/tests/*')
    for dep in $(grep -ho "dependency('[a-z0-9_-]*'" "${buildfiles[@]}" | sed "s/dependency('\(.*\)'/\1/" | sort -u); do
        [[ "$dep" == check ]] && continue
        pc=$(pkg-config --variable=pcfiledir "$dep" 2>/dev/null)/$dep.pc
        pkg=$(package_of "$pc") || { echo "no package owns $dep.pc"; rc=1; continue; }
        grep -qxF "$pkg" <<<"$build" || { echo "build stage lacks $pkg (meson dependency $dep)"; rc=1; }
    done
    grep -qxF libjsmn-dev <<<"$build" || { echo "build stage lacks libjsmn-dev"; rc=1; }
    return $rc
}

compose_config() {
    if docker compose version >/dev/null 2>&1; then
        (cd "$ROOT/deploy/docker" && docker compose config -q) || return 1
        echo "note: docker compose config -q: valid"
    else
        echo "note: docker compose not installed: checked by the YAML checks only"
    fi
}

compose_pgfan_config() {
    PGFAN_SOURCE_DSN=$(<"$TMP/compose.dsn") "$PGFAN" check-config -c "$ROOT/deploy/docker/pgfan.compose.conf" >/dev/null &&
        echo "note: pgfan.compose.conf + compose DSN: valid"
}

# The compose PostgreSQL setup, for real when tests/run.sh (tests/harness/pg.sh)
# provides a server: the shop schema and postgres-init.sql in a scratch
# database (the role renamed so runs do not collide), then pgfan as that role
# with pgfan.compose.conf (Kafka left out: it is another test's business)
# until `status --check` is OK and an insert reaches the file, the
# Kubernetes probes against the live socket, and a clean SIGTERM stop.
PG_NAME=pgfan_deploy_$$
PG_STARTED=0
PGFAN_PID=

pg_psql() {
    psql -X -q -v ON_ERROR_STOP=1 -h "$PGFAN_TEST_PGHOST" -p "$PGFAN_TEST_PGPORT" -U "$PGFAN_TEST_PGUSER" "$@"
}

pg_cleanup() {
    if [[ -n "$PGFAN_PID" ]]; then
        kill -KILL "$PGFAN_PID" 2>/dev/null
        wait "$PGFAN_PID" 2>/dev/null
        PGFAN_PID=
    fi
    ((PG_STARTED)) || return 0
    pg_psql -d postgres -c "SELECT pg_drop_replication_slot('$PG_NAME') FROM pg_replication_slots WHERE slot_name = '$PG_NAME'" \
        -c "DROP DATABASE IF EXISTS $PG_NAME" -c "DROP ROLE IF EXISTS $PG_NAME" >/dev/null 2>&1
    PG_STARTED=0
}

# Polls COMMAND until it succeeds; false after SECONDS.
poll() {
    local seconds=$1 deadline
    shift
    deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

compose_postgres_stream() {
    local dir=$TMP/pg rc=0 cmd
    if [[ -z "${PGFAN_TEST_PGHOST:-}" ]]; then
        echo "note: no PostgreSQL (PGFAN_TEST_PG* unset; tests/run.sh starts one): skipped"
        return 0
    fi
    mkdir -p "$dir"
    PG_STARTED=1
    pg_psql -d postgres -c "CREATE DATABASE $PG_NAME" || return 1
    pg_psql -d "$PG_NAME" -f "$ROOT/deploy/shop/schema.sql" >/dev/null || return 1
    sed "s/\bpgfan\b/$PG_NAME/g" "$ROOT/deploy/docker/postgres-init.sql" >"$dir/init.sql"
    pg_psql -d "$PG_NAME" -f "$dir/init.sql" || return 1
    awk '/^\[sink\.kafka\]$/ { skip = 1; next } /^\[/ { skip = 0 } !skip' \
        "$ROOT/deploy/docker/pgfan.compose.conf" >"$dir/pgfan.conf"
    PGFAN_SOURCE_DSN="host=$PGFAN_TEST_PGHOST port=$PGFAN_TEST_PGPORT dbname=$PG_NAME user=$PG_NAME" \
        PGFAN_SOURCE_SLOT=$PG_NAME PGFAN_STATUS_SOCKET=$dir/status.sock \
        PGFAN_SINK_FILE_PATH=$dir/changes.ndjson \
        "$PGFAN" run -c "$dir/pgfan.conf" 2>"$dir/pgfan.log" &
    PGFAN_PID=$!
    if ! poll 60 "$PGFAN" status -s "$dir/status.sock" --check; then
        echo "pgfan did not become healthy within 60 s:"
        "$PGFAN" status -s "$dir/status.sock" --check
        tail -n 15 "$dir/pgfan.log"
        return 1
    fi
    pg_psql -d "$PG_NAME" -c "INSERT INTO countries VALUES (999, 'ZZ', 'Deployland')" || return 1
    if ! poll 30 grep -q Deployland "$dir/changes.ndjson"; then
        echo "the insert did not reach the file sink within 30 s"
        tail -n 15 "$dir/pgfan.log"
        return 1
    fi
    # The Deployment's probes, against the live daemon.
    for kind in startupProbe livenessProbe readinessProbe; do
        mapfile -t cmd < <("$PY" -c 'import json, sys; print("\n".join(json.load(open(sys.argv[1]))[sys.argv[2]]))' \
            "$TMP/probes.json" "$kind")
        cmd[0]=$PGFAN
        cmd=("${cmd[@]/#\/run\/pgfan\/status.sock/$dir/status.sock}")
        "${cmd[@]}" >/dev/null || { echo "$kind failed against the live daemon: ${cmd[*]}"; rc=1; }
    done
    kill -TERM "$PGFAN_PID"
    wait "$PGFAN_PID"
    local code=$?
    PGFAN_PID=
    ((code == 0)) || { echo "pgfan exited $code after SIGTERM (want 0)"; tail -n 15 "$dir/pgfan.log"; rc=1; }
    echo "note: role and grants of postgres-init.sql, pgfan.compose.conf: streamed, probes OK, SIGTERM exit $code"
    return $rc
}

check "docker: Dockerfile stages, user, entrypoint, runtime libraries, build packages" dockerfile_checks
check "docker: compose.yaml services, mounts, PostgreSQL settings, role" py compose
check "docker: pgfan.compose.conf passes pgfan check-config" compose_pgfan_config
check "docker: postgres-init.sql + pgfan.compose.conf stream from a real PostgreSQL" compose_postgres_stream
pg_cleanup
check "docker: docker compose config" compose_config

# ---- man page ----

if ((UPDATE_MAN)); then
    py man-update
fi

man_render() {
    local warnings
    # Plain text for the next check, warnings or not.
    groff -man -Tutf8 -P-c -P-b -P-u "$ROOT/docs/pgfan.1" 2>/dev/null >"$TMP/man.txt"
    warnings=$(groff -man -Tutf8 -ww -z "$ROOT/docs/pgfan.1" 2>&1)
    [[ -z "$warnings" ]] || { echo "$warnings"; return 1; }
    if command -v man >/dev/null; then
        warnings=$(MANWIDTH=80 man --warnings -l "$ROOT/docs/pgfan.1" 2>&1 >/dev/null)
        [[ -z "$warnings" ]] || { echo "$warnings"; return 1; }
    fi
    echo "note: $(wc -l <"$TMP/man.txt") lines rendered, no warnings"
}

check "man: docs/pgfan.1 renders without warnings (groff -ww, man -l)" man_render
check "man: every command and option of pgfan --help is documented" py man-help
check "man: configuration reference matches deploy/pgfan.conf.example" py man-config

# ---- install ----

install_tree() {
    local dest=$TMP/dest rc=0 f
    if ! grep -q "^subdir('deploy')" "$ROOT/meson.build"; then
        echo "the top-level meson.build lacks subdir('deploy')"
        return 1
    fi
    meson setup "$TMP/build" "$ROOT" --prefix=/usr -Dtests=false >"$TMP/setup.log" 2>&1 ||
        { tail -n 20 "$TMP/setup.log"; return 1; }
    ninja -C "$TMP/build" >"$TMP/ninja.log" 2>&1 || { tail -n 20 "$TMP/ninja.log"; return 1; }
    meson install -C "$TMP/build" --destdir "$dest" --no-rebuild >"$TMP/install.log" 2>&1 ||
        { tail -n 20 "$TMP/install.log"; return 1; }
    (cd "$dest" && find . \( -type f -o -type l \) | sed 's|^\./||' | sort) >"$TMP/installed"
    sed 's/^/note: /' "$TMP/installed"
    for f in usr/bin/pgfan usr/lib/systemd/system/pgfan.service usr/share/doc/pgfan/pgfan.conf.example \
        usr/share/man/man1/pgfan.1; do
        grep -qxF "$f" "$TMP/installed" || { echo "not installed: $f"; rc=1; }
    done
    cmp -s "$dest/usr/lib/systemd/system/pgfan.service" "$UNIT" ||
        { echo "the installed unit differs from deploy/systemd/pgfan.service (prefix /usr)"; rc=1; }
    # What the Dockerfile copies out of the build stage's meson install.
    for f in $(sed -n 's|^COPY --from=build /install/\([^ ]*\) .*|\1|p' "$DOCKERFILE"); do
        [[ -e "$dest/$f" ]] || { echo "Dockerfile copies /install/$f, which meson install does not create"; rc=1; }
    done
    # Another prefix: configure only; the unit is generated at setup time.
    meson setup "$TMP/build-local" "$ROOT" --prefix=/usr/local -Dtests=false >"$TMP/setup2.log" 2>&1 ||
        { tail -n 20 "$TMP/setup2.log"; return 1; }
    grep -qx 'ExecStart=/usr/local/bin/pgfan run -c /etc/pgfan/pgfan.conf' "$TMP/build-local/deploy/pgfan.service" ||
        { echo "prefix /usr/local: ExecStart does not follow bindir"; rc=1; }
    meson introspect "$TMP/build-local" --installed | grep -q '"/usr/local/lib/systemd/system/pgfan.service"' ||
        { echo "prefix /usr/local: the unit does not go to /usr/local/lib/systemd/system"; rc=1; }
    return $rc
}

if ((SKIP_INSTALL)); then
    echo "SKIP  install: meson install --destdir of a scratch build (--skip-install)"
else
    check "install: meson install --destdir of a scratch build" install_tree
fi

echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
