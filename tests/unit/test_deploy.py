"""deploy/: the production files agree with the code they start.

No Docker engine or cluster runs here, so the systemd units, the Procfile, the Dockerfile,
the compose file, the Kubernetes manifests and redis.conf are parsed and cross-checked
against the sources they depend on: webhook/config.py and deploy/gunicorn.conf.py (the
variables), setup.cfg (the package), the Flask app (the probe paths), the RQ jobs (the
stop timeouts). redis.conf is also loaded by a real redis-server, and the units and the
kustomization by systemd-analyze and kubectl when the machine has them.
"""

from __future__ import annotations

import ast
import configparser
import fnmatch
import json
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from flask import Flask
from redis import Redis
from rq import Queue

from webhook.jobs import JOB_TIMEOUT_S
from webhook.redis_server import RedisServer, free_port, redis_server_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
REDIS_CONF = DEPLOY / "redis.conf"
GUNICORN_CONF = DEPLOY / "gunicorn.conf.py"
PROCFILE = ROOT / "Procfile"
# Where docs/deploy.md installs the checkout; the units name it.
INSTALL_ROOT = "/opt/agora-webhook"

# Variables of the interpreter and the OS, not the service's: an image may set them.
RUNTIME_VARIABLE = re.compile(r"PATH|PYTHON[A-Z_]+|PIP_[A-Z_]+")
# How the sources read a variable: env.get("X"), os.environ.get("X"), os.environ["X"],
# os.getenv("X"), integer_setting(env, "X", ...) and friends, click's envvar="X".
READS_VARIABLE = re.compile(
    r"""(?:env(?:iron)?\.get\(|environ\[|getenv\(|\(\s*env,\s*|envvar=)\s*["']([A-Z][A-Z0-9_]*)["']"""
)
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASS\b|CREDENTIAL|_KEY\b|WEBHOOK_URL")
PLACEHOLDER = "REPLACE_ME"


# --- reading the sources -----------------------------------------------------------------


def source_files() -> list[Path]:
    return [
        *sorted((ROOT / "webhook").rglob("*.py")),
        *sorted((ROOT / "workers").rglob("*.py")),
        GUNICORN_CONF,
        ROOT / "wsgi.py",
    ]


@cache
def variables_read_by_the_service() -> frozenset[str]:
    """Every environment variable the service's code reads, found in its source."""
    names: set[str] = set()
    for path in source_files():
        names.update(READS_VARIABLE.findall(path.read_text()))
    return frozenset(names)


def env_example() -> dict[str, str]:
    """.env.example's variables and values, as systemd's EnvironmentFile= reads them."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if re.match(r"[A-Z][A-Z0-9_]*=", line))
    return {name: setting.strip() for name, setting in pairs}


def env_example_names() -> set[str]:
    return set(env_example())


def longest_job_timeout_s() -> int:
    """The longest time an RQ job of ours may run: every timeout= given to an enqueue, and
    RQ's default for the enqueues that give none."""
    timeouts = [Queue.DEFAULT_TIMEOUT]
    for path in source_files():
        text = path.read_text()
        if "enqueue" not in text:
            continue
        for expression in re.findall(r"^\s*(?:job_)?timeout=(.+?),?\s*$", text, re.MULTILINE):
            # An unknown name fails here: teach this function the new constant.
            timeout = eval(  # noqa: S307  # our own source, with nothing but these names
                expression, {"__builtins__": {}}, {"JOB_TIMEOUT_S": JOB_TIMEOUT_S, "max": max}
            )
            timeouts.append(int(timeout))
    return max(timeouts)


def load_gunicorn_config(
    monkeypatch: pytest.MonkeyPatch, directory: Path, environment: dict[str, str]
) -> dict[str, Any]:
    """deploy/gunicorn.conf.py's settings with environment as the service's variables."""
    for name in variables_read_by_the_service():
        monkeypatch.delenv(name, raising=False)
    for name, setting in environment.items():
        monkeypatch.setenv(name, setting)
    # Set, so that loading the file creates no directory and leaks nothing into os.environ.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    return runpy.run_path(str(GUNICORN_CONF))


@pytest.fixture
def gunicorn_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """deploy/gunicorn.conf.py's settings with nothing in the environment: its defaults."""
    return load_gunicorn_config(monkeypatch, tmp_path, {"APP_ENV": "development"})


