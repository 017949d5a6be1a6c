"""The course site builds (lessons/build_site.py) and a chapter renders in headless Chromium with its
figures and no error output."""
import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHAPTER = "05"
LESSON, NOTEBOOK = "05-sqrt-placement", "05-sqrt-placement"
# Chromium without a display, a sandbox, a GPU or any network traffic of its own
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--no-first-run", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.site


def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    return exe


def dom(exe, page, tmp_path):
    """The page's DOM after Chromium has loaded and laid it out."""
    profile = tmp_path / "chromium-profile"
    out = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "<body" in out.stdout, out.stderr[-2000:]
    return out.stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    chromium()                          # skip before building when there is no browser to load it in
    for module in ("mkdocs", "mkdocs_jupyter", "matplotlib", "ipykernel"):
        pytest.importorskip(module, reason=f"{module} is in the docs extra (pip install '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run([sys.executable, str(ROOT / "lessons" / "build_site.py"), "--out", str(out),
                          "--only", CHAPTER], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return out


def test_the_lesson_page_shows_its_figures(site, tmp_path):
    html = dom(chromium(), site / "lessons" / f"{LESSON}.html", tmp_path)
    linked = re.findall(r"figures/([\w.-]+\.png)", (ROOT / "lessons" / f"{LESSON}.md").read_text())
    shown = re.findall(r'<img[^>]*src="figures/([\w.-]+\.png)"', html)
    assert linked and sorted(shown) == sorted(linked), (linked, shown)
    assert all((site / "lessons" / "figures" / name).is_file() for name in shown)


def test_the_notebook_page_was_executed_with_its_plots_and_no_errors(site, tmp_path):
    html = dom(chromium(), site / "notebooks" / f"{NOTEBOOK}.html", tmp_path)
    cells = json.loads((ROOT / "notebooks" / f"{NOTEBOOK}.ipynb").read_text())["cells"]
    drawn = sum(t.startswith("figure:") for c in cells for t in c.get("metadata", {}).get("tags", []))
    plots = re.findall(r'<img[^>]*src="data:image/png;base64,', html)
    assert drawn and len(plots) >= drawn, f"{len(plots)} plots on the page, {drawn} figure cells"
    errors = re.findall(r'<div[^>]*data-mime-type="application/vnd\.jupyter\.stderr"', html)
    assert not errors and "Traceback (most recent call last)" not in html, "an error cell was rendered"
    assert "smallest measured peak" in html, "the page should show the notebook's printed outputs"
