#!/usr/bin/env bash
# Checks the packaging in contrib/ (systemd units, Dockerfiles, compose file,
# Kubernetes manifests, the Jellyfin guide) with whatever works without a Docker
# engine, a cluster or systemd as PID 1:
#
#   - systemd-analyze verify and security --offline (units, ExecStart= pointed at
#     the built binaries);
#   - docker compose / docker-compose config (compose file, with a throw-away env
#     file), and that its build contexts, Dockerfiles and targets exist;
#   - kubernetes-validate --strict on the manifests, else kubectl client dry-run
#     if a cluster answers, else a YAML parse; plus label/secret cross-references;
#   - every Dockerfile parsed (BuildKit's parser via python `dockerfile`, when
#     installed), its COPY sources present and let through by its .dockerignore,
#     its `cargo build -p P --bin B` a real package and binary;
#   - every FFCLUSTER_* variable named in the packaging exists in the sources,
#     every flag given to ffcluster / ffcluster-node is in their --help, every
#     contrib/ path named exists;
#   - shellcheck and yamllint, when installed.
#
# Uses target/release binaries (builds them when missing; --build rebuilds).
# Prints PASS / FAIL / SKIP per check and exits 1 if anything failed.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD

build=0
for a in "$@"; do
  case $a in
    --build) build=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "lint-packaging: unknown argument $a" >&2; exit 2 ;;
  esac
done

