"""README.md and docs/: the README stays a five-minute read with the two fresh-machine commands on
its first screen, and every link and benchmark command in the documentation points at something
that exists."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("bash scripts/setup.sh && .venv/bin/python image_to_video.py --SVD.config=configs/demo/tiny_random.yaml",
            "bash scripts/setup.sh --test && .venv/bin/python -m pytest -q tests")


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def documents():
    docs = sorted(f"docs/{n}" for n in os.listdir(os.path.join(ROOT, "docs")) if n.endswith(".md"))
    return ["README.md"] + docs


def test_readme_is_short_with_the_two_commands_first():
    lines = read("README.md").splitlines()
    assert len(lines) < 300, f"README.md has {len(lines)} lines: move detail to docs/"
    first_screen = "\n".join(lines[:40])
    for command in COMMANDS:
        assert command in first_screen, command


def test_links_resolve():
    broken = []
    for rel in documents():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", read(rel)):
            if re.match(r"^[a-z]+://", target) or target.startswith("mailto:"):
                continue
            if not os.path.exists(os.path.normpath(os.path.join(ROOT, os.path.dirname(rel), target))):
                broken.append(f"{rel} -> {target}")
    assert not broken, "links to nothing:\n  " + "\n  ".join(broken)


def test_benchmark_commands_name_benchmarks_that_exist():
    missing = sorted({f"{rel}: benchmarks.{name}" for rel in documents()
                      for name in re.findall(r"python -m\s+benchmarks\.(\w+)", read(rel))
                      if not os.path.isfile(os.path.join(ROOT, "benchmarks", f"{name}.py"))})
    assert not missing, missing
    stale = sorted({rel for rel in documents() if re.search(r"python benchmarks/\w+\.py", read(rel))})
    assert not stale, f"benchmarks run as files cannot import their package (use python -m): {stale}"
