"""deploy/Containerfile and the README's IAM policy, checked against the code they describe.

No image is built here (no container engine) and no real AWS role is tried, so these are the
checks that can run: a COPY of something that moved, a command naming a module or flag that
is gone, a dev requirement slipped into the image, or a new AWS call in mesh/ without its
action in the README's policy fails here.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import botocore
import botocore.session
import pytest
from streamlit import config as streamlit_config

ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
README = ROOT / "README.md"

# The AWS services whose calls the README's policy must cover, and how the code names them:
# a client held in a variable named after its service (self._glue, self._lf, sts, sns), or
# the label that mesh.aws.call reports a call under (call("Organizations", "ListAccounts", ...)).
SERVICES = ("glue", "lakeformation", "ram", "sts", "sns", "organizations")
RECEIVERS = {
    "glue": "glue",
    "lf": "lakeformation",
    "lakeformation": "lakeformation",
    "ram": "ram",
    "sts": "sts",
    "sns": "sns",
    "organizations": "organizations",
}
CALL_LABELS = {
    "Glue": "glue",
    "Lake Formation": "lakeformation",
    "RAM": "ram",
    "STS": "sts",
    "SNS": "sns",
    "Organizations": "organizations",
}


# --- reading the Containerfile -------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, rest = whole.partition(" ")
        found.append((keyword.upper(), rest.strip()))
    return found


def words(arguments: str) -> list[str]:
    """An instruction's arguments: JSON (exec) form or shell words."""
    if arguments.startswith("["):
        parsed = json.loads(arguments)
        return [str(w) for w in parsed]
    return shlex.split(arguments)


def copies(steps: list[tuple[str, str]]) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY/ADD from the build context."""
    out = []
    for keyword, arguments in steps:
        if keyword not in {"COPY", "ADD"}:
            continue
        args = words(arguments)
        if any(a.startswith("--from") for a in args):
            continue  # from another stage or image, not the context
        args = [a for a in args if not a.startswith("--")]
        out.append((args[:-1], args[-1]))
    return out


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` (or a folder above it) out of the build context."""
    parts = Path(path.rstrip("/")).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        anywhere = pattern.startswith("**/")
        bare = pattern[3:] if anywhere else pattern
        for candidate in candidates:
            tails = (
                ["/".join(Path(candidate).parts[i:]) for i in range(len(Path(candidate).parts))]
                if anywhere
                else [candidate]
            )
            if any(fnmatch.fnmatchcase(tail, bare) for tail in tails):
                return True
    return False


def dockerignore_patterns() -> list[str]:
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    return [ln.rstrip("/") for ln in lines if ln and not ln.startswith("#")]


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    return instructions(CONTAINERFILE.read_text())


def one(steps: list[tuple[str, str]], keyword: str) -> str:
    found = [arguments for k, arguments in steps if k == keyword]
    assert len(found) == 1, f"expected one {keyword} in {CONTAINERFILE}, found {len(found)}"
    return found[0]


def test_every_copy_source_exists_and_is_in_the_build_context(steps) -> None:
    # GIVEN the Containerfile's COPY instructions and the .dockerignore beside the context
    patterns = dockerignore_patterns()
    sources = [s for srcs, _ in copies(steps) for s in srcs]
    assert sources, "the Containerfile copies nothing"
    # THEN each source exists in the repository, and .dockerignore does not drop it
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
        assert not ignored(source, patterns), f"COPY {source}: .dockerignore excludes it"


def test_the_image_holds_what_the_app_runs_and_never_the_secrets_file(steps) -> None:
    # GIVEN what the image copies
    sources = {s.rstrip("/") for srcs, _ in copies(steps) for s in srcs}
    # THEN the app's frame, pages, package and committed Streamlit settings are there
    assert {"app.py", "pages", "mesh", ".streamlit/config.toml"} <= sources
    # AND never secrets.toml: not by name, not through its folder, not in the build context
    assert ".streamlit/secrets.toml" not in sources
    assert ".streamlit" not in sources and "." not in sources
    assert ignored(".streamlit/secrets.toml", dockerignore_patterns())
    for kept_out in (".venv", "tests", "benchmarks", "var/mesh.db", "x/y.db"):
        assert ignored(kept_out, dockerignore_patterns()), f".dockerignore lets {kept_out} in"


