"""What a fresh interpreter imports: `modules_after`, for the tests that keep an entry
point's imports light (an agent, a registration, a run's launcher)."""

import os
import subprocess
import sys


def modules_after(code: str) -> set[str]:
    """The names in `sys.modules` of a fresh interpreter (this one's, on this one's
    `sys.path`, as the images run it) after it runs `code`. CalledProcessError if it fails."""
    probe = f"import sys\n{code}\nprint(' '.join(sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    return set(done.stdout.split())
