"""`make demo` end to end, so that the README's one command for newcomers cannot rot unseen.

It runs exactly what `make demo` runs (``python -m tests.kernel.demo``): the guest with the real
agent and the kubelet stand-in, KMock and the real operator process on this host. The demo
exits non-zero unless the operator's restart was carried out, the unguarded twin was
OOM-killed and no guarded pod was; on top of that the test holds the summary to its own
claims: page cache reclaimed, shop-api rolled out at least the spec's rolloutSeconds before
the twin's kill, and the agent running as the chart runs it (uid 0, no capabilities).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from tests.kernel.demo import BATCH, ROLLOUT_SECONDS
from tests.kernel.evidence import agent_credentials, assert_runs_as_the_chart_runs_the_agent
from tests.kernel.rig import REPO_ROOT, WORK_DIR

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(1800)]

DEMO_TIMEOUT_SECONDS = 1500  # the demo's own guest timeout is 1200 s, after a boot of a minute
TRANSCRIPT_LINES = 40


def test_make_demo_prevents_the_oom_kill_it_shows(rig):
    result = subprocess.run(
        [sys.executable, "-m", "tests.kernel.demo"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        check=False,
    )
    run_dir = WORK_DIR / "runs" / BATCH
    transcript = result.stdout + result.stderr
    if run_dir.is_dir():  # kept beside the operator's and the agent's logs
        (run_dir / "transcript.txt").write_text(transcript)
    tail = "\n".join(transcript.splitlines()[-TRANSCRIPT_LINES:])
    assert result.returncode == 0, f"make demo exited {result.returncode}:\n{tail}"
    assert "=== summary ===" in result.stdout, tail
    summary = result.stdout.split("=== summary ===", 1)[1]
    assert "FAILED:" not in summary, summary

    reclaimed = re.search(r"^reclaimed: ([\d.]+) MiB of page cache .* from catalog-", summary, re.M)
    assert reclaimed and float(reclaimed.group(1)) > 0, summary
    assert re.search(r"^restarted: deployment/shop-api \(pod shop-api-[0-9a-f]+-", summary, re.M), summary
    outcome = re.search(
        r"^=> shop-api was rolled out at age (\d+) s, (-?\d+) s before the OOM kill would have come "
        r"\(rollout budget (\d+) s\); guarded pods OOM-killed: (\d+)$",
        summary,
        re.M,
    )
    assert outcome, summary
    lead_seconds, budget_seconds, guarded_kills = (int(outcome.group(i)) for i in (2, 3, 4))
    assert budget_seconds == ROLLOUT_SECONDS
    assert lead_seconds >= ROLLOUT_SECONDS, summary
    assert guarded_kills == 0

    assert_runs_as_the_chart_runs_the_agent(agent_credentials(run_dir))
