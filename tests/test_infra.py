"""prefect.yaml and infra/, checked without Docker or a cluster.

Nothing in infra/ can be built or started here (no Docker engine, no
Kubernetes), so these tests read the files: each file is validated against
the schema of the tool that will read it (Prefect's own models, the Compose
Specification, the Kubernetes OpenAPI schemas), and the names, ports,
images, commands and environment variables are compared across files and
with the package, its flows and the CLIs of the installed Prefect and Dask.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import fnmatch
import importlib.metadata as md
import importlib.util
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import pytest

from pamingest.demo import stop_processes
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
WORKER_SCRIPT = INFRA / "prefect-worker.sh"
PAMINGEST_COMPONENTS = ("prefect-server", "prefect-worker", "dask-scheduler", "dask-worker")


# --------------------------------------------------------------------------- helpers


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


_INTERP = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


def interpolate(value, env: dict[str, str] | None = None):
    """Compose's variable interpolation (``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``$$``)."""
    env = env or {}
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            if m.group(0) == "$$":
                return "$"
            name, op, default = m.group("name", "op", "default")
            if op == ":-":
                return env.get(name) or default
            if op == "-":
                return env.get(name, default)
            return env.get(name, "")
        return _INTERP.sub(sub, value)
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    return value


def options_of(argv: list[str]) -> dict[str, str | None]:
    """``--flag value`` / ``--flag=value`` / ``--flag`` of a command line."""
    out: dict[str, str | None] = {}
    for i, tok in enumerate(argv):
        if tok.startswith("--"):
            if "=" in tok:
                k, v = tok.split("=", 1)
                out[k] = v
            else:
                nxt = argv[i + 1] if i + 1 < len(argv) else None
                out[tok] = nxt if nxt is not None and not nxt.startswith("-") else None
    return out


def port_of(address: str) -> int:
    """The port of ``:8787``, ``0.0.0.0:8787`` or ``tcp://host:8786``."""
    return int(address.rsplit(":", 1)[1])


def http_port_and_path(url: str) -> tuple[int, str]:
    u = urlparse(url)
    return u.port, u.path


def healthcheck_url(service: dict) -> str:
    test = service["healthcheck"]["test"]
    urls = re.findall(r"https?://[^'\"\s)]+", " ".join(test))
    assert len(urls) == 1, test
    return urls[0]


@cache
def compose_raw() -> dict:
    return load_yaml(INFRA / "compose.yaml")


@cache
def compose() -> dict:
    """compose.yaml as Compose sees it with no variables set (the defaults)."""
    return interpolate(compose_raw())


def services() -> dict[str, dict]:
    return compose()["services"]


def compose_env(name: str) -> dict[str, str | None]:
    env = services()[name].get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return env


def published(service: dict) -> dict[int, int]:
    """container port -> host port of a service's short-syntax ports."""
    out = {}
    for p in service.get("ports", []):
        host, container = str(p).rsplit(":", 1)
        out[int(container)] = int(host.rsplit(":", 1)[-1])
    return out


@cache
def kustomization() -> dict:
    return load_yaml(K8S / "kustomization.yaml")


@cache
def k8s_objects() -> tuple[dict, ...]:
    """Every object of the kustomization: its resources plus the generated Secrets."""
    objs = []
    for res in kustomization()["resources"]:
        objs += [d for d in yaml.safe_load_all((K8S / res).read_text()) if d]
    for gen in kustomization().get("secretGenerator", []):
        data = dict(lit.split("=", 1) for lit in gen.get("literals", []))
        objs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": gen["name"]}, "stringData": data})
    return tuple(objs)


def k8s(kind: str, name: str) -> dict:
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def workloads() -> list[dict]:
    return [o for o in k8s_objects() if o["kind"] in ("Deployment", "StatefulSet")]


def container(workload: str) -> dict:
    obj = next(o for o in workloads() if o["metadata"]["name"] == workload)
    (c,) = obj["spec"]["template"]["spec"]["containers"]
    return c


def container_port(c: dict, port) -> int:
    """A probe's or Service's port (name or number) resolved in a container's ports."""
    if isinstance(port, int):
        assert port in [p["containerPort"] for p in c.get("ports", [])], (c["name"], port)
        return port
    named = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
    assert port in named, f"{c['name']} has no port named {port!r}: {named}"
    return named[port]


def service_port(svc: str, port: int) -> dict:
    ports = [p for p in k8s("Service", svc)["spec"]["ports"] if p["port"] == port]
    assert len(ports) == 1, f"Service {svc} has no port {port}"
    return ports[0]


def configmap_env(c: dict) -> dict[str, str]:
    env = {}
    for ref in c.get("envFrom", []):
        if "configMapRef" in ref:
            env.update(k8s("ConfigMap", ref["configMapRef"]["name"])["data"])
    return env


def k8s_env_names(c: dict) -> set[str]:
    """Variables a container gets from env and from the ConfigMaps/Secrets in the manifests (envFrom)."""
    names = {e["name"] for e in c.get("env", [])} | set(configmap_env(c))
    for ref in c.get("envFrom", []):
        if "secretRef" in ref:
            secret = [o for o in k8s_objects() if o["kind"] == "Secret" and o["metadata"]["name"] == ref["secretRef"]["name"]]
            for s in secret:
                names |= set(s.get("stringData", {})) | set(s.get("data", {}))
    return names


@cache
def dockerfile():
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=str(INFRA / "Dockerfile"))
    return parser


def instructions(name: str) -> list[str]:
    return [i["value"] for i in dockerfile().structure if i["instruction"] == name]


@cache
def prefect_yaml() -> dict:
    return load_yaml(ROOT / "prefect.yaml")


def deployments() -> dict[str, dict]:
    return {d["name"]: d for d in prefect_yaml()["deployments"]}