def test_gunicorn_builds_no_access_log_fields_unless_an_access_log_is_asked_for(
    gunicorn_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from gunicorn.config import Config

    import webhook.gunicorn_config

    assert gunicorn_config["logger_class"] is webhook.gunicorn_config.AccessLogWhenAsked
    # As with our logconfig_dict, gunicorn counts its access log as enabled (a file here,
    # so that the test process's own logging is left alone).
    config = Config()
    config.set("accesslog", str(tmp_path / "access.log"))
    logger = gunicorn_config["logger_class"](config)
    built: list[object] = []

    def atoms(*args: object) -> dict[str, str]:
        built.append(args)
        return {}

    monkeypatch.setattr(logger, "atoms", atoms)
    monkeypatch.setattr(webhook.gunicorn_config, "accesslog", None)
    logger.access(None, None, {}, None)
    assert built == []  # gunicorn's own Logger builds them when logconfig_dict is set
    monkeypatch.setattr(webhook.gunicorn_config, "accesslog", "-")
    logger.access(None, None, {}, None)
    assert len(built) == 1


def default_port(gunicorn_config: dict[str, Any]) -> int:
    return int(str(gunicorn_config["bind"]).rsplit(":", 1)[1])


@cache
def loads_as_callable(target: str) -> str:
    """'' if module:attribute imports to a callable in a fresh interpreter, else why not.

    A subprocess, because importing wsgi configures logging and builds the app."""
    code = (
        "import importlib, sys\n"
        "module, _, attribute = sys.argv[1].partition(':')\n"
        "assert callable(getattr(importlib.import_module(module), attribute))\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "APP_ENV": "production",
        "AGORA_CALLBACK_SECRETS": "placeholder-for-the-import",
        # Never contacted: the app connects on its first request.
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    result = subprocess.run(
        [sys.executable, "-c", code, target],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return "" if result.returncode == 0 else result.stderr[-2000:]


def assert_runs_the_service(argv: list[str], where: str) -> None:
    """argv starts gunicorn with our config and app, or one of our workers."""
    program = Path(argv[0]).name
    if program == "gunicorn":
        config = argv[argv.index("-c") + 1]
        assert (ROOT / config).resolve() == GUNICORN_CONF, where
        assert not loads_as_callable(argv[-1]), f"{where}: {loads_as_callable(argv[-1])}"
    elif program in ("python", "python3"):
        assert argv[1:] == ["-m", "workers"], where
        assert not loads_as_callable("workers.__main__:main"), where
    else:
        pytest.fail(f"{where} runs {argv}, which is neither gunicorn nor python -m workers")
    # The program is one the project's virtualenv has (the deployment installs the same).
    assert (Path(sys.executable).parent / program).exists(), f"{where}: no {program}"


def seconds(span: str | int) -> float:
    """A duration as systemd ("5min 30s", "330") or compose ("1m30s") write it."""
    if isinstance(span, int):
        return span
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts, span
    return sum(float(number) * units[unit or "s"] for number, unit in parts)


# --- systemd -----------------------------------------------------------------------------

Unit = dict[str, list[tuple[str, str]]]


def parse_unit(path: Path) -> Unit:
    """Sections of (key, value) in order: systemd keys repeat, which configparser merges."""
    unit: Unit = {}
    section: list[tuple[str, str]] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = unit.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        section.append((key.strip(), value.strip()))
    return unit


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit: Unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert found, f"no {key}= in [{section}]"
    return found[-1]


def unit_environment(unit: Unit) -> dict[str, str]:
    pairs = (shlex.split(v) for v in values(unit, "Service", "Environment"))
    return dict(item.split("=", 1) for items in pairs for item in items)


def unit_command(unit: Unit) -> list[str]:
    return shlex.split(value(unit, "Service", "ExecStart").lstrip("-@:+!"))


UNITS = {path.name: path for path in sorted(SYSTEMD.glob("*.service"))}
WEB_UNIT = "agora-webhook-web.service"
WORKER_UNITS = ("agora-webhook-worker.service", "agora-webhook-worker@.service")


# --- Dockerfile, .dockerignore, compose, Kubernetes ----------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, arguments = pending.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            current = stages.setdefault(arguments.split()[-1], [])
        current.append((keyword, arguments))
    return stages


def runtime_stage() -> list[tuple[str, str]]:
    """The stage the image is: the last one."""
    return list(dockerfile_stages().values())[-1]


def only(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [arguments for k, arguments in stage if k == keyword]
    assert len(found) == 1, f"{keyword}: {found}"
    return found[0]


def dockerfile_base_image() -> str:
    arguments = {
        name: default
        for keyword, rest in dockerfile_instructions()
        if keyword == "ARG" and "=" in rest
        for name, default in [rest.split("=", 1)]
    }
    image = only(runtime_stage(), "FROM").split()[0]
    return re.sub(r"\$\{(\w+)\}", lambda m: arguments[m.group(1)], image)


def exec_form(arguments: str) -> list[str]:
    parsed = json.loads(arguments)
    assert isinstance(parsed, list), arguments
    return [str(item) for item in parsed]


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def dockerignored(path: str) -> bool:
    """Whether the build context leaves path out: enough of Docker's rules for our file,
    erring towards "left out" (fnmatch's * also crosses /), so a check that something is
    kept can only fail wrongly, never pass wrongly."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in (p.lstrip("/") for p in dockerignore_patterns()):
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            # "**/x" matches x at any depth, the top included.
            name = prefix.rsplit("/", 1)[-1]
            if pattern.startswith("**/") and fnmatch.fnmatchcase(name, pattern[3:]):
                return True
    return False


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def compose_service(name: str) -> dict[str, Any]:
    service: dict[str, Any] = compose()["services"][name]
    return service


def k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path, document


def k8s(kind: str, name: str) -> dict[str, Any]:
    (found,) = [
        d for _, d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name
    ]
    return found


def deployments() -> list[dict[str, Any]]:
    return [d for _, d in k8s_documents() if d["kind"] == "Deployment"]


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return found


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port, named or numbered, as the container's port number."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return int(number)


WEB = "agora-webhook-web"
WORKER = "agora-webhook-worker"


# --- the variables -------------------------------------------------------------------------


def test_the_variable_scan_finds_what_settings_and_gunicorn_read() -> None:
    # Guards the regular expression: if it found nothing, every check below would pass.
    found = variables_read_by_the_service()

    assert {"REDIS_URL", "AGORA_CALLBACK_SECRETS", "AGORA_MAX_BODY_BYTES", "WORKER_CLASS"} <= found
    assert {"PORT", "GUNICORN_GRACEFUL_TIMEOUT", "PROMETHEUS_MULTIPROC_DIR"} <= found


def test_env_example_lists_every_variable_the_service_reads() -> None:
    missing = variables_read_by_the_service() - env_example_names()

    assert not missing, f".env.example lacks {sorted(missing)}"


def test_an_environment_file_copied_from_env_example_keeps_the_default_bind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, gunicorn_config: dict[str, Any]
) -> None:
    # What docs/deploy.md has systemd users do: .env.example becomes /etc/agora-webhook/env.
    environment = env_example() | {"AGORA_CALLBACK_SECRETS": "placeholder"}

    config = load_gunicorn_config(monkeypatch, tmp_path, environment)

    assert config["bind"] == gunicorn_config["bind"]


def test_env_example_lists_no_variable_the_service_does_not_read() -> None:
    stale = env_example_names() - variables_read_by_the_service()

    assert not stale, f".env.example lists {sorted(stale)}, which no source reads"


def variables_set_by_the_deployment_files() -> dict[str, set[str]]:
    """Every variable name each file sets, or takes from its own environment (compose)."""
    found: dict[str, set[str]] = {}
    for name, path in UNITS.items():
        found[f"systemd/{name}"] = set(unit_environment(parse_unit(path)))
    found["Dockerfile"] = {
        item.split("=", 1)[0]
        for keyword, arguments in dockerfile_instructions()
        if keyword == "ENV"
        for item in shlex.split(arguments)
    }
    for name, service in compose()["services"].items():
        environment = service.get("environment", {})
        names = set(environment)
        for setting in environment.values():
            names.update(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", str(setting)))
        found[f"compose {name}"] = names
    for path, document in k8s_documents():
        if document["kind"] == "ConfigMap":
            found[path.name] = set(document["data"])
        elif document["kind"] == "Deployment":
            found[path.name] = {e["name"] for c in containers(document) for e in c.get("env", [])}
    return found


def test_every_variable_the_deployment_files_set_is_one_the_service_reads() -> None:
    known = variables_read_by_the_service()

    for where, names in variables_set_by_the_deployment_files().items():
        unknown = {n for n in names - known if not RUNTIME_VARIABLE.fullmatch(n)}
        assert not unknown, f"{where} sets {sorted(unknown)}, which the service never reads"


def test_every_key_of_the_variables_secret_is_a_variable_the_service_reads() -> None:
    secret = k8s("Secret", "agora-webhook")

    assert set(secret["stringData"]) <= variables_read_by_the_service()


# --- the commands --------------------------------------------------------------------------


def commands_of_the_deployment_files() -> dict[str, list[str]]:
    image_command = exec_form(only(runtime_stage(), "CMD"))
    commands = {f"systemd/{name}": unit_command(parse_unit(p)) for name, p in UNITS.items()}
    commands["Dockerfile CMD"] = image_command
    for line in PROCFILE.read_text().splitlines():
        process, _, command = line.partition(":")
        commands[f"Procfile {process}"] = shlex.split(command)
    for name in ("web", "worker"):
        commands[f"compose {name}"] = compose_service(name).get("command", image_command)
    for deployment in deployments():
        for container in containers(deployment):
            where = f"{deployment['metadata']['name']} {container['name']}"
            commands[where] = [*container.get("command", image_command), *container.get("args", [])]
    return commands


def test_every_command_the_deployment_files_run_starts_the_service() -> None:
    commands = commands_of_the_deployment_files()

    assert len(commands) >= 10
    for where, argv in commands.items():
        assert_runs_the_service(argv, where)


def test_web_and_worker_commands_go_where_they_belong() -> None:
    commands = commands_of_the_deployment_files()

    for where, argv in commands.items():
        is_worker = argv[1:] == ["-m", "workers"]
        assert is_worker == ("worker" in where), where


def test_the_units_run_the_virtualenv_of_their_working_directory() -> None:
    for name, path in UNITS.items():
        unit = parse_unit(path)

        assert value(unit, "Service", "WorkingDirectory") == INSTALL_ROOT, name
        assert unit_command(unit)[0].startswith(f"{INSTALL_ROOT}/.venv/bin/"), name


def test_the_procfile_is_at_the_root_where_platforms_read_it_and_nowhere_else() -> None:
    processes = [line.split(":", 1)[0] for line in PROCFILE.read_text().splitlines()]

    assert processes == ["web", "worker"]
    assert not (DEPLOY / "Procfile").exists()


# --- ports and paths -------------------------------------------------------------------------


def test_every_port_is_gunicorn_s_default_port(gunicorn_config: dict[str, Any]) -> None:
    port = default_port(gunicorn_config)
    healthcheck = exec_form(only(runtime_stage(), "HEALTHCHECK").split("CMD", 1)[1].strip())
    web = compose_service("web")
    (container,) = containers(k8s("Deployment", WEB))
    service = k8s("Service", WEB)
    annotations = k8s("Deployment", WEB)["spec"]["template"]["metadata"]["annotations"]

    assert port == 8000
    assert only(runtime_stage(), "EXPOSE") == str(port)
    assert f"os.environ.get('PORT', '{port}')" in healthcheck[-1]
    assert [p.rsplit(":", 1)[1] for p in web["ports"]] == [str(port)]
    assert f"127.0.0.1:{port}/" in web["healthcheck"]["test"][-1]
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert [container_port(container, p["targetPort"]) for p in service["spec"]["ports"]] == [port]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container_port(container, container[probe]["httpGet"]["port"]) == port
    assert annotations["prometheus.io/port"] == str(port)


def http_paths_the_deployment_files_ask_for() -> dict[str, str]:
    healthcheck = only(runtime_stage(), "HEALTHCHECK")
    deployment = k8s("Deployment", WEB)
    (container,) = containers(deployment)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    compose_check = compose_service("web")["healthcheck"]["test"][-1]
    return {
        "Dockerfile HEALTHCHECK": re.findall(r"(/\w+)'", healthcheck)[-1],
        "compose web healthcheck": re.findall(r":\d+(/\w+)", compose_check)[0],
        "k8s readinessProbe": container["readinessProbe"]["httpGet"]["path"],
        "k8s livenessProbe": container["livenessProbe"]["httpGet"]["path"],
        "k8s prometheus.io/path": annotations["prometheus.io/path"],
    }


def test_every_probed_path_is_a_route_the_app_serves(app: Flask) -> None:
    routes = {rule.rule for rule in app.url_map.iter_rules() if "GET" in (rule.methods or ())}

    for where, path in http_paths_the_deployment_files_ask_for().items():
        assert path in routes, f"{where} asks for {path}, which the app does not serve"


def test_liveness_never_depends_on_redis_and_readiness_does() -> None:
    paths = http_paths_the_deployment_files_ask_for()

    # /readyz fails while Redis is down; a liveness check on it would restart every
    # replica during a Redis outage instead of waiting for it.
    assert paths["k8s livenessProbe"] == "/healthz"
    assert paths["Dockerfile HEALTHCHECK"] == "/healthz"
    assert paths["compose web healthcheck"] == "/healthz"
    assert paths["k8s readinessProbe"] == "/readyz"


# --- stopping gracefully -----------------------------------------------------------------------


def test_the_web_gets_longer_to_stop_than_gunicorn_s_graceful_timeout(
    gunicorn_config: dict[str, Any],
) -> None:
    graceful = gunicorn_config["graceful_timeout"]
    unit = parse_unit(UNITS[WEB_UNIT])
    spec = k8s("Deployment", WEB)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]

    assert graceful > 0
    # SIGTERM to the arbiter alone: it is what stops gunicorn gracefully.
    assert value(unit, "Service", "KillSignal") == "SIGTERM"
    assert value(unit, "Service", "KillMode") == "mixed"
    assert seconds(value(unit, "Service", "TimeoutStopSec")) > graceful
    assert seconds(compose_service("web")["stop_grace_period"]) > graceful
    assert pre_stop[0] == "sleep"
    assert spec["terminationGracePeriodSeconds"] > int(pre_stop[1]) + graceful


def test_a_worker_gets_longer_to_stop_than_the_longest_job_it_may_be_running() -> None:
    longest = longest_job_timeout_s()
    spec = k8s("Deployment", WORKER)["spec"]["template"]["spec"]

    assert longest >= 300  # the sweep's
    for name in WORKER_UNITS:
        unit = parse_unit(UNITS[name])
        # SIGTERM is RQ's warm shutdown; KillMode=mixed keeps it from a fork worker's horse.
        assert value(unit, "Service", "KillSignal") == "SIGTERM", name
        assert value(unit, "Service", "KillMode") == "mixed", name
        assert seconds(value(unit, "Service", "TimeoutStopSec")) > longest, name
    assert seconds(compose_service("worker")["stop_grace_period"]) > longest
    assert spec["terminationGracePeriodSeconds"] > longest


# --- systemd -----------------------------------------------------------------------------------


def test_there_are_a_web_unit_and_worker_units() -> None:
    assert set(UNITS) == {WEB_UNIT, *WORKER_UNITS}


@pytest.mark.parametrize("name", sorted(UNITS))
def test_a_unit_runs_as_a_dedicated_user_with_the_environment_file_and_hardening(
    name: str,
) -> None:
    unit = parse_unit(UNITS[name])
    hardening = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "Restart": "on-failure",
    }

    assert value(unit, "Service", "User") == "agora-webhook"
    assert value(unit, "Service", "Group") == "agora-webhook"
    # Not "-/etc/...": without it production cannot start, and should say so at once.
    assert values(unit, "Service", "EnvironmentFile") == ["/etc/agora-webhook/env"]
    for key, expected in hardening.items():
        assert value(unit, "Service", key) == expected, f"{name}: {key}"
    assert value(unit, "Install", "WantedBy") == "multi-user.target"


def test_the_web_unit_gives_prometheus_an_empty_directory_of_its_own() -> None:
    unit = parse_unit(UNITS[WEB_UNIT])
    runtime = value(unit, "Service", "RuntimeDirectory")

    assert unit_environment(unit)["PROMETHEUS_MULTIPROC_DIR"] == f"/run/{runtime}"
    # Removed at every stop, so each start begins with no counters of the last run.
    assert values(unit, "Service", "RuntimeDirectoryPreserve") in ([], ["no"])
    assert value(unit, "Service", "Type") == "notify"


def test_the_worker_template_runs_the_same_service_as_the_single_worker_unit() -> None:
    single, template = (parse_unit(UNITS[name]) for name in WORKER_UNITS)

    assert single["Service"] == template["Service"]
    assert single["Install"] == template["Install"]


def test_the_units_are_readable_by_configparser_too() -> None:
    for name, path in UNITS.items():
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive

        parser.read(path)

        assert parser.has_option("Service", "ExecStart"), name


@pytest.fixture
def installed_units(tmp_path: Path) -> Path:
    """The units as if installed from this checkout: paths point at it and its venv."""
    for name, path in UNITS.items():
        text = path.read_text().replace(f"{INSTALL_ROOT}/.venv", sys.prefix)
        (tmp_path / name).write_text(text.replace(INSTALL_ROOT, str(ROOT)))
    return tmp_path


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    return found


def test_systemd_analyze_verifies_the_units(installed_units: Path) -> None:
    # An instance of the template too: verify loads the template for it from the same place.
    names = [*UNITS, "agora-webhook-worker@1.service"]

    result = subprocess.run(
        [systemd_analyze(), "verify", *(f"./{name}" for name in names)],
        cwd=installed_units,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr, result.stderr


@pytest.mark.parametrize("name", [WEB_UNIT, WORKER_UNITS[0]])
def test_systemd_rates_the_units_exposure_low(installed_units: Path, name: str) -> None:
    result = subprocess.run(
        # The threshold is ten times the exposure level: at most 2.0 of 10.
        [systemd_analyze(), "security", "--offline=true", "--threshold=20", f"./{name}"],
        cwd=installed_units,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


# --- the image -----------------------------------------------------------------------------------


def test_the_image_is_built_from_a_slim_python_base() -> None:
    assert re.fullmatch(r"python:3\.1[12]-slim(-\w+)?", dockerfile_base_image())


def test_the_image_runs_as_the_non_root_user_the_manifests_expect() -> None:
    user = only(runtime_stage(), "USER")
    uid, _, gid = user.partition(":")

    # Numeric: Kubernetes' runAsNonRoot cannot check a user name.
    assert uid.isdigit()
    assert gid.isdigit()
    assert int(uid) != 0
    assert int(gid) != 0
    for deployment in deployments():
        security = deployment["spec"]["template"]["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True
        assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid))


def test_the_image_copies_what_the_package_build_and_gunicorn_need() -> None:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    readme = setup["metadata"]["long_description"].removeprefix("file:").strip()
    copied: list[str] = []
    for keyword, arguments in dockerfile_instructions():
        if keyword == "COPY" and not arguments.startswith("--from"):
            copied.extend(shlex.split(arguments)[:-1])
    command = exec_form(only(runtime_stage(), "CMD"))
    config = command[command.index("-c") + 1]
    runtime_copies = [shlex.split(a) for k, a in runtime_stage() if k == "COPY"]

    for source in copied:
        assert (ROOT / source).exists(), source
        assert not dockerignored(source), f".dockerignore leaves out {source}"
    assert {"setup.cfg", "pyproject.toml", readme, "webhook", "workers"} <= set(copied)
    assert (ROOT / "webhook" / "store" / "lua").is_dir()  # package_data, inside webhook/
    # The runtime stage has the two files gunicorn is started with, where CMD names them.
    assert only(runtime_stage(), "WORKDIR") == "/app"
    assert [config, "./deploy/"] in runtime_copies
    assert ["wsgi.py", "./"] in runtime_copies
    assert command[-1].split(":")[0] == "wsgi"


def test_the_image_health_check_runs_python_not_curl() -> None:
    healthcheck = only(runtime_stage(), "HEALTHCHECK")
    command = exec_form(healthcheck.split("CMD", 1)[1].strip())

    assert command[:2] == ["python", "-c"]
    ast.parse(command[2])
    assert "curl" not in healthcheck
    assert "wget" not in healthcheck


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build() -> None:
    # Negations are not understood by dockerignored(); keep the file simple instead.
    assert not [p for p in dockerignore_patterns() if p.startswith("!")]
    for path in (".env", "deploy/.env", ".venv", ".git", "var", "webhook/__pycache__", "tests"):
        assert dockerignored(path), path
    for path in ("webhook/app.py", "deploy/gunicorn.conf.py", "wsgi.py", "README.md"):
        assert not dockerignored(path), path


# --- compose -----------------------------------------------------------------------------------


def test_compose_runs_web_and_worker_from_one_image_after_redis_is_healthy() -> None:
    web, worker = compose_service("web"), compose_service("worker")

    assert web["image"] == worker["image"]
    assert web["build"]["dockerfile"] == worker["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (COMPOSE.parent / web["build"]["context"]).resolve() == ROOT
    for service in (web, worker):
        assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}
        assert service["environment"]["APP_ENV"] == "production"
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    # The image's health check asks gunicorn over HTTP; a worker has none.
    assert worker["healthcheck"] == {"disable": True}
    assert compose_service("redis")["healthcheck"]["test"]


def test_compose_takes_the_callback_secret_from_its_environment_and_requires_it() -> None:
    environment = compose_service("web")["environment"]

    assert re.fullmatch(r"\$\{AGORA_CALLBACK_SECRETS:\?.+\}", environment["AGORA_CALLBACK_SECRETS"])
    assert re.fullmatch(r"\$\{API_TOKENS(:-)?\}", environment["API_TOKENS"])


def redis_command_overrides(command: list[str]) -> dict[str, str]:
    """redis-server's --name value arguments after the configuration file."""
    assert command[0] == "redis-server"
    flags = command[2:]
    assert len(flags) % 2 == 0, command
    assert all(f.startswith("--") for f in flags[::2]), command
    return {flags[i][2:]: flags[i + 1] for i in range(0, len(flags), 2)}


def test_compose_redis_runs_redis_conf_with_no_durability_setting_changed() -> None:
    redis = compose_service("redis")
    mounts = dict(volume.split(":")[1::-1] for volume in redis["volumes"])
    overrides = redis_command_overrides(redis["command"])
    conf = redis_conf()

    assert redis["image"].startswith("redis:7")
    assert (COMPOSE.parent / mounts[redis["command"][1]]).resolve() == REDIS_CONF
    for durability in ("appendonly", "appendfsync", "maxmemory-policy", "maxmemory"):
        assert overrides.get(durability, conf[durability]) == conf[durability], durability
    # The data lives on the named volume.
    assert mounts[overrides["dir"]] in compose()["volumes"]
    # Protected mode off is safe only while nothing outside the compose network reaches it.
    if overrides.get("protected-mode", conf["protected-mode"]) == "no":
        assert "ports" not in redis


# --- redis.conf ----------------------------------------------------------------------------------


def redis_conf() -> dict[str, str]:
    """Directive -> its arguments; the last one wins, as in redis-server."""
    settings: dict[str, str] = {}
    for raw in REDIS_CONF.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            directive, _, arguments = line.partition(" ")
            settings[directive.lower()] = arguments.strip()
    return settings


def test_redis_conf_keeps_what_it_acknowledged_and_never_evicts() -> None:
    conf = redis_conf()

    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "everysec"
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["no-appendfsync-on-rewrite"] == "no"
    # A limit: without one Redis grows until the OOM killer takes it down.
    assert conf["maxmemory"] not in ("", "0")


def test_redis_conf_is_closed_to_the_network_and_observable() -> None:
    conf = redis_conf()

    assert conf["protected-mode"] == "yes"
    assert set(conf["bind"].split()) <= {"127.0.0.1", "-::1", "::1"}
    assert "requirepass" not in conf  # a password belongs in a secret store, not the repo
    assert int(conf["tcp-keepalive"]) > 0
    assert conf["timeout"] == "0"  # RQ workers block on the queue for minutes
    assert int(conf["latency-monitor-threshold"]) > 0


@pytest.fixture
def redis_with_the_conf(tmp_path: Path) -> Iterator[Redis]:
    """A redis-server started with deploy/redis.conf, moved to a free port and a temp dir."""
    try:
        binary = redis_server_binary()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    server = RedisServer(data_dir=tmp_path, port=free_port())
    command = [binary, str(REDIS_CONF), "--port", str(server.port), "--bind", "127.0.0.1"]
    command += ["--dir", str(tmp_path), "--logfile", str(tmp_path / "redis.log")]
    server.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        server.wait_until_ready(10)
        client = Redis(port=server.port, decode_responses=True)
        yield client
        client.close()
    finally:
        server.stop()


def test_redis_server_runs_with_the_conf_and_logs_every_write(
    redis_with_the_conf: Redis, tmp_path: Path
) -> None:
    def setting(name: str) -> str:
        found = cast(dict[str, str], redis_with_the_conf.config_get(name))
        return found[name]

    redis_with_the_conf.set("written", "1")

    assert setting("appendonly") == "yes"
    assert setting("appendfsync") == "everysec"
    assert setting("maxmemory-policy") == "noeviction"
    assert int(setting("maxmemory")) > 0
    assert setting("protected-mode") == "yes"
    assert list(tmp_path.rglob("*.aof"))


# --- Kubernetes ----------------------------------------------------------------------------------


def test_every_manifest_parses_and_the_kustomization_lists_all_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p, d in k8s_documents() if d.get("kind") != "Kustomization"}

    assert set(kustomization["resources"]) == manifests - {"secret.example.yaml"}
    for path, document in k8s_documents():
        assert "namespace" not in document.get("metadata", {}), path.name
    kinds = {d["kind"] for _, d in k8s_documents()}
    assert kinds >= {"Deployment", "Service", "PodDisruptionBudget", "Secret", "ConfigMap"}


def test_kubectl_builds_the_kustomization() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed on this machine")
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]

    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    built = sorted(d["kind"] for d in yaml.safe_load_all(result.stdout) if d)
    assert built == sorted(d["kind"] for p, d in k8s_documents() if p.name in listed)


def test_each_pdb_and_the_service_select_exactly_the_pods_of_their_deployment() -> None:
    web_pdb, worker_pdb = (k8s("PodDisruptionBudget", name) for name in (WEB, WORKER))
    selectors = {
        "web Service": (k8s("Service", WEB)["spec"]["selector"], WEB),
        "web PDB": (web_pdb["spec"]["selector"]["matchLabels"], WEB),
        "worker PDB": (worker_pdb["spec"]["selector"]["matchLabels"], WORKER),
    }

    for where, (selector, name) in selectors.items():
        for deployment in deployments():
            selected = selector.items() <= pod_labels(deployment).items()
            assert selected == (deployment["metadata"]["name"] == name), where
    for deployment in deployments():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels(deployment).items()


def test_the_deployments_reference_only_secrets_and_keys_that_exist() -> None:
    documents = [d for _, d in k8s_documents()]
    secrets = {
        d["metadata"]["name"]: set(d["stringData"]) for d in documents if d["kind"] == "Secret"
    }
    config_maps = {d["metadata"]["name"] for d in documents if d["kind"] == "ConfigMap"}

    for deployment in deployments():
        pod = deployment["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps
            for variable in container.get("env", []):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if reference:
                    assert reference["key"] in secrets[reference["name"]], variable["name"]


def test_the_callback_secret_reaches_every_pod_from_the_secret() -> None:
    # Settings.from_env refuses production without it: web and workers alike.
    for deployment in deployments():
        for container in containers(deployment):
            (variable,) = [e for e in container["env"] if e["name"] == "AGORA_CALLBACK_SECRETS"]
            assert variable["valueFrom"]["secretKeyRef"]["key"] == "AGORA_CALLBACK_SECRETS"
            assert not variable["valueFrom"]["secretKeyRef"].get("optional", False)


def test_the_storage_config_path_is_in_the_mounted_storage_secret() -> None:
    (container,) = containers(k8s("Deployment", WORKER))
    path = Path(next(e["value"] for e in container["env"] if e["name"] == "STORAGE_CONFIG"))
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent]
    pod = k8s("Deployment", WORKER)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    secret = k8s("Secret", volume["secret"]["secretName"])

    assert path.name in secret["stringData"]
    json.loads(secret["stringData"][path.name])


def test_the_web_runs_two_replicas_with_probes_limits_and_a_locked_down_container() -> None:
    deployment = k8s("Deployment", WEB)
    (container,) = containers(deployment)

    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert {"readinessProbe", "livenessProbe"} <= set(container)
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]


def test_every_container_is_locked_down() -> None:
    for deployment in deployments():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            # A read-only root still needs a writable /tmp (gunicorn's heartbeat files).
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts  # noqa: S108  # the mount path, not a temp file
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"


def test_the_web_s_prometheus_directory_is_a_writable_volume_of_the_pod() -> None:
    (container,) = containers(k8s("Deployment", WEB))
    environment = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}

    directory = environment["PROMETHEUS_MULTIPROC_DIR"]

    assert directory in mounts
    assert not mounts[directory].get("readOnly", False)


