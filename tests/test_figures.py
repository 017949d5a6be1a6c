"""Lesson figures: every image a lesson links exists and is drawn by a tagged notebook cell, and
`python lessons/make_figures.py` makes them."""
import json
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "lessons").glob("*.md"))
LINK = re.compile(r"!\[[^\]]*\]\(figures/([^)]+)\.png\)")
PNG = b"\x89PNG\r\n\x1a\n"


def tagged(path):
    """Figure names a notebook's tagged cells draw (see lessons/make_figures.py)."""
    cells = json.loads(path.read_text())["cells"]
    return [t[len("figure:"):] for c in cells for t in c.get("metadata", {}).get("tags", [])
            if t.startswith("figure:")]


DRAWN = {name: nb for nb in sorted((ROOT / "notebooks").glob("*.ipynb")) for name in tagged(nb)}


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_every_linked_figure_exists_and_is_drawn_by_a_notebook(lesson):
    names = LINK.findall(lesson.read_text())
    if int(lesson.name[:2]) >= 3:
        assert names, f"{lesson.name} links no figure; from chapter 3 on each lesson shows its key figures"
    for name in names:
        png = ROOT / "lessons" / "figures" / f"{name}.png"
        assert name in DRAWN, f"{lesson.name} links figures/{name}.png, but no notebook cell is tagged figure:{name}"
        assert png.is_file(), f"{lesson.name} links {png.name}, which is missing: run python lessons/make_figures.py"
        assert png.read_bytes()[:8] == PNG, f"{png.name} is not a PNG file"


def test_every_drawn_figure_is_committed():
    missing = [name for name in DRAWN if not (ROOT / "lessons" / "figures" / f"{name}.png").is_file()]
    assert not missing, f"tagged but not made: {missing}; run python lessons/make_figures.py"


def test_make_figures_draws_a_notebooks_figures(tmp_path):
    for module in ("matplotlib", "nbclient", "nbformat", "ipykernel"):
        pytest.importorskip(module, reason=f"{module} is in the dev extra")
    nb = ROOT / "notebooks" / "03-where-the-memory-goes.ipynb"
    run = subprocess.run([sys.executable, str(ROOT / "lessons" / "make_figures.py"), str(nb), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    made = sorted(p.stem for p in tmp_path.glob("*.png"))
    assert made == sorted(tagged(nb)) and len(made) == 3, (made, run.stdout)
    assert all(p.read_bytes()[:8] == PNG for p in tmp_path.glob("*.png"))