def image_of_built_services() -> str:
    images = {s["image"] for s in services().values() if "build" in s}
    assert len(images) == 1, f"services built from infra/Dockerfile tag different images: {images}"
    return images.pop()


def worker_script_commands() -> list[list[str]]:
    """The command lines of infra/prefect-worker.sh that run `prefect` (up to a redirection or `;`)."""
    out = []
    for line in WORKER_SCRIPT.read_text().splitlines():
        argv = shlex.split(line, comments=True)
        while argv and argv[0] in ("if", "!", "exec", "until"):
            argv.pop(0)
        if not argv or argv[0] != "prefect":
            continue
        end = next((i for i, a in enumerate(argv) if re.match(r"^\d*[<>]", a) or a in (";", "||", "&&", "then")), len(argv))
        out.append([a.rstrip(";") for a in argv[:end]])
    return out


def code_strings(paths) -> set[str]:
    """String constants of Python files, without docstrings and bare string statements."""
    out = set()
    for path in paths:
        tree = ast.parse(Path(path).read_text())
        skip = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
        out |= {n.value for n in ast.walk(tree)
                if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip}
    return out


def prefect_yaml_env_placeholders() -> set[str]:
    """Environment variables that `prefect deploy` fills into prefect.yaml (``{{ $VAR }}``)."""
    from prefect.utilities.templating import PlaceholderType, find_placeholders

    found: set[str] = set()

    def walk(v):
        if isinstance(v, str):
            found.update(p.name.lstrip("$") for p in find_placeholders(v) if p.type is PlaceholderType.ENV_VAR)
        elif isinstance(v, dict):
            [walk(x) for x in v.values()]
        elif isinstance(v, list):
            [walk(x) for x in v]

    walk(prefect_yaml())
    return found


def run_path_code() -> list[Path]:
    """The Python that runs in the worker's flow runs and on the Dask workers (not flows/serve.py)."""
    return sorted((ROOT / "pamingest").rglob("*.py")) + [ROOT / "flows" / n for n in ("ingest.py", "pseudolabel.py",
                                                                                      "export.py", "annotate.py",
                                                                                      "hmd.py", "settings.py")]


FLOW_MODULES = ("serve", "ingest", "pseudolabel", "export", "annotate", "hmd", "settings")


@cache
def flow_settings():
    """flows/settings.py: the PAMINGEST_* variables the flow runs read."""
    spec = importlib.util.spec_from_file_location("pamingest_flow_settings", ROOT / "flows" / "settings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ingest_deployments() -> dict[str, dict]:
    return {n: d for n, d in deployments().items() if d["entrypoint"] == "flows/ingest.py:ingest"}


@pytest.fixture()
def serve_module(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "flows"))
    monkeypatch.chdir(ROOT)
    for mod in FLOW_MODULES:
        sys.modules.pop(mod, None)
    import serve

    yield serve
    for mod in FLOW_MODULES:
        sys.modules.pop(mod, None)


@pytest.fixture()
def ingest_flow(monkeypatch):
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(ROOT)
    (entrypoint,) = {d["entrypoint"] for d in ingest_deployments().values()}
    return load_flow_from_entrypoint(entrypoint)


# --------------------------------------------------------------------------- prefect.yaml


def test_prefect_yaml_is_valid_for_prefect_deploy():
    from prefect.cli.deploy._models import DeploymentConfig, PrefectYamlModel

    raw = prefect_yaml()
    model = PrefectYamlModel.model_validate(raw)  # what `prefect deploy` does; raises on a bad field
    assert [d.name for d in model.deployments] == [d["name"] for d in raw["deployments"]]
    # The models ignore unknown keys: a misspelt key would be silently dropped, so compare the keys too.
    top = set(PrefectYamlModel.model_fields) | {f.alias for f in PrefectYamlModel.model_fields.values() if f.alias}
    assert set(raw) <= top, set(raw) - top
    for d in raw["deployments"]:
        assert set(d) <= set(DeploymentConfig.model_fields), (d["name"], set(d) - set(DeploymentConfig.model_fields))
        assert set(d["work_pool"]) <= {"name", "work_queue_name", "job_variables"}


def test_deployments_name_the_ingest_flow_and_its_parameters(ingest_flow):
    from pamingest import orchestration

    assert ingest_flow.name == "ingest"
    names = {f"{ingest_flow.name}/{d['name']}" for d in ingest_deployments().values()}
    assert {"ingest/orcasound", "ingest/files"} <= names
    signature = inspect.signature(ingest_flow.fn).parameters
    for d in ingest_deployments().values():
        params = d["parameters"]
        assert set(params) <= set(signature), (d["name"], set(params) - set(signature))
        ingest_flow.validate_parameters(params)  # types of the flow's signature
        assert params["source"] in orchestration.source_kinds()
        # The options build the source, piece by piece, as the flow will.
        for piece in orchestration.work_partitions(params["source"], params.get("options") or {}):
            orchestration.build_source(params["source"], piece)


def test_orcasound_is_scheduled_as_flows_serve_schedules_it(serve_module):
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule

    (schedule,) = deployments()["orcasound"]["schedules"]
    interval = _schedule_config_to_deployment_schedule(schedule)["schedule"].interval
    assert interval == dt.timedelta(seconds=serve_module.ORCASOUND_EVERY_SECONDS) == dt.timedelta(seconds=600)
    assert not deployments()["files"].get("schedules")


def test_prefect_yaml_deploys_what_flows_serve_serves(serve_module, monkeypatch):
    """Two ways to deploy (a worker pool, or `python flows/serve.py`): the same deployments."""
    from prefect.utilities.templating import apply_values

    monkeypatch.setenv("PAMINGEST_FILES_ROOT", "s3://recordings/deployment-1")
    monkeypatch.delenv("PAMINGEST_ORCASOUND_NODES", raising=False)
    served = {d.name: d for d in serve_module.deployments()}
    assert set(served) == set(deployments())
    for name, d in deployments().items():
        params = apply_values(d["parameters"], dict(os.environ))  # as `prefect deploy` fills {{ $VAR }}
        assert params == served[name].parameters, name
        assert d["entrypoint"] == served[name].entrypoint
        assert d.get("tags") == served[name].tags
        assert d.get("description") == served[name].description
        assert bool(d.get("schedules")) == bool(served[name].schedules)


