"""The files operators deploy from (deploy/): they parse, and they name what
exists."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ALERTS = DEPLOY / "prometheus" / "helpdesk-alerts.yml"
OPERATIONS = DEPLOY.parent / "docs" / "operations.md"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: `make install-test` installs it")
        pytest.skip("promtool not installed (Debian's prometheus package)")
    return found


def test_the_alert_rules_are_valid():
    result = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_fire_when_they_should():
    result = subprocess.run(
        [promtool(), "test", "rules", "helpdesk-alerts.test.yml"],
        cwd=ALERTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_use_only_documented_metrics():
    documented = OPERATIONS.read_text()
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            for name in re.findall(r"helpdesk_[a-z_]+", rule["expr"]):
                family = name.removesuffix("_total")
                assert f"`{family}" in documented, f"{rule['alert']}: {name}"


def test_the_nginx_config_is_valid_for_nginx(tmp_path):
    nginx = shutil.which("nginx")
    if nginx is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is missing: `make install-test` installs it")
        pytest.skip("nginx not installed (Debian's nginx package)")
    config = tmp_path / "nginx.conf"
    config.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "events {}\n"
        f"http {{\naccess_log off;\ninclude {DEPLOY / 'nginx' / 'helpdesk.conf'};\n}}\n"
    )
    result = subprocess.run(
        [nginx, "-t", "-q", "-c", str(config), "-p", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_the_units_run_the_launchers_commands():
    from helpdesk.processes import production_commands

    units = {
        name: (DEPLOY / "systemd" / f"helpdesk-{name}.service").read_text()
        for name in ("web", "worker", "beat")
    }
    for command in production_commands(cores=2, proxy="10.0.0.2"):
        exec_start = next(
            line
            for line in units[command.name].splitlines()
            if line.startswith("ExecStart=")
        )
        program, *arguments = command.argv
        assert exec_start.split("/")[-1].startswith(program)
        assert " ".join(arguments) in exec_start
