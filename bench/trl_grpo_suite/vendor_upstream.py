#!/usr/bin/env python
"""Copy TRL's GRPO test files (and the generator scripts the fixtures run) out of a TRL git checkout or bare
mirror into ``upstream/``, byte for byte, and record where they came from in ``upstream/SOURCE.json``.

    python vendor_upstream.py --git-dir /path/to/trl/.git --rev v1.16.0 [--dest upstream]

Files taken at ``REV``: ``tests/{__init__,conftest,testing_utils,testing_constants,test_grpo_trainer}.py``,
``scripts/generate_zen{,_image,_multi_image}_dataset.py`` and
``scripts/generate_tiny_models/for_causal_lm/_remote_code/{configuration,modeling}_remote.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = {
    "tests/__init__.py": "tests/__init__.py",
    "tests/conftest.py": "tests/conftest.py",
    "tests/testing_utils.py": "tests/testing_utils.py",
    "tests/testing_constants.py": "tests/testing_constants.py",
    "tests/test_grpo_trainer.py": "tests/test_grpo_trainer.py",
    "scripts/generate_zen_dataset.py": "scripts/generate_zen_dataset.py",
    "scripts/generate_zen_image_dataset.py": "scripts/generate_zen_image_dataset.py",
    "scripts/generate_zen_multi_image_dataset.py": "scripts/generate_zen_multi_image_dataset.py",
    "scripts/generate_tiny_models/for_causal_lm/_remote_code/configuration_remote.py":
        "scripts/generate_tiny_models/_remote_code/configuration_remote.py",
    "scripts/generate_tiny_models/for_causal_lm/_remote_code/modeling_remote.py":
        "scripts/generate_tiny_models/_remote_code/modeling_remote.py",
}


def git(git_dir: str, *args: str) -> bytes:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True, check=True).stdout


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--git-dir", required=True)
    p.add_argument("--rev", required=True)
    p.add_argument("--dest", type=Path, default=HERE / "upstream")
    p.add_argument("--note", default="", help="free text stored in SOURCE.json")
    a = p.parse_args(argv)
    sha = git(a.git_dir, "rev-parse", f"{a.rev}^{{commit}}").decode().strip()
    date = git(a.git_dir, "log", "-1", "--format=%cI", sha).decode().strip()
    try:
        version = git(a.git_dir, "show", f"{sha}:VERSION").decode().strip()
    except subprocess.CalledProcessError:
        version = None
    files = {}
    for src, dst in FILES.items():
        data = git(a.git_dir, "show", f"{sha}:{src}")
        out = a.dest / dst
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        files[dst] = {"upstream_path": src, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    src = {
        "repo": "https://github.com/huggingface/trl",
        "rev": a.rev,
        "commit": sha,
        "commit_date": date,
        "VERSION": version,
        "summary": f"huggingface/trl@{sha[:10]} ({a.rev}, VERSION {version}, {date[:10]})",
        "note": a.note,
        "files": files,
    }
    (a.dest / "SOURCE.json").write_text(json.dumps(src, indent=2) + "\n")
    print(json.dumps({k: v for k, v in src.items() if k != "files"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