def test_deployments_run_in_the_image_on_the_pool_the_worker_polls():
    pulls = prefect_yaml()["pull"]
    (step,) = pulls
    assert instructions("WORKDIR")[-1] == step["prefect.deployments.steps.set_working_directory"]["directory"]
    commands = worker_script_commands()
    create = next(c for c in commands if c[1:3] == ["work-pool", "create"])
    start = next(c for c in commands if c[1:3] == ["worker", "start"])
    deploy = next(c for c in commands if "deploy" in c)
    pool = create[3]
    assert options_of(create)["--type"] == options_of(start)["--type"] == "process"
    assert options_of(start)["--pool"] == pool
    assert {d["work_pool"]["name"] for d in deployments().values()} == {pool}
    assert "--all" in deploy and options_of(deploy)["--prefect-file"] == "prefect.yaml"
    # `prefect deploy` runs in the WORKDIR, where the Dockerfile put prefect.yaml and the flows.
    workdir = Path(instructions("WORKDIR")[-1])
    copied = {}
    for value in instructions("COPY"):
        *sources, dest = shlex.split(value)
        for src in sources:
            target = workdir / dest
            copied[src.rstrip("/")] = target / Path(src).name if dest.endswith("/") or dest == "." else target
    assert copied["prefect.yaml"] == workdir / "prefect.yaml"
    assert copied["flows"] == workdir / (deployments()["orcasound"]["entrypoint"].split("/")[0])


# --------------------------------------------------------------------------- image


def _extras_installed_by_dockerfile() -> set[str]:
    extras = set()
    for run in instructions("RUN"):
        for spec in re.findall(r"pip install [^&]*?\"?\.\[([^\]]+)\]", run):
            extras |= {e.strip() for e in spec.split(",")}
    return extras


def _distributions_installed(extras: set[str]) -> set[str]:
    """Distributions that `pip install .[extras]` brings, from the installed metadata."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = PYPROJECT["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        todo += [Requirement(r) for r in project["optional-dependencies"][extra]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name == "pamingest":
            for extra in req.extras:
                todo += [Requirement(r) for r in project["optional-dependencies"][extra]]
            continue
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        seen.add(name)
        try:
            requires = md.requires(req.name) or []
        except md.PackageNotFoundError:  # in the image, not in this venv (bokeh): its own requirements are not followed
            requires = []
        for r in requires:
            sub = Requirement(r)
            envs = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(e) for e in envs):
                todo.append(sub)
    return {s for s in seen if "[" not in s}


def test_dockerfile_installs_what_the_flows_and_commands_need():
    from packaging.utils import canonicalize_name

    extras = _extras_installed_by_dockerfile()
    assert extras, "no `pip install .[...]` in infra/Dockerfile"
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"]), extras
    installed = _distributions_installed(extras)
    # Every third-party module the flows import is in the image...
    dists = md.packages_distributions()
    for flow in (ROOT / "flows").glob("*.py"):
        for node in ast.walk(ast.parse(flow.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for mod in mods:
                top = mod.split(".")[0]
                if top in sys.stdlib_module_names or top == "pamingest" or top in FLOW_MODULES:
                    continue
                assert {canonicalize_name(d) for d in dists.get(top, [])} & installed, f"{flow.name} imports {top}"
    # ... and so are the programs the services run, with the Dask dashboard (bokeh) and Postgres driver.
    scripts = {e.name: canonicalize_name(e.dist.name) for e in md.entry_points(group="console_scripts")}
    for program in ("prefect", "dask", "pamingest"):
        assert scripts[program] in installed | {"pamingest"}, program
    assert {"bokeh", "asyncpg"} <= installed


def test_image_reaches_the_storage_of_every_deployment_source():
    """A source on gs:// needs gcsfs in the image, one on s3:// s3fs (found in the source's module)."""
    from fsspec.registry import known_implementations
    from packaging.utils import canonicalize_name

    from pamingest.registry import registry

    installed = _distributions_installed(_extras_installed_by_dockerfile())
    dists = md.packages_distributions()
    for name, d in ingest_deployments().items():
        module = Path(inspect.getsourcefile(registry("sources").get(d["parameters"]["source"])))
        protocols = set(re.findall(r"[\"'](\w+)://", module.read_text())) - {"file", "memory", "http", "https"}
        for proto in protocols:
            impl = known_implementations.get(proto)
            assert impl, (name, proto)
            top = impl["class"].split(".")[0]
            needed = {canonicalize_name(x) for x in dists.get(top, [top])}
            assert needed & installed, f"ingest/{name} reads {proto}:// through {top}, which the image does not install"


def test_dockerfile_base_version_and_copies():
    from packaging.specifiers import SpecifierSet

    (base,) = instructions("FROM")
    m = re.fullmatch(r"python:(\d+\.\d+)-slim", base.strip())
    assert m, base
    assert m.group(1) in SpecifierSet(PYPROJECT["project"]["requires-python"])
    labels = dockerfile().labels
    assert labels["org.opencontainers.image.version"] == VERSION
    assert image_of_built_services().rsplit(":", 1)[1] == VERSION
    ignored = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
    for value in instructions("COPY"):
        *sources, _ = shlex.split(value)
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: not in the build context"
            assert not any(fnmatch.fnmatch(src.rstrip("/"), pat) for pat in ignored), f"{src} is in .dockerignore"
    assert not instructions("ENTRYPOINT"), "the services give their own commands"


