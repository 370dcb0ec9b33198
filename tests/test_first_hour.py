"""A researcher's first hour: the README's install-and-run command, exactly as written, in a copy of the
tracked files with nothing beside it; `~` and relative paths; moved results directories; clear errors
for damaged files."""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from lingua_jax import checkpoints, pipeline
from lingua_jax.config import tiny_random

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The command lines of the README's first bash block (install and run, then the tests)."""
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def summary_links(summary: Path) -> list[str]:
    """Every link and image target of a summary page."""
    return re.findall(r"\]\(([^)\s]+)\)", summary.read_text())


def assert_links_resolve(summary: Path) -> None:
    links = summary_links(summary)
    assert len(links) >= 9, links  # tables (csv, json, md) and figures
    for link in links:
        assert not Path(link).is_absolute(), link
        assert (summary.parent / link).is_file(), f"{summary}: {link} does not resolve"


@pytest.fixture(scope="module")
def bare_copy(tmp_path_factory):
    """The tracked files (git ls-files) copied into an empty folder, so nothing (no ../shared, no
    results, no build output) is beside or inside it. Its .venv sees this environment's packages
    through a .pth file, so the README's `pip install -e ".[test]"` finds its requirements installed
    and only installs the copy itself."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the tracked files are unknown")
    root = tmp_path_factory.mktemp("clone") / "lingua_jax"
    for name in listed.stdout.decode().split("\0"):
        if name and (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    subprocess.run([sys.executable, "-m", "venv", str(root / ".venv")], check=True)
    (site_packages,) = (root / ".venv" / "lib").glob("python3*/site-packages")
    (site_packages / "_this_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return root


def user_env(home: Path) -> dict[str, str]:
    """A user's environment: their own (empty) home, no test-only XLA flags, no data directory set;
    pip keeps this machine's download cache."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "LINGUA_JAX_DATA_DIR", "VIRTUAL_ENV", "PYTHONPATH")}
    cache = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True)
    if cache.returncode == 0 and cache.stdout.strip():
        env["PIP_CACHE_DIR"] = cache.stdout.strip()
    env.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return env


def test_readme_run_command_in_a_bare_copy(bare_copy, tmp_path):
    install_and_run = readme_commands()[0]
    assert "launch/analyze.py" in install_and_run and "pip install" in install_and_run
    done = subprocess.run(["bash", "-c", install_and_run], cwd=bare_copy, env=user_env(tmp_path / "home"),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    summary = Path(re.search(r"^results: (.+)$", done.stdout, re.M).group(1))
    assert summary == bare_copy / "results" / "demo" / "report" / "summary.md"
    assert_links_resolve(summary)
    text = summary.read_text()
    assert "XStoryCloze was skipped" in text and "fetch_data.py" in text  # the new user has no data yet
    for section in ("**steering: share of continuations in the target language", "**methods: perplexity increase",
                    "**generations: share of continuations in the prompt's language"):  # the demo's beyond-paper stages
        assert section in text, section
    moved = tmp_path / "elsewhere" / "demo-results"
    shutil.move(bare_copy / "results" / "demo", moved)
    assert_links_resolve(moved / "report" / "summary.md")


def test_tilde_and_relative_paths_resolve_once(tmp_path, monkeypatch):
    """`~` is the home directory (no literal ./~), relative paths are taken against the working
    directory when the run starts, and every recorded path is relative to the results directory."""
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    config = tiny_random("bloom")
    config.results_dir = "~/runs/tiny"
    config.data_dir = "data"  # relative: work/data
    analysis = pipeline.Analysis(config)
    assert analysis.results == home / "runs" / "tiny"
    assert analysis.config.xstorycloze.path == str(work / "data" / "xstorycloze")
    monkeypatch.chdir(tmp_path)  # a later change of directory changes nothing
    outputs = analysis.run(["extract", "metrics", "report"])
    assert not (work / "~").exists() and not (tmp_path / "~").exists()
    assert outputs["report"]["summary"] == "report/summary.md"
    recorded = json.loads((home / "runs" / "tiny" / "metrics" / "done.json").read_text())["outputs"]
    assert recorded["tables"]["layerwise"]["csv"] == "metrics/layerwise.csv"
    assert_links_resolve(home / "runs" / "tiny" / "report" / "summary.md")


def test_damaged_files_are_named(checkpoint, tmp_path):
    source = checkpoint("bloom")
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    (broken / "config.json").write_text('{"model_type": "bloom", ')
    with pytest.raises(ValueError, match=r"broken/config.json is not valid JSON .*damaged or truncated"):
        checkpoints.load_config(broken)
    shutil.copy2(source / "config.json", broken / "config.json")
    weights = (source / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ValueError, match=r"broken/model.safetensors is not a readable safetensors file"):
        checkpoints.TensorReader(broken)
    (tmp_path / "a_file").write_text("")
    config = tiny_random("bloom")
    config.results_dir = str(tmp_path / "a_file")
    with pytest.raises(NotADirectoryError, match=r"results_dir='.*a_file' is a file, not a directory"):
        pipeline.Analysis(config)


def test_damaged_stage_records(tmp_path, caplog):
    """A truncated done.json means the stage runs again (said in the log); a truncated metadata.json
    of the activation store is an error naming it when read, and a reason to extract again when the
    extract stage checks its store."""
    from lingua_jax import extract

    config = tiny_random("bloom")
    config.results_dir = str(tmp_path)
    pipeline.Analysis(config).run(["extract", "metrics"])
    marker = tmp_path / "metrics" / "done.json"
    marker.write_text(marker.read_text()[:20])
    with caplog.at_level("WARNING"):
        pipeline.Analysis(config).run(["extract", "metrics"])
    assert "metrics/done.json is not valid JSON" in caplog.text and "stage metrics runs again" in caplog.text
    assert json.loads(marker.read_text())["key"]
    metadata = tmp_path / "extract" / "metadata.json"
    metadata.write_text(metadata.read_text()[:30])
    with pytest.raises(FileNotFoundError, match=r"extract/metadata.json is not valid JSON"):
        extract.load(tmp_path / "extract")
    caplog.clear()
    with caplog.at_level("INFO"):
        pipeline.Analysis(config).run(["extract"])
    assert "stage extract: runs again: " in caplog.text and "metadata.json is not valid JSON" in caplog.text
    assert extract.load(tmp_path / "extract").acts.shape[0] == 9 * 12
