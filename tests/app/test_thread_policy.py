"""The app server's torch thread policy: one intra-op thread for every session's work.

Each check runs the app's landing page in a fresh interpreter whose torch was set to 3 threads
first (torch's default is the number of cores, which may be 1 here): the page must bring it to
the policy's count in every thread that starts torch work afterwards, as the server's next
script runs do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import threading, torch
from streamlit.testing.v1 import AppTest
torch.set_num_threads(3)
before = torch.get_num_threads()
at = AppTest.from_file("app.py", default_timeout=60)
at.run()
assert not at.exception, at.exception
seen = []
worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
worker.start()
worker.join()
print(before, seen[0])
"""


def _threads(**env: str) -> tuple[int, int]:
    """(torch's threads before the app ran, threads in a new thread after it ran)."""
    base = {k: v for k, v in os.environ.items() if k != "PRUNELAB_APP_THREADS"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = (int(n) for n in done.stdout.split()[-2:])
    return before, after


def test_the_app_runs_torch_on_one_thread_per_session():
    assert _threads() == (3, 1)


def test_the_thread_count_can_be_raised_for_a_dedicated_server():
    assert _threads(PRUNELAB_APP_THREADS="2") == (3, 2)
