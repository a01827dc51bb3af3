"""`tokensmith scan`: finds real secrets offline by format and checksum, respects .gitignore."""

import os
import subprocess
import sys

import pytest

from tokensmith import secrets
from tokensmith.leaks.scan import iter_files, scan_file


@pytest.fixture
def tree(tmp_path):
    real = [secrets.generate() for _ in range(3)]
    bad = real[0][:-1] + ("x" if real[0][-1] != "x" else "y")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "settings.py").write_text(f'API = "x"\nTOKEN = "{real[0]}"\n# look-alike {bad}\n')
    (tmp_path / "README.md").write_text(f"use tsm_notarealtoken\n\n\nexport T={real[1]}\n")
    (tmp_path / ".gitignore").write_text("build/\n*.log\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "out.txt").write_text(real[2])
    (tmp_path / "debug.log").write_text(real[2])
    (tmp_path / "src" / ".gitignore").write_text("local.env\n")
    (tmp_path / "src" / "local.env").write_text(real[2])
    (tmp_path / "blob.bin").write_bytes(b"\0\1" + real[2].encode())
    return tmp_path, real, bad


def test_scan_finds_real_secrets_with_their_lines(tree):
    root, real, _ = tree
    found = [(f.path.relative_to(root).as_posix(), f.line, f.secret) for f in
             (x for p in iter_files([root]) for x in scan_file(p))]
    assert sorted(found) == [("README.md", 4, real[1]), ("src/settings.py", 2, real[0])]


def test_gitignored_files_are_not_scanned(tree):
    root, _, _ = tree
    names = {p.relative_to(root).as_posix() for p in iter_files([root])}
    assert "debug.log" not in names and "build/out.txt" not in names and "src/local.env" not in names
    assert {"README.md", "src/settings.py", ".gitignore"} <= names


def test_cli_prints_file_line_and_masks_the_secret(tree):
    root, real, bad = tree
    result = subprocess.run([sys.executable, "-m", "tokensmith", "scan", str(root)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"{root / 'src' / 'settings.py'}:2: {secrets.mask(real[0])}" in result.stdout
    assert f"{root / 'README.md'}:4: {secrets.mask(real[1])}" in result.stdout
    for secret in (*real, bad):
        assert secret not in result.stdout + result.stderr


def test_cli_exits_0_on_a_clean_tree(tmp_path):
    (tmp_path / "a.txt").write_text("nothing here tsm_" + "A" * 38)
    result = subprocess.run([sys.executable, "-m", "tokensmith", "scan", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_large_trees_show_a_progress_bar_on_a_terminal(tmp_path):
    for n in range(600):
        (tmp_path / f"f{n}.txt").write_text("x\n")
    leak = secrets.generate()
    (tmp_path / "f7.txt").write_text(f"x\n{leak}\n")
    env = {**os.environ, "FORCE_COLOR": "1"}  # rich then treats stderr as a terminal
    result = subprocess.run([sys.executable, "-m", "tokensmith", "scan", str(tmp_path)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    assert "scanning" in result.stderr
    assert f"f7.txt:2: {secrets.mask(leak)}" in result.stdout
    assert "1 secret found in 600 files scanned" in result.stderr
