"""checkov on the rendered chart (default values, and every option on): the checks that fail are
exactly those the chart README lists, each with why it does not apply here. checkov lives in its
own virtualenv (.venv-checkov, from charts/checkov.lock: `make checkov`, built by `make test`),
since its pins clash with the project's; without it this test is skipped."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.charts.chart import CHART, REPO, VALUE_SETS, render_files

CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
SCANNED = ("defaults", "all-on")
ROW = re.compile(r"^\| (CKV2?_K8S_\d+) [^|]*\| ([^|]+) \| ([^|]*) \|$")


def documented(readme: str) -> dict[str, tuple[list[str], str]]:
    """check id -> (`Kind/name` or `Kind/name [value set]` entries, reason) from the README's table."""
    table = readme[readme.index("<!-- checkov:begin -->") : readme.index("<!-- checkov:end -->")]
    rows = [ROW.match(line) for line in table.splitlines() if line.startswith("| CKV")]
    assert all(rows), "a row of the checkov table does not parse"
    return {m[1]: ([e.strip() for e in m[2].split(",")], m[3].strip()) for m in rows}


def expected_failures(readme: str, rendered: dict[str, set[str]]) -> set[tuple[str, str, str]]:
    """(check, value set, Kind/name) for every listed resource in each scanned value set rendering it."""
    out = set()
    for check, (entries, _) in documented(readme).items():
        for entry in entries:
            resource, _, only = entry.partition(" [")
            for value_set in SCANNED:
                if resource in rendered[value_set] and only.rstrip("]") in ("", value_set):
                    out.add((check, value_set, resource))
    return out


def test_checkov_fails_only_the_documented_checks(tmp_path):
    if not CHECKOV.exists():
        pytest.skip("checkov is not installed: `make checkov` builds .venv-checkov from charts/checkov.lock")
    rendered = {}
    for value_set in SCANNED:
        files = render_files(VALUE_SETS[value_set])
        text = "\n---\n".join(t for path, t in sorted(files.items()) if path.endswith(".yaml"))
        (tmp_path / f"{value_set}.yaml").write_text(text)
        rendered[value_set] = set(re.findall(r"(?m)^kind: (\w+)\nmetadata:\n  name: (\S+)", text))
        rendered[value_set] = {f"{kind}/{name}" for kind, name in rendered[value_set]}
    start = time.monotonic()
    result = subprocess.run([str(CHECKOV), "--directory", str(tmp_path), "--framework", "kubernetes",
                             "--skip-download", "--quiet", "--output", "json"], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert time.monotonic() - start < 60
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: some check failed
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert [r["check_type"] for r in reports] == ["kubernetes"]
    summary = reports[0]["summary"]
    assert summary["parsing_errors"] == 0 and summary["passed"] > 100  # it did look at the chart
    failed = set()
    for check in reports[0]["results"]["failed_checks"]:
        kind, _namespace, name = check["resource"].split(".", 2)
        failed.add((check["check_id"], Path(check["file_path"]).stem, f"{kind}/{name}"))

    readme = (CHART / "README.md").read_text()
    assert failed == expected_failures(readme, rendered)
    assert all(len(reason) > 20 for _, reason in documented(readme).values())