# --- no secret in the repository -----------------------------------------------------------------

LOOKS_LIKE_A_CREDENTIAL = re.compile(
    r"AKIA[0-9A-Z]{16}"  # an AWS access key id
    r"|whsec_[A-Za-z0-9+/=]{16,}"  # a Standard Webhooks secret
    r"|hooks\.slack\.com/services/"  # a Slack incoming-webhook URL
    r"|-----BEGIN [A-Z ]*PRIVATE KEY"
    r"|redis://[^@\s/]*:(?![<$])[^@\s]+@"  # a Redis URL with a password (not <a placeholder>)
)


def deployment_files() -> list[Path]:
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return sorted([*files, PROCFILE, ROOT / ".dockerignore"])


def test_no_deployment_file_contains_something_that_looks_like_a_credential() -> None:
    for path in deployment_files():
        found = LOOKS_LIKE_A_CREDENTIAL.search(path.read_text())
        assert found is None, f"{path.relative_to(ROOT)}: {found and found.group(0)}"


def test_the_secret_example_holds_placeholders_only() -> None:
    for _, document in k8s_documents():
        if document["kind"] != "Secret":
            continue
        assert "data" not in document  # base64 would hide what is committed
        for key, setting in document["stringData"].items():
            if key.endswith(".json"):
                assert json.loads(setting) == {"buckets": {}}, key
            else:
                assert setting.startswith(PLACEHOLDER), key


def is_secret(name: str) -> bool:
    return SECRET_NAME.search(name) is not None


def test_secret_variables_are_never_given_a_value_in_the_deployment_files() -> None:
    set_by = variables_set_by_the_deployment_files()

    for where in [w for w in set_by if w.startswith(("systemd/", "Dockerfile", "configmap"))]:
        # Units read secrets from /etc/agora-webhook/env; the image and ConfigMap have none.
        assert not [n for n in set_by[where] if is_secret(n)], where
    for name in ("web", "worker"):
        environment = compose_service(name).get("environment", {})
        for variable in filter(is_secret, environment):
            # Taken from the shell or deploy/.env, which are not committed.
            assert re.fullmatch(r"\$\{\w+(:[?-][^}]*)?\}", environment[variable]), variable
    for deployment in deployments():
        for container in containers(deployment):
            for variable in container.get("env", []):
                if is_secret(variable["name"]):
                    assert "secretKeyRef" in variable["valueFrom"], variable["name"]