def test_one_image_for_all_pamingest_services():
    image = image_of_built_services()
    assert image == f"ghcr.io/pamingest/pamingest:{VERSION}"
    for name in PAMINGEST_COMPONENTS:
        svc = services()[name]
        assert svc["image"] == image, name
        build = svc["build"]
        assert (INFRA / build["context"]).resolve() == ROOT
        assert (INFRA / build["context"] / build["dockerfile"]).resolve() == INFRA / "Dockerfile"
        assert container(name)["image"] == image, f"k8s {name}"
    for c in (container(w["metadata"]["name"]) for w in workloads()):
        repo = c["image"].rsplit(":", 1)[0]
        if repo == image.rsplit(":", 1)[0]:
            assert c["image"] == image


def test_image_user_is_the_k8s_user():
    (uid,) = [m.group(1) for r in instructions("RUN") if (m := re.search(r"useradd .*--uid (\d+)", r))]
    for name in PAMINGEST_COMPONENTS:
        wl = next(o for o in workloads() if o["metadata"]["name"] == name)
        assert wl["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


# --------------------------------------------------------------------------- compose


def test_compose_follows_the_compose_specification():
    import jsonschema
    from check_jsonschema.builtin_schemas import get_builtin_schema

    schema = get_builtin_schema("vendor.compose-spec")
    validator = jsonschema.Draft202012Validator(schema)
    for doc in (compose_raw(), compose()):
        errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, errors
    assert set(services()) == {"postgres", *PAMINGEST_COMPONENTS, "minio", "minio-init"}


def test_compose_dask_addresses_and_ports():
    sched, worker, pw = services()["dask-scheduler"], services()["dask-worker"], services()["prefect-worker"]
    assert sched["command"][:2] == ["dask", "scheduler"]
    opts = options_of(sched["command"])
    port, dashboard = int(opts["--port"]), port_of(opts["--dashboard-address"])
    assert (port, dashboard) == (8786, 8787)
    address = f"tcp://dask-scheduler:{port}"
    assert compose_env("prefect-worker")["PAMINGEST_SCHEDULER"] == address
    assert worker["command"][:3] == ["dask", "worker", address]
    assert published(sched) == {port: port, dashboard: dashboard}
    assert http_port_and_path(healthcheck_url(sched)) == (dashboard, "/health")
    # The dashboard link a flow run logs must be the one a browser on the host opens.
    assert compose_env("prefect-worker")["DASK_DISTRIBUTED__DASHBOARD__LINK"] == f"http://localhost:{published(sched)[dashboard]}/status"
    worker_dashboard = port_of(options_of(worker["command"])["--dashboard-address"])
    assert http_port_and_path(healthcheck_url(worker)) == (worker_dashboard, "/health")
    # Scalable: no fixed name, no host port, replicas from DASK_WORKERS.
    assert "container_name" not in worker and not worker.get("ports")
    assert int(interpolate(compose_raw()["services"]["dask-worker"]["deploy"]["replicas"], {"DASK_WORKERS": "5"})) == 5
    assert pw["depends_on"]["dask-scheduler"]["condition"] == "service_healthy"


def test_compose_prefect_addresses_and_ports():
    from prefect.settings import Settings

    server = services()["prefect-server"]
    assert server["command"][:3] == ["prefect", "server", "start"]
    opts = options_of(server["command"])
    port = int(opts["--port"])
    assert port == 4200 and opts["--host"] == "0.0.0.0"
    assert published(server) == {port: port}
    assert compose_env("prefect-worker")["PREFECT_API_URL"] == f"http://prefect-server:{port}/api"
    assert http_port_and_path(healthcheck_url(server)) == (port, "/api/health")
    assert compose_env("prefect-server")["PREFECT_UI_API_URL"] == f"http://localhost:{published(server)[port]}/api"
    # `--with-healthcheck` serves the worker's health on Prefect's worker webserver port.
    (start,) = [c for c in worker_script_commands() if c[1:3] == ["worker", "start"]]
    assert "--with-healthcheck" in start
    assert http_port_and_path(healthcheck_url(services()["prefect-worker"])) == (Settings().worker.webserver.port, "/health")


def test_compose_database_url_matches_postgres():
    from sqlalchemy.engine import make_url

    url = make_url(compose_env("prefect-server")["PREFECT_API_DATABASE_CONNECTION_URL"])
    pg = compose_env("postgres")
    assert url.drivername == "postgresql+asyncpg"
    assert importlib.util.find_spec("asyncpg") is not None
    assert (url.host, url.port) == ("postgres", 5432)
    assert (url.username, url.password, url.database) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])
    # The password follows POSTGRES_PASSWORD in both places.
    env = {"POSTGRES_PASSWORD": "s3cret"}
    raw = compose_raw()["services"]
    assert make_url(interpolate(raw["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"], env)).password \
        == interpolate(raw["postgres"]["environment"]["POSTGRES_PASSWORD"], env) == "s3cret"


def test_compose_dependencies_volumes_and_health():
    names = set(services())
    declared = set(compose()["volumes"])
    for name, svc in services().items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in names, (name, dep)
            if cond.get("condition") == "service_healthy":
                assert "healthcheck" in services()[dep], (name, dep)
            assert set(services()[dep].get("profiles", [])) <= set(svc.get("profiles", [])), \
                f"{name} depends on {dep}, which only runs in a profile"
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if not src.startswith((".", "/")):
                assert src in declared, (name, src)
        if svc.get("restart") != "no":
            assert "healthcheck" in svc, f"{name} runs on without a healthcheck"