def test_the_image_installs_requirements_txt_and_nothing_else(steps) -> None:
    # GIVEN the RUN instructions that call pip
    installs = [a for k, a in steps if k == "RUN" and "pip install" in a]
    assert len(installs) == 1, "expected one pip install"
    args = shlex.split(installs[0].split("pip install", 1)[1].split("&&")[0])
    # THEN it installs exactly requirements.txt (no test tools, no extra package), copied in
    assert [a for a in args if not a.startswith("-")] == ["requirements.txt"], args
    assert args[args.index("requirements.txt") - 1] == "-r", args
    assert any("requirements.txt" in srcs for srcs, _ in copies(steps))
    assert "requirements-dev" not in CONTAINERFILE.read_text().replace(
        "the test tools are in requirements-dev.txt", ""
    )


def test_the_command_runs_streamlit_on_app_py_with_flags_streamlit_knows(steps) -> None:
    # GIVEN the image's command, its environment and its exposed port
    command = words(one(steps, "CMD"))
    assert command[:3] == ["python", "-m", "streamlit"], command
    # THEN the module it runs is importable, and the script it runs is in the image
    assert importlib.util.find_spec(command[2]) is not None
    assert command[3] == "run" and (ROOT / command[4]).is_file() and command[4] == "app.py"
    # AND every --flag is a Streamlit option, as are the STREAMLIT_* variables it sets
    options = streamlit_config.get_config_options()
    flags = dict(zip(command[5::2], command[6::2], strict=True))
    for flag in flags:
        assert flag.startswith("--") and flag[2:] in options, f"unknown Streamlit flag {flag}"
    env_vars = {o.env_var for o in options.values()}
    env = " ".join(a for k, a in steps if k == "ENV")
    for name in re.findall(r"\b(STREAMLIT_[A-Z_]+)=", env):
        assert name in env_vars, f"{name} is not a Streamlit setting"
    # AND the flags match the launcher's (headless, no usage stats), the port is the one exposed
    assert flags["--server.headless"] == "true"
    assert flags["--browser.gatherUsageStats"] == "false"
    assert one(steps, "EXPOSE").split() == [flags["--server.port"]]
    # AND uvicorn is told to leave the peer alone, as scripts/dev app does
    assert re.search(r'\bFORWARDED_ALLOW_IPS=""', env)
    assert "export FORWARDED_ALLOW_IPS=" in (ROOT / "scripts" / "dev").read_text()
    # AND it runs as someone other than root, in aws mode (never the demo's published passwords)
    assert one(steps, "USER") not in {"root", "0"}
    assert re.search(r"\bMESH_MODE=aws\b", env)


def test_the_health_check_asks_streamlit_s_health_endpoint_on_the_app_s_port(steps) -> None:
    # GIVEN the HEALTHCHECK's command and the app's port
    health = one(steps, "HEALTHCHECK")
    command = words(health[health.index("CMD") + 3 :].strip())
    port = words(one(steps, "CMD"))[words(one(steps, "CMD")).index("--server.port") + 1]
    # THEN it runs the image's own python (slim has no curl) against /_stcore/health there
    assert command[0] == "python" and command[1] == "-c"
    assert f"http://127.0.0.1:{port}/_stcore/health" in command[2]
    compile(command[2], "<healthcheck>", "exec")  # the one-liner is valid Python