fails=0
pass() { printf 'PASS  %s\n' "$1"; }
fail() { printf 'FAIL  %s\n' "$1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/      /'; fails=$((fails + 1)); }
skip() { printf 'SKIP  %s (%s)\n' "$1" "$2"; }
have() { command -v "$1" >/dev/null 2>&1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- binaries ---------------------------------------------------------------------
bins=(ffcluster ffcluster-node ffcluster-shim)
missing=0
for b in "${bins[@]}"; do [ -x "target/release/$b" ] || missing=1; done
if [ $build = 1 ] || [ $missing = 1 ]; then
  if out=$(cargo build --release --locked --workspace --bins 2>&1); then
    pass "cargo build --release --locked --workspace --bins"
  else
    fail "cargo build --release --locked --workspace --bins" "$(printf '%s\n' "$out" | tail -20)"
  fi
fi
for b in "${bins[@]}"; do
  if [ -x "target/release/$b" ]; then
    pass "binary target/release/$b ($(date -r "target/release/$b" '+%F %T'))"
  else
    fail "binary target/release/$b is missing"
  fi
done

# --help texts, for the flag and variable checks below.
helps=$tmp/help.txt
{
  for sub in "" serve status explain demo; do
    echo "== ffcluster $sub"
    # shellcheck disable=SC2086
    target/release/ffcluster $sub --help 2>&1
  done
  echo "== ffcluster-node"
  target/release/ffcluster-node --help 2>&1
} >"$helps"

# --- systemd ------------------------------------------------------------------------
units=(contrib/systemd/*.service)
if have systemd-analyze; then
  mkdir -p "$tmp/units"
  for u in "${units[@]}"; do
    sed "s#/usr/local/bin/#$ROOT/target/release/#g" "$u" >"$tmp/units/$(basename "$u")"
  done
  if out=$(systemd-analyze verify "$tmp"/units/*.service 2>&1) && [ -z "$out" ]; then
    pass "systemd-analyze verify ${units[*]}"
  else
    fail "systemd-analyze verify ${units[*]}" "$out"
  fi
  for u in "$tmp"/units/*.service; do
    name=$(basename "$u")
    if out=$(systemd-analyze security --offline=yes --threshold=30 "$u" 2>&1); then
      pass "systemd-analyze security --offline $name: $(printf '%s\n' "$out" | grep -o 'exposure level for [^:]*: [0-9.]* [A-Z]*' | sed 's/.*: //')"
    else
      fail "systemd-analyze security --offline --threshold=30 (3.0) $name" "$(printf '%s\n' "$out" | tail -3)"
    fi
  done
else
  skip "systemd-analyze verify" "systemd-analyze not installed"
fi
# ExecStart= must run one of the workspace's binaries, from /usr/local/bin.
for u in "${units[@]}"; do
  exe=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$u")
  case $exe in
    /usr/local/bin/ffcluster | /usr/local/bin/ffcluster-node) pass "$u runs $exe" ;;
    *) fail "$u: ExecStart= runs '$exe', not /usr/local/bin/ffcluster or ffcluster-node" ;;
  esac
done

# --- compose --------------------------------------------------------------------------
compose_file=contrib/compose/docker-compose.yml
compose=()
if docker compose version >/dev/null 2>&1; then compose=(docker compose)
elif have docker-compose; then compose=(docker-compose)
fi
if [ ${#compose[@]} -gt 0 ]; then
  mkdir -p "$tmp/compose"
  cp "$compose_file" "$tmp/compose/docker-compose.yml"
  sed 's/^FFCLUSTER_TOKEN=.*/FFCLUSTER_TOKEN=lint-packaging-token-0123456789/' \
    contrib/compose/ffcluster.env.example >"$tmp/compose/ffcluster.env"
  if out=$(cd "$tmp/compose" && MEDIA_DIR=/srv/media "${compose[@]}" -f docker-compose.yml config 2>&1 >"$tmp/compose.out"); then
    pass "${compose[*]} config ($compose_file): $(grep -c '^  [a-z0-9-]*:$' "$tmp/compose.out") services and volumes"
  else
    fail "${compose[*]} config ($compose_file)" "$out"
  fi
else
  skip "docker compose config" "neither 'docker compose' nor docker-compose is installed"
fi

# --- Kubernetes --------------------------------------------------------------------
manifests=(contrib/k8s/*.yaml)
cp contrib/k8s/secret.yaml.example "$tmp/secret.yaml"
if have kubernetes-validate; then
  if out=$(kubernetes-validate --strict --quiet "${manifests[@]}" "$tmp/secret.yaml" 2>&1); then
    pass "kubernetes-validate --strict ${manifests[*]} secret.yaml.example"
  else
    fail "kubernetes-validate --strict" "$out"
  fi
elif have kubectl && kubectl version --request-timeout=3s >/dev/null 2>&1; then
  if out=$(kubectl apply --dry-run=client -f contrib/k8s/ 2>&1); then
    pass "kubectl apply --dry-run=client -f contrib/k8s/"
  else
    fail "kubectl apply --dry-run=client -f contrib/k8s/" "$out"
  fi
else
  skip "Kubernetes schema validation" "no kubernetes-validate (pip install kubernetes-validate) and no cluster for kubectl"
fi

# --- the structured checks (YAML, Dockerfiles, names) -----------------------------
if ! python3 -c 'import yaml' 2>/dev/null; then
  fail "python3 with PyYAML is needed for the remaining checks"
else
  if ! python3 - "$ROOT" "$helps" "$tmp/secret.yaml" <<'PY'
import glob, json, os, re, subprocess, sys

root, helps_path, secret_copy = sys.argv[1], sys.argv[2], sys.argv[3]
import yaml
os.chdir(root)
failed = False

def ok(msg): print(f"PASS  {msg}")
def bad(msg, detail=""):
    global failed
    failed = True
    print(f"FAIL  {msg}")
    for line in detail.splitlines():
        print(f"      {line}")
def note(msg, why): print(f"SKIP  {msg} ({why})")

sources = ""
for pattern in ("src/**/*.rs", "shim/src/**/*.rs", "node/src/**/*.rs"):
    for f in glob.glob(pattern, recursive=True):
        sources += open(f, encoding="utf-8").read()
helps = open(helps_path, encoding="utf-8").read()

# Workspace packages and their binaries.
meta = json.loads(subprocess.run(
    ["cargo", "metadata", "--no-deps", "--offline", "--format-version", "1"],
    check=True, capture_output=True, text=True).stdout)
bins = {p["name"]: {t["name"] for t in p["targets"] if "bin" in t["kind"]} for p in meta["packages"]}

# --- YAML parse of every manifest, compose file and the secret example.
docs = {}
for f in sorted(glob.glob("contrib/k8s/*.yaml")) + ["contrib/compose/docker-compose.yml", secret_copy]:
    try:
        docs[f] = [d for d in yaml.safe_load_all(open(f)) if d is not None]
        shown = "contrib/k8s/secret.yaml.example" if f == secret_copy else f
        ok(f"YAML parses: {shown} ({len(docs[f])} document(s))")
    except Exception as e:
        bad(f"YAML parse {f}", str(e))

# --- Kubernetes cross-references.
k8s = [d for f, ds in docs.items() if "contrib/k8s" in f or f == secret_copy for d in ds]
by_kind = {}
for d in k8s:
    by_kind.setdefault(d.get("kind"), []).append(d)
secrets = {s["metadata"]["name"]: set((s.get("stringData") or {}) | (s.get("data") or {})) for s in by_kind.get("Secret", [])}
deployments = by_kind.get("Deployment", [])
for dep in deployments:
    name = dep["metadata"]["name"]
    spec = dep["spec"]
    sel = spec["selector"]["matchLabels"]
    labels = spec["template"]["metadata"]["labels"]
    if all(labels.get(k) == v for k, v in sel.items()):
        ok(f"k8s {name}: selector matches the pod labels")
    else:
        bad(f"k8s {name}: selector {sel} does not match pod labels {labels}")
    for c in spec["template"]["spec"]["containers"]:
        for e in c.get("env", []):
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                if ref["key"] in secrets.get(ref["name"], set()):
                    ok(f"k8s {name}: {e['name']} from secret {ref['name']}/{ref['key']} (secret.yaml.example)")
                else:
                    bad(f"k8s {name}: {e['name']} refers to secret {ref['name']}/{ref['key']}, not in secret.yaml.example")
        if not c.get("resources", {}).get("requests") or not c.get("resources", {}).get("limits"):
            bad(f"k8s {name}/{c['name']}: resource requests and limits are required")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            p = (c.get(probe) or {}).get("httpGet")
            if p:
                if f'"{p["path"]}"' in sources:
                    ok(f"k8s {name}: {probe} GET {p['path']} is served by the controller")
                else:
                    bad(f"k8s {name}: {probe} path {p['path']} not found in the sources")
for svc in by_kind.get("Service", []):
    sel = svc["spec"]["selector"]
    hits = [d["metadata"]["name"] for d in deployments
            if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
    port_names = {p.get("name") for d in deployments if d["metadata"]["name"] in hits
                  for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    tp = [p["targetPort"] for p in svc["spec"]["ports"]]
    if len(hits) == 1 and all(isinstance(t, int) or t in port_names for t in tp):
        ok(f"k8s service {svc['metadata']['name']} selects {hits[0]}, target ports {tp} exist")
    else:
        bad(f"k8s service {svc['metadata']['name']}: selects {hits}, target ports {tp}, container ports {port_names}")
for dep in deployments:
    for c in dep["spec"]["template"]["spec"]["containers"]:
        for e in c.get("env", []):
            if e["name"] == "FFCLUSTER_CONTROLLER":
                host = re.match(r"https?://([^:/]+)", e["value"]).group(1)
                if host in {s["metadata"]["name"] for s in by_kind.get("Service", [])}:
                    ok(f"k8s {dep['metadata']['name']}: FFCLUSTER_CONTROLLER points at service {host}")
                else:
                    bad(f"k8s {dep['metadata']['name']}: FFCLUSTER_CONTROLLER host {host} is no Service here")

# --- Dockerfiles.
try:
    import dockerfile as dfparse
except ImportError:
    dfparse = None
    note("Dockerfile parse with BuildKit's parser", "pip install dockerfile")

def parse_dockerfile(path):
    if dfparse:
        return [(c.cmd.upper(), list(c.flags), list(c.value)) for c in dfparse.parse_file(path)]
    # Minimal fallback: join continuation lines, split instruction and words.
    out, buf = [], ""
    for line in open(path):
        s = line.rstrip("\n")
        if not buf and (not s.strip() or s.lstrip().startswith("#")):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        words = buf.split()
        flags = [w for w in words[1:] if w.startswith("--")]
        vals = [w for w in words[1:] if not w.startswith("--")]
        out.append((words[0].upper(), flags, vals))
        buf = ""
    return out

def ignore_allows(ignore_lines, path):
    """Docker's rule for the simple files here: last matching pattern wins."""
    allowed = True
    for pat in ignore_lines:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        if p == "*" or path == p or path.startswith(p.rstrip("/") + "/"):
            allowed = neg
    return allowed

for df in sorted(glob.glob("contrib/docker/Dockerfile.*")):
    if df.endswith(".dockerignore"):
        continue
    try:
        cmds = parse_dockerfile(df)
    except Exception as e:
        bad(f"parse {df}", str(e))
        continue
    ok(f"{df} parses ({len(cmds)} instructions{', BuildKit parser' if dfparse else ''})")
    ign_path = df + ".dockerignore"
    ignore = []
    if os.path.exists(ign_path):
        ignore = [l.strip() for l in open(ign_path) if l.strip() and not l.startswith("#")]
    else:
        bad(f"{df}: no {ign_path} (target/ would be sent as build context)")
    stages, n_from = set(), 0
    for cmd, flags, vals in cmds:
        if cmd == "FROM":
            n_from += 1
            low = [v.lower() for v in vals]
            if "as" in low:
                stages.add(vals[low.index("as") + 1])
        elif cmd == "COPY":
            frm = [f for f in flags if f.startswith("--from=")]
            if frm:
                if frm[0].split("=", 1)[1] not in stages:
                    bad(f"{df}: COPY {frm[0]} names no earlier stage ({sorted(stages)})")
                continue
            for src in vals[:-1]:
                src = src.rstrip("/") or "."
                if not os.path.exists(src):
                    bad(f"{df}: COPY source {src} does not exist in the repository")
                elif not ignore_allows(ignore, src):
                    bad(f"{df}: COPY source {src} is excluded by {ign_path}")
                else:
                    ok(f"{df}: COPY {src} exists and is in the build context")
        elif cmd == "RUN":
            text = " ".join(vals)
            for m in re.finditer(r"cargo build [^&]*?-p (\S+) --bin (\S+)", text):
                pkg, b = m.groups()
                if b in bins.get(pkg, set()):
                    ok(f"{df}: cargo builds package {pkg}, binary {b}")
                else:
                    bad(f"{df}: cargo -p {pkg} --bin {b}: no such package/binary ({bins})")
            for m in re.finditer(r"target/release/(\S+)", text):
                if m.group(1) not in {b for bs in bins.values() for b in bs}:
                    bad(f"{df}: target/release/{m.group(1)} is not a workspace binary")
    for cmd, flags, vals in cmds:
        if cmd in ("ENTRYPOINT", "CMD", "HEALTHCHECK"):
            for v in vals:
                m = re.search(r"/usr/local/bin/([\w-]+)", v)
                if m and not any(f"/usr/local/bin/{m.group(1)}" in " ".join(vv) for c2, _, vv in cmds if c2 in ("COPY", "RUN")):
                    bad(f"{df}: {cmd} runs /usr/local/bin/{m.group(1)}, which no COPY/RUN installs")

# --- compose: build contexts, Dockerfiles and targets; env files.
compose_path = "contrib/compose/docker-compose.yml"
comp = docs.get(compose_path, [{}])[0]
cdir = os.path.dirname(compose_path)
for name, svc in (comp.get("services") or {}).items():
    b = svc.get("build")
    if b:
        ctx = os.path.normpath(os.path.join(cdir, b.get("context", ".")))
        dfile = os.path.join(ctx, b.get("dockerfile", "Dockerfile"))
        problems = []
        if os.path.abspath(ctx) != root:
            problems.append(f"context {ctx} is not the repository root")
        if not os.path.exists(dfile):
            problems.append(f"{dfile} does not exist")
        elif b.get("target"):
            stages = [m.group(1) for m in re.finditer(r"(?im)^FROM\s+\S+\s+AS\s+(\S+)", open(dfile).read())]
            if b["target"] not in stages:
                problems.append(f"target {b['target']} is not a stage of {dfile} ({stages})")
        (bad(f"compose {name}: " + "; ".join(problems)) if problems
         else ok(f"compose {name}: builds {os.path.relpath(dfile)}" + (f" --target {b['target']}" if b.get("target") else "")))
    ef = svc.get("env_file")
    if ef:
        for e in ([ef] if isinstance(ef, str) else ef):
            e = e if isinstance(e, str) else e["path"]
            if not os.path.exists(os.path.join(cdir, e + ".example")):
                bad(f"compose {name}: env_file {e} has no {e}.example next to the compose file")

# --- names: FFCLUSTER_* variables, flags, contrib/ paths.
files = (glob.glob("contrib/systemd/*") + glob.glob("contrib/docker/*") + glob.glob("contrib/compose/*")
         + glob.glob("contrib/compose/.gitignore") + glob.glob("contrib/k8s/*") + ["contrib/docs/JELLYFIN.md"])
files = sorted(f for f in set(files) if os.path.isfile(f))
text = {f: open(f, encoding="utf-8").read() for f in files}

envs = sorted({v for t in text.values() for v in re.findall(r"\bFFCLUSTER_[A-Z0-9_]*[A-Z0-9]\b", t)})
unknown = [v for v in envs if f'"{v}"' not in sources and f"env: {v}" not in helps]
if unknown:
    bad("FFCLUSTER_* variables named in the packaging but not in the sources", "\n".join(
        f"{v}: " + ", ".join(f for f, t in text.items() if v in t) for v in unknown))
else:
    ok(f"{len(envs)} FFCLUSTER_* variables named in the packaging exist in the sources: {' '.join(envs)}")

contract = "../shared/jellyfin/CONTRACT.md"
# Not Jellyfin's own: JELLYFIN_IMAGE is the compose file's variable; JELLYFIN_FFMPEG_OPT
# is the Debian package's /etc/default/jellyfin (jellyfin-packaging debian/conf/jellyfin).
not_jellyfins = {"JELLYFIN_IMAGE", "JELLYFIN_FFMPEG_OPT"}
jf = sorted({v for t in text.values() for v in re.findall(r"\bJELLYFIN_[A-Z_]*[A-Z]\b", t)} - not_jellyfins)
if os.path.exists(contract):
    c = open(contract).read()
    miss = [v for v in jf if v not in c]
    (bad(f"Jellyfin variables not in {contract}: {miss}") if miss
     else ok(f"Jellyfin variables named ({' '.join(jf)}) appear in {contract}"))
else:
    note("Jellyfin variable names", f"{contract} not found")

# Help text per command, then each flag given to it.
sections = {}
for block in re.split(r"(?m)^== ", helps)[1:]:
    head, _, body = block.partition("\n")
    sections[head.strip()] = set(re.findall(r"(--[a-z][a-z0-9-]*)", body))
def command_of(words):
    """('ffcluster serve', rest) / ('ffcluster-node', rest) when the words run one
    of them in command position (after VAR=value assignments, sudo, exec or
    ExecStart=), or are a Dockerfile CMD / Kubernetes args list starting with a
    subcommand of ffcluster's image; else None."""
    if words and words[0] in ("CMD", "args:", "command:") and len(words) > 1 and words[1] in ("serve", "status"):
        return f"ffcluster {words[1]}", words[2:]
    # An absolute or target/release path to a binary is a command wherever it is.
    for k, w in enumerate(words):
        if re.fullmatch(r"(\S*=)?(/\S*|target/release)/ffcluster(-node)?", w):
            base = w.rsplit("/", 1)[-1]
            if base == "ffcluster-node":
                return "ffcluster-node", words[k + 1:]
            if k + 1 < len(words) and words[k + 1] in ("serve", "status", "explain", "demo"):
                return f"ffcluster {words[k + 1]}", words[k + 2:]
    i = 0
    while i < len(words) and (re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[i]) or words[i] in ("sudo", "exec", "env", "-", "$")):
        i += 1
    if i >= len(words):
        return None
    w = words[i].removeprefix("ExecStart=")
    base = w.rsplit("/", 1)[-1]
    if "/" in w and not (w.startswith("/") or w.startswith("target/release/")):
        return None
    if base == "ffcluster-node":
        return "ffcluster-node", words[i + 1:]
    if base == "ffcluster" and i + 1 < len(words) and words[i + 1] in ("serve", "status", "explain", "demo"):
        return f"ffcluster {words[i + 1]}", words[i + 2:]
    return None

checked, flag_problems = 0, []
for f, t in text.items():
    for n, line in enumerate(t.splitlines(), 1):
        words = re.sub(r'[\[\]",]', " ", line.replace("`", " ").lstrip("# ")).split()
        got = command_of(words)
        if not got:
            continue
        cmd, rest = got
        for w in rest:
            if w in ("|", "&&", ";", "#"):
                break
            if re.fullmatch(r"--[a-z][a-z0-9-]*(=.*)?", w):
                flag = w.split("=", 1)[0]
                checked += 1
                if flag not in sections.get(cmd, set()) and flag not in ("--help", "--version"):
                    flag_problems.append(f"{f}:{n}: {cmd} {flag}")
if flag_problems:
    bad("flags given to ffcluster / ffcluster-node that their --help does not list", "\n".join(flag_problems))
else:
    ok(f"{checked} flags given to ffcluster / ffcluster-node in the packaging are in their --help")

paths = sorted({p.rstrip(".,:;)`'") for t in text.values() for p in re.findall(r"\bcontrib/[A-Za-z0-9_./-]+", t)})
paths = [p for p in paths if not p.endswith("/")]
missing = [p for p in paths if not os.path.exists(p)]
(bad("contrib/ paths named in the packaging that do not exist", "\n".join(missing)) if missing
 else ok(f"{len(paths)} contrib/ paths named in the packaging exist"))

tr = sorted({m for t in text.values() for m in re.findall(r"target/release/([A-Za-z0-9_-]+)", t)})
allbins = {b for bs in bins.values() for b in bs}
(bad(f"target/release names that are no workspace binary: {set(tr) - allbins}") if set(tr) - allbins
 else ok(f"binaries named under target/release are workspace binaries: {' '.join(tr)}"))

sys.exit(1 if failed else 0)
PY
  then
    fails=$((fails + 1))
  fi
fi

# --- shell and YAML linters ---------------------------------------------------------
if have shellcheck; then
  if out=$(shellcheck contrib/scripts/lint-packaging.sh contrib/docker/install-shim.sh 2>&1); then
    pass "shellcheck contrib/scripts/lint-packaging.sh contrib/docker/install-shim.sh"
  else
    fail "shellcheck" "$out"
  fi
else
  skip "shellcheck" "not installed"
fi
if have yamllint; then
  conf='{extends: relaxed, rules: {line-length: disable}}'
  if out=$(yamllint -f parsable -d "$conf" contrib/compose/docker-compose.yml contrib/k8s/*.yaml 2>&1) && ! grep -q '\[error\]' <<<"$out"; then
    pass "yamllint (relaxed) compose and k8s files"
  else
    fail "yamllint" "$out"
  fi
else
  skip "yamllint" "not installed"
fi

echo
if [ $fails -eq 0 ]; then
  echo "lint-packaging: all checks passed"
else
  echo "lint-packaging: $fails check group(s) failed"
  exit 1
fi
