"""The distribution holds the product only, under its license, and installs into a clean venv
where ``hwcompress --version`` runs (issue 16 item 5).

The wheel is built from a copy of the source tree (so the repository gets no build/ folder) with
the build backend already in .venv (no network). The clean venv is a new ``python -m venv``
without pip or system packages; the heavy dependencies (torch, Ray, ...) reach it through one
.pth line naming .venv's site-packages (installing torch afresh would take many minutes), and the
wheel itself goes in with ``pip --python NEWVENV install --no-deps``, so the hwcompress it runs
is the installed wheel's, not the repository's editable one (checked)."""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from services.version import VERSION

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("automl", "agents", "latency_models", "services")


def _copy_source(dst: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in (*PRODUCT, "bench"):  # bench too: it must be left out by the config, not by us
        shutil.copytree(ROOT / name, dst / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, dst / name)


def test_wheel_holds_the_product_and_installs_into_a_clean_venv(tmp_path):
    src, dist, venv = tmp_path / "src", tmp_path / "dist", tmp_path / "venv"
    _copy_source(src)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist), str(src)], check=True, timeout=300, cwd=tmp_path)
    (wheel,) = dist.glob("hwcompress-*.whl")

    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {*PRODUCT, f"hwcompress-{VERSION}.dist-info"}, tops
    assert not [n for n in names if "bench" in n.split("/")[0] or "/results/" in n or n.startswith("tests/")]
    assert "services/proto/hwcompress/v1/service.proto" in names
    info = f"hwcompress-{VERSION}.dist-info"
    license_text = zipfile.ZipFile(wheel).read(f"{info}/licenses/LICENSE").decode()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    meta = email.parser.Parser().parsestr(zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode())
    assert meta["License-Expression"] == "Apache-2.0"
    assert zipfile.ZipFile(wheel).read(f"{info}/top_level.txt").decode().split() == sorted(PRODUCT)

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    vpy = venv / "bin" / "python"
    vsite = Path(subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                check=True, capture_output=True, text=True).stdout.strip())
    (vsite / "_hwcompress_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(vpy), "install", "--no-deps", "-q",
                    str(wheel)], check=True, timeout=300, cwd=tmp_path)

    run = dict(capture_output=True, text=True, timeout=300, cwd=tmp_path)  # not the repo's cwd
    proc = subprocess.run([str(venv / "bin" / "hwcompress"), "--version"], **run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == f"hwcompress {VERSION}"
    where = subprocess.run([str(vpy), "-c", "import services, importlib.util as u; print(services.__file__); "
                            "print(u.find_spec('bench'))"], **run)
    file_, bench = where.stdout.split()
    assert Path(file_).is_relative_to(venv), file_
    assert bench == "None", "a top-level 'bench' is importable from the install"