def test_the_mesh_commands_the_containerfile_documents_exist() -> None:
    # GIVEN the `python -m mesh VERB` lines in the Containerfile's comments (tick, init)
    verbs = set(re.findall(r"python -m mesh (\w[\w-]*)", CONTAINERFILE.read_text()))
    assert {"tick", "init"} <= verbs
    # THEN `python -m mesh VERB --help` accepts each of them
    for verb in sorted(verbs):
        done = subprocess.run(
            [sys.executable, "-m", "mesh", verb, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"python -m mesh {verb}: {done.stderr[-400:]}"


# --- the README's IAM policy against the AWS calls in mesh/ ---------------------------------


def operations(service: str) -> dict[str, str]:
    """boto3 method name -> API action name, for one service (from botocore's own model)."""
    model = botocore.session.get_session().get_service_model(service)
    return {botocore.xform_name(op): op for op in model.operation_names}


def receiver_service(node: ast.expr) -> str | None:
    """The service a client variable is named after (``self._lf`` -> lakeformation)."""
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
    return RECEIVERS.get(name.lstrip("_").lower()) if isinstance(name, str) else None


def aws_actions(source: str) -> set[str]:
    """Every ``service:Action`` one module's source calls, or passes on to be called."""
    ops = {s: operations(s) for s in SERVICES}
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        # client.get_table(...), or client.batch_grant_permissions handed to a helper
        if isinstance(node, ast.Attribute) and (service := receiver_service(node.value)):
            if node.attr in ops[service]:
                found.add(f"{service}:{ops[service][node.attr]}")
        if not isinstance(node, ast.Call) or not node.args:
            continue
        first = node.args[0]
        # client.get_paginator("get_tables")
        if (
            isinstance(node.func, ast.Attribute)
            and node.func.attr == "get_paginator"
            and (service := receiver_service(node.func.value))
            and isinstance(first, ast.Constant)
            and first.value in ops[service]
        ):
            found.add(f"{service}:{ops[service][first.value]}")
        # call("Organizations", "ListAccounts", ...): mesh.aws.call names what it runs
        if (
            isinstance(node.func, ast.Name)
            and node.func.id == "call"
            and len(node.args) >= 2
            and isinstance(first, ast.Constant)
            and first.value in CALL_LABELS
            and isinstance(node.args[1], ast.Constant)
        ):
            service = CALL_LABELS[first.value]
            action = str(node.args[1].value)
            assert action in ops[service].values(), f"{service} has no operation {action}"
            found.add(f"{service}:{action}")
    return found


def app_modules() -> Iterator[Path]:
    """mesh/'s modules, but the demo's (it seeds the moto stand-in; it never runs in aws mode)."""
    for path in sorted((ROOT / "mesh").rglob("*.py")):
        if "demo" not in path.relative_to(ROOT / "mesh").parts:
            yield path


def clients_made() -> set[str]:
    """The services mesh/ builds a client for: ``factory.client("glue")``."""
    made = set()
    for path in app_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "client"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                made.add(str(node.args[0].value))
    return made


def readme_policy() -> dict:
    """The IAM policy JSON block of the README (the one with a Statement)."""
    blocks = re.findall(r"```json\n(.*?)```", README.read_text(), flags=re.DOTALL)
    policies = [json.loads(b) for b in blocks if '"Statement"' in b]
    assert len(policies) == 1, (
        f"expected one IAM policy JSON block in README.md, found {len(policies)}"
    )
    return policies[0]


def allowed(policy: dict) -> list[str]:
    actions: list[str] = []
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and statement.get("Resource")
        listed = statement["Action"]
        actions.extend([listed] if isinstance(listed, str) else listed)
    return actions


def uncovered(needed: set[str], policy: dict) -> set[str]:
    granted = allowed(policy)
    return {a for a in needed if not any(fnmatch.fnmatchcase(a, g) for g in granted)}


def test_the_readme_policy_is_valid_iam_json_with_real_actions() -> None:
    # GIVEN the README's policy
    policy = readme_policy()
    # THEN it is an IAM policy document whose every action names a real operation
    assert policy["Version"] == "2012-10-17"
    for action in allowed(policy):
        service, _, name = action.partition(":")
        if "*" in name or service not in SERVICES:
            continue
        assert name in operations(service).values(), f"{action} is not an {service} operation"


def test_the_readme_policy_allows_every_aws_call_in_mesh() -> None:
    # GIVEN every AWS call the app's modules make
    needed = set().union(*(aws_actions(p.read_text()) for p in app_modules()))
    # THEN the scan sees each service mesh/ makes a client for (it did not go blind) ...
    services_seen = {a.split(":")[0] for a in needed}
    assert clients_made() <= services_seen, (clients_made(), sorted(needed))
    assert clients_made() <= set(SERVICES), f"a client for a service not checked: {clients_made()}"
    # ... and the README's policy allows every one of them
    missing = uncovered(needed, readme_policy())
    assert not missing, f"add these to the IAM policy in README.md: {sorted(missing)}"


def test_a_new_aws_call_is_caught_by_the_scan() -> None:
    # GIVEN a module that makes a Lake Formation call the app does not make today
    source = "def f(self):\n    return self._lf.put_data_lake_settings(DataLakeSettings={})\n"
    # WHEN it is scanned
    found = aws_actions(source)
    # THEN the call is found, and the README's policy does not cover it
    assert found == {"lakeformation:PutDataLakeSettings"}
    assert uncovered(found, readme_policy()) == found