def test_compose_store_is_shared_by_the_flow_runs_and_the_dask_workers():
    """A local store must be the same folder on the worker (which commits) and on every Dask worker (which writes)."""
    mounts = {name: {v.split(":")[1]: v.split(":")[0] for v in services()[name]["volumes"]}
              for name in ("prefect-worker", "dask-worker")}
    assert mounts["prefect-worker"] == mounts["dask-worker"]
    for name in ("prefect-worker", "dask-worker"):
        store = compose_env(name)["PAMINGEST_STORE"]
        target = next((t for t in mounts[name] if store == t or store.startswith(t + "/")), None)
        assert target and not mounts[name][target].startswith((".", "/")), f"{name}: store {store} is not on a named volume"
        assert ":ro" not in next(v for v in services()[name]["volumes"] if v.split(":")[1] == target)
        files_root = compose_env("prefect-worker")["PAMINGEST_FILES_ROOT"]
        assert any(files_root == t or files_root.startswith(t + "/") for t in mounts[name]), (name, files_root)


def test_compose_minio_credentials_are_the_s3_credentials():
    raw = compose_raw()["services"]
    env = {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret-key"}
    for name in ("minio", "minio-init"):
        e = interpolate(raw[name]["environment"], env)
        assert (e["MINIO_ROOT_USER"], e["MINIO_ROOT_PASSWORD"]) == ("key", "secret-key")
    # The pamingest containers take the same variables from the shell (pass-through, no value in the file).
    for name in ("prefect-worker", "dask-worker"):
        e = compose_env(name)
        assert e["AWS_ACCESS_KEY_ID"] is None and e["AWS_SECRET_ACCESS_KEY"] is None
    assert len(interpolate(raw["minio"]["environment"]["MINIO_ROOT_PASSWORD"])) >= 8  # MinIO's minimum
    bucket = re.search(r"mc mb \S* ?local/(\S+)", " ".join(raw["minio-init"]["command"])).group(1)
    assert f"s3://{bucket}/" in (INFRA / "README.md").read_text()
    assert f"http://minio:{next(iter(published(services()['minio'])))}" in (INFRA / "README.md").read_text()


# --------------------------------------------------------------------------- kubernetes


def test_k8s_manifests_follow_the_kubernetes_schemas():
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    for obj in k8s_objects():
        kubernetes_validate.validate(obj, version, strict=True)
    listed = set(kustomization()["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_k8s_kustomization_renders():
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True).stdout
    rendered = {(o["kind"], o["metadata"]["name"]) for o in yaml.safe_load_all(out) if o}
    assert rendered == {(o["kind"], o["metadata"]["name"]) for o in k8s_objects()}
    ns = kustomization()["namespace"]
    assert all(o["metadata"].get("namespace") == ns for o in yaml.safe_load_all(out) if o and o["kind"] != "Namespace")


def test_k8s_services_select_their_pods_and_ports():
    for svc in (o for o in k8s_objects() if o["kind"] == "Service"):
        selector = svc["spec"]["selector"]
        matches = [w for w in workloads()
                   if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matches) == 1, (svc["metadata"]["name"], [w["metadata"]["name"] for w in matches])
        (c,) = matches[0]["spec"]["template"]["spec"]["containers"]
        for p in svc["spec"]["ports"]:
            assert container_port(c, p.get("targetPort", p["port"])) == p["port"], (svc["metadata"]["name"], p)
    for w in workloads():
        assert w["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        for c in w["spec"]["template"]["spec"]["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                if "httpGet" in c.get(probe, {}):
                    container_port(c, c[probe]["httpGet"]["port"])


def test_k8s_references_exist():
    names = {(o["kind"], o["metadata"]["name"]) for o in k8s_objects()}
    for w in workloads():
        for c in w["spec"]["template"]["spec"]["containers"]:
            for ref in c.get("envFrom", []):
                kind, r = ("ConfigMap", ref["configMapRef"]) if "configMapRef" in ref else ("Secret", ref["secretRef"])
                assert (kind, r["name"]) in names or r.get("optional"), (c["name"], kind, r["name"])
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in k8s("Secret", ref["name"])["stringData"], (c["name"], ref)
    hpa = k8s("HorizontalPodAutoscaler", "dask-worker")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) in names
    assert container(target["name"])["resources"]["requests"]["cpu"], "CPU utilisation needs a CPU request"
    assert hpa["spec"]["minReplicas"] <= k8s("Deployment", "dask-worker")["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]


def test_k8s_addresses_match_services_and_compose():
    config = k8s("ConfigMap", "pamingest-config")["data"]
    sched = container("dask-scheduler")
    port = int(options_of(sched["command"])["--port"])
    dashboard = port_of(options_of(sched["command"])["--dashboard-address"])
    assert service_port("dask-scheduler", port) and service_port("dask-scheduler", dashboard)
    assert config["PAMINGEST_SCHEDULER"] == f"tcp://dask-scheduler:{port}" == compose_env("prefect-worker")["PAMINGEST_SCHEDULER"]
    server_port = int(options_of(container("prefect-server")["command"])["--port"])
    assert service_port("prefect-server", server_port)
    assert config["PREFECT_API_URL"] == f"http://prefect-server:{server_port}/api" == compose_env("prefect-worker")["PREFECT_API_URL"]
    # The same programs with the same arguments as in compose.
    for name in PAMINGEST_COMPONENTS:
        assert container(name)["command"] == services()[name]["command"], name
    # The database URL points at the Postgres Service with the Postgres Secret's user.
    from sqlalchemy.engine import make_url

    db = k8s("Secret", "prefect-db")["stringData"]
    url = make_url(db["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert url.drivername == "postgresql+asyncpg"
    assert service_port(url.host, url.port)
    assert (url.username, url.password, url.database) == (db["POSTGRES_USER"], db["POSTGRES_PASSWORD"], db["POSTGRES_DB"])


def test_k8s_dask_worker_memory_fits_its_container():
    from dask.utils import parse_bytes

    c = container("dask-worker")
    limit = parse_bytes(options_of(c["command"])["--memory-limit"])
    quantity = c["resources"]["limits"]["memory"]
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)", quantity)
    assert m, quantity
    assert limit <= int(m.group(1)) * units[m.group(2)]
    health = c["livenessProbe"]["httpGet"]
    assert container_port(c, health["port"]) == port_of(options_of(c["command"])["--dashboard-address"])
    assert container_port(container("prefect-worker"), container("prefect-worker")["livenessProbe"]["httpGet"]["port"]) \
        == http_port_and_path(healthcheck_url(services()["prefect-worker"]))[0]


# --------------------------------------------------------------------------- environment


def _env_settings_of_pamingest_containers() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name in PAMINGEST_COMPONENTS:
        out[f"compose {name}"] = set(compose_env(name))
        out[f"k8s {name}"] = k8s_env_names(container(name))
    return out


def _prefect_reads(monkeypatch, name: str) -> bool:
    from prefect.settings import Settings

    # Python mode: secret settings (the database URL) compare by their value.
    before = Settings().model_dump()
    monkeypatch.setenv(name, "http://example.invalid:1/api" if name.endswith("URL") else "false")
    try:
        return Settings().model_dump() != before
    finally:
        monkeypatch.delenv(name)


def _botocore_reads(name: str) -> bool:
    spec = importlib.util.find_spec("botocore")
    src = Path(spec.origin).parent
    return any(f"'{name}'" in p.read_text() for p in (src / "credentials.py", src / "configprovider.py"))


def _dask_reads(name: str) -> bool:
    import dask.config
    import distributed  # noqa: F401  (adds the distributed.* defaults)

    collected = dask.config.collect_env({name: "x"})
    path = []
    while isinstance(collected, dict) and len(collected) == 1:
        key, collected = next(iter(collected.items()))
        path.append(key)
    try:
        dask.config.get(".".join(path))
    except KeyError:
        return False
    return True


def test_every_variable_the_manifests_set_is_read(monkeypatch):
    read_on_run_path = code_strings(run_path_code()) | prefect_yaml_env_placeholders()
    for where, names in _env_settings_of_pamingest_containers().items():
        for name in names:
            if name.startswith("PAMINGEST_"):
                ok = name in read_on_run_path
            elif name.startswith("PREFECT_"):
                ok = _prefect_reads(monkeypatch, name)
            elif name.startswith("AWS_"):
                ok = _botocore_reads(name)
            elif name.startswith("DASK_"):
                ok = _dask_reads(name)
            else:
                ok = False
            assert ok, f"{where} sets {name}, which nothing it runs reads"


def test_the_variables_the_code_reads_are_set_and_documented():
    settings = flow_settings()
    readme = (INFRA / "README.md").read_text()
    for_flow_runs = {settings.STORE, settings.SCHEDULER, settings.S3_ENDPOINT, settings.STORE_ENDPOINT,
                     *prefect_yaml_env_placeholders(), "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PREFECT_API_URL"}
    # The Dask workers get store and sources with each task: they only need the credentials.
    for_dask_workers = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
    assert for_flow_runs <= set(compose_env("prefect-worker"))
    assert for_dask_workers <= set(compose_env("dask-worker"))
    k8s_worker = k8s_env_names(container("prefect-worker"))
    assert {settings.STORE, settings.SCHEDULER, "PREFECT_API_URL", *prefect_yaml_env_placeholders()} <= k8s_worker
    assert "AWS_DEFAULT_REGION" in k8s_env_names(container("dask-worker"))
    # Credentials come from the optional Secret in k8s, named in the README.
    assert re.search(r"secret generic pamingest-aws .*AWS_ACCESS_KEY_ID=.*AWS_SECRET_ACCESS_KEY=", readme.replace("\\\n", " "))
    everything_read = {s for s in code_strings(sorted((ROOT / "pamingest").rglob("*.py")) + sorted((ROOT / "flows").glob("*.py")))
                       if re.fullmatch(r"PAMINGEST_[A-Z_]+", s)} - {"PAMINGEST_FIXTURES"}
    for name in everything_read | for_flow_runs:
        assert f"`{name}`" in readme, f"infra/README.md does not say what {name} is"


# --------------------------------------------------------------------------- commands


def _dask_cli(sub: str):
    (ep,) = [e for e in md.entry_points(group="dask_cli") if e.name == sub]
    return ep.load()


def _dask_config_in_image() -> tuple[Path, Path]:
    """(file in the repository, where the Dockerfile installs it) of the image's Dask configuration."""
    found = []
    for value in instructions("COPY"):
        *sources, dest = shlex.split(value)
        found += [(ROOT / src, Path(dest)) for src in sources if src.startswith("infra/") and src.endswith(".yaml")]
    assert len(found) == 1, f"the Dockerfile should install one Dask YAML file: {found}"
    return found[0]


def test_image_dask_config_is_read_and_removes_malloc_trim(monkeypatch):
    """`dask worker` in the image reads infra/dask.yaml, which removes what pamingest's own clusters remove."""
    import dask.config

    from pamingest.executor import NANNY_PRE_SPAWN_ENVIRON

    src, dest = _dask_config_in_image()
    monkeypatch.delenv("DASK_ROOT_CONFIG", raising=False)
    monkeypatch.delenv("DASK_CONFIG", raising=False)
    assert str(dest.parent) in dask.config._get_paths(), f"Dask does not read YAML files from {dest.parent}"
    assert dest.suffix in (".yaml", ".yml")
    environ = load_yaml(src)["distributed"]["nanny"]["pre-spawn-environ"]
    assert environ == NANNY_PRE_SPAWN_ENVIRON
    # Nothing in the manifests moves Dask's config folder away or sets the variable again.
    for where, names in _env_settings_of_pamingest_containers().items():
        assert not names & {"DASK_ROOT_CONFIG", "MALLOC_TRIM_THRESHOLD_"}, where
        assert not [n for n in names if n.startswith("DASK_DISTRIBUTED__NANNY")], where


def _worker_malloc_env(tmp_path, argv: list[str], config_dir: Path | None) -> set:
    """The MALLOC_TRIM_THRESHOLD_ that the workers of a real `dask worker` (argv from the manifests) get."""
    import time

    from distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_" and not k.startswith("DASK_")}
    env["DASK_ROOT_CONFIG"] = str(config_dir or tmp_path / "no-config")
    env["DASK_CONFIG"] = str(tmp_path / "no-user-config")  # not the user's ~/.config/dask
    dask_cli = str(Path(sys.executable).with_name("dask"))
    opts = options_of(argv)
    args = [dask_cli, "worker", address, "--nthreads", opts["--nthreads"], "--memory-limit", opts["--memory-limit"],
            "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"]
    procs = [subprocess.Popen([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", "127.0.0.1:0"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 90
        while True:
            try:
                with Client(address, timeout=5, set_as_default=False) as c:
                    c.wait_for_workers(1, timeout=60)
                    return set(c.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values())
            except OSError:
                assert time.monotonic() < deadline, "dask scheduler/worker did not start"
                time.sleep(0.5)
    finally:
        stop_processes(procs)


@pytest.mark.slow  # 19 s of worker start-up; the factory every LocalCluster comes from is tested by default (test_executor.py)
def test_dask_worker_of_the_manifests_starts_its_workers_without_malloc_trim(tmp_path):
    """The compose/k8s `dask worker` command (with its nanny) and the image's Dask YAML, run for real."""
    src, dest = _dask_config_in_image()
    (tmp_path / "etc-dask").mkdir()
    (tmp_path / "etc-dask" / dest.name).write_bytes(src.read_bytes())
    argv = services()["dask-worker"]["command"]
    assert argv == container("dask-worker")["command"]
    assert "--no-nanny" not in argv  # the nanny is what sets the variable
    assert _worker_malloc_env(tmp_path, argv, tmp_path / "etc-dask") == {None}
    # Without the file, Dask's default: what the file is there to change.
    assert _worker_malloc_env(tmp_path, argv, None) == {"65536"}


def test_dask_commands_use_real_options():
    commands = [services()[n]["command"] for n in ("dask-scheduler", "dask-worker")]
    commands += [container(n)["command"] for n in ("dask-scheduler", "dask-worker")]
    for argv in commands:
        assert argv[0] == "dask"
        cmd = _dask_cli(argv[1])
        known = {o for p in cmd.params for o in p.opts + p.secondary_opts}
        unknown = {o.split("=")[0] for o in argv[2:] if o.startswith("--")} - known
        assert not unknown, (argv, unknown)


@cache
def _prefect_help(*words: str) -> str:
    prefect = Path(sys.executable).with_name("prefect")
    env = {**os.environ, "PREFECT_HOME": str(Path(tempfile.gettempdir()) / "pamingest-test-prefect-home"), "COLUMNS": "200"}
    return subprocess.run([str(prefect), *words, "--help"], capture_output=True, text=True, check=True, env=env,
                          timeout=120).stdout


def test_prefect_commands_use_real_commands_and_options():
    commands = worker_script_commands()
    assert {tuple(c[1:3]) for c in commands} >= {("work-pool", "inspect"), ("work-pool", "create"), ("worker", "start")}
    commands += [services()["prefect-server"]["command"], container("prefect-server")["command"]]
    for argv in commands:
        args = argv[1:]
        global_flags = []
        while args and args[0].startswith("--"):
            global_flags.append(args.pop(0))
        path = [args.pop(0)]
        while args and not args[0].startswith("-") and re.search(rf"^[│|]\s+{re.escape(args[0])}\s", _prefect_help(*path), re.M):  # a subcommand
            path.append(args.pop(0))
        usage = _prefect_help(*path)
        assert f"Usage: prefect {' '.join(path)}" in usage, (argv, usage[:200])
        for flag in global_flags:
            assert flag in _prefect_help(), (argv, flag)
        for flag in (a.split("=")[0] for a in args if a.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", usage), (argv, flag)


def test_worker_script_is_shell():
    assert subprocess.run(["sh", "-n", str(WORKER_SCRIPT)]).returncode == 0
    assert WORKER_SCRIPT.read_text().startswith("#!/bin/sh\n")
    (copy,) = [v for v in instructions("COPY") if "prefect-worker.sh" in v]
    installed = shlex.split(copy)[-1]
    assert services()["prefect-worker"]["command"] == container("prefect-worker")["command"] == [Path(installed).name]
    assert str(Path(installed).parent) in ("/usr/local/bin", "/usr/bin")


# --------------------------------------------------------------------------- README


def test_readme_points_at_real_ports_services_and_deployments():
    readme = (INFRA / "README.md").read_text()
    host_ports = {h for s in services().values() for h in published(s).values()}
    forwards = {(m.group(1), int(m.group(2))) for m in re.finditer(r"port-forward svc/([\w-]+) (\d+)", readme)}
    for svc, port in forwards:
        assert service_port(svc, port)
    for port in {int(p) for p in re.findall(r"localhost:(\d+)", readme)}:
        assert port in host_ports, f"README opens localhost:{port}, which compose does not publish"
    assert {int(p) for p in re.findall(r"localhost:(\d+)", readme)} >= {4200, 8787}
    for m in re.finditer(r"--scale ([\w-]+)=", readme):
        assert m.group(1) in services()
    for m in re.finditer(r"deployment/([\w-]+)", readme):
        k8s("Deployment", m.group(1))
    for m in re.finditer(r"\bingest/([\w-]+)", readme):
        assert m.group(1) in deployments(), m.group(0)
    for m in re.finditer(r"(?<![\w/])([A-Z][A-Z0-9_]+)=", readme):
        var = m.group(1)
        in_compose = var in json.dumps(compose_raw())
        assert in_compose or var.startswith(("AWS_", "PREFECT_")), f"README sets {var}, which compose.yaml does not use"


# --------------------------------------------------------------------------- the worker entrypoint, for real


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, body: dict | None = None):
    import urllib.request

    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _wait(check, what: str, procs, timeout: float = 180.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, f"{what}: {p.args[:3]} exited with {p.returncode}"
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(what)


class _Served:
    """A real `prefect server start` with infra/prefect-worker.sh run against it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.port, self.health = tmp, _free_port(), _free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        bin_dir = Path(sys.executable).parent
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               "PREFECT_HOME": str(self.tmp / "prefect"), "PREFECT_API_URL": self.api,
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_WEBSERVER_PORT": str(self.health),
               "PAMINGEST_FILES_ROOT": "/data/recordings"}
        self.procs.append(subprocess.Popen([str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1",
                                            "--port", str(self.port)], env=env, cwd=self.tmp,
                                           stdout=open(self.tmp / "server.log", "w"), stderr=subprocess.STDOUT))
        _wait(lambda: _api(f"{self.api}/health") is True, "Prefect server", self.procs)
        # The image runs the script from its WORKDIR, which holds prefect.yaml and flows/ as the repository does.
        self.procs.append(subprocess.Popen(["sh", str(WORKER_SCRIPT)], env=env, cwd=ROOT,
                                           stdout=open(self.tmp / "worker.log", "w"), stderr=subprocess.STDOUT))
        _wait(lambda: _api(f"http://127.0.0.1:{self.health}/health") is not None, "worker health", self.procs)

    @contextlib.contextmanager
    def logs_on_failure(self):
        try:
            yield
        except BaseException:
            for log in ("server.log", "worker.log"):
                if (self.tmp / log).exists():
                    print(f"--- {log}\n" + (self.tmp / log).read_text()[-4000:])
            raise


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One Prefect server and worker entrypoint for the tests below (each takes ~20 s to come up)."""
    served = _Served(tmp_path_factory.mktemp("served"))
    try:
        with served.logs_on_failure():
            served.start()
        yield served
    finally:
        # A server and worker the tests are done with: what they do on the way out is not under
        # test, and a graceful Prefect shutdown took 30 s of the suite.
        stop_processes(served.procs, timeout=5)


def test_worker_entrypoint_registers_the_deployments_on_a_real_server(served):
    """infra/prefect-worker.sh against a local Prefect server: pool, deployments, worker, health."""
    api, port, procs = served.api, served.port, served.procs
    with served.logs_on_failure():
        pool = _api(f"{api}/work_pools/pamingest")
        # No pool-wide limit: concurrent writers to one store all land (Store.commit rebases or re-applies).
        assert (pool["type"], pool["concurrency_limit"]) == ("process", None)
        registered = {d["name"]: d for d in _api(f"{api}/deployments/filter", {})}
        assert set(registered) == set(deployments())
        flows = {f["id"]: f["name"] for f in _api(f"{api}/flows/filter", {})}
        for name, d in registered.items():
            assert flows[d["flow_id"]] == deployments()[name]["entrypoint"].rsplit(":", 1)[1]
            assert d["work_pool_name"] == "pamingest"
            assert d["entrypoint"] == deployments()[name]["entrypoint"]
            assert d["pull_steps"] == prefect_yaml()["pull"]
        assert registered["files"]["parameters"]["options"]["root"] == "/data/recordings"
        # The address the demo prints as the Prefect UI serves the UI (the server's own page, not an error).
        import requests

        ui = requests.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert ui.status_code == 200 and "<html" in ui.text.lower() and "prefect" in ui.text.lower(), ui.text[:500]
        (schedule,) = registered["orcasound"]["schedules"]
        assert schedule["schedule"]["interval"] == 600
        for name, strategy in (("orcasound", "CANCEL_NEW"), ("default", "ENQUEUE")):
            wanted = deployments()[name]["concurrency_limit"]
            assert registered[name]["global_concurrency_limit"]["limit"] == wanted["limit"] == 1
            assert registered[name]["concurrency_options"]["collision_strategy"] == wanted["collision_strategy"] == strategy
        assert all(registered[n]["global_concurrency_limit"] is None for n in ("files", "sanctsound", "pacific-sound"))
        assert not registered["files"]["schedules"]
        _wait(lambda: _api(f"{api}/work_pools/pamingest/workers/filter", {}), "worker heartbeat", procs, 60)
        workers = _api(f"{api}/work_pools/pamingest/workers/filter", {})
        assert [w["status"] for w in workers] == ["ONLINE"]


def test_the_prefect_ui_renders_the_registered_deployments_in_a_browser(served, chromium, tmp_path):
    """The Prefect UI address (what `make demo` prints) opened in Chromium: the web app starts, and its
    Deployments page lists what the worker entrypoint registered, read from the server's API."""
    from browser import visit

    def look(browser):
        # The UI asks an analytics host on the internet for its settings: blocked (no internet here).
        seen = visit(browser, f"http://127.0.0.1:{served.port}/", block_outside=True)
        try:
            page = seen.page
            page.get_by_role("link", name="Deployments").first.click()  # the app's own navigation
            page.get_by_text(f"{len(deployments())} Deployments", exact=True).first.wait_for(timeout=60_000)
            for name in sorted(deployments())[:10]:  # the UI lists them A to Z, ten to a page
                page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / "prefect-ui.png"))
            return list(seen.page_errors), list(seen.failed_requests), page.url, page.inner_text("body")
        finally:
            seen.page.context.close()

    with served.logs_on_failure():
        errors, failed, url, text = chromium.run(look)
    assert not errors and not failed, (errors, failed)
    assert "/deployments" in url and "orcasound" in text and "pseudolabel" in text, text[:2000]
