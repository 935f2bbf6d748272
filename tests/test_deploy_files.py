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
