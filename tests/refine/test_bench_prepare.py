"""A smoke run of benchmarks/bench_prepare.py (2,000 documents): generation, the bare read, the stage at 1/10 and at
full size, and 4 SPMD ranks giving the same document ids as 1 task. The full run (1M documents) is not a test."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_prepare_smoke(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/bench_prepare.py", "--docs", "2000", "--dir",
                           str(tmp_path / "bench")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2,000 vs 2,000 document ids, same set: True; shard bytes identical: True" in proc.stdout
    assert "| all | 2,000 |" in proc.stdout
