"""Build the course as a static site: every lesson, and every notebook executed with its plots.

    python -m pip install ".[docs]"
    python lessons/build_site.py                 # -> build/site/index.html, opens from the disk
    python lessons/build_site.py --out /tmp/site --only 05   # just chapter 5 (and the home page)

MkDocs renders the lessons; mkdocs-jupyter executes the notebooks while it renders them, so a
notebook that raises stops the build. Nothing is fetched from the network: the pages use no web
fonts and link files by relative paths, so the site works from file://.
"""
import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHAPTER = re.compile(r"^(\d+b?)-")


def title(path):
    """The first heading of a lesson, e.g. '5 · √L placement'."""
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem


def chapters(only=None):
    """(lesson, its notebook or None) for every chapter (or those numbered in ``only``), in order."""
    notebooks = {CHAPTER.match(p.name).group(1): p for p in (ROOT / "notebooks").glob("*.ipynb")}
    return [(p, notebooks.get(CHAPTER.match(p.name).group(1)))
            for p in sorted((ROOT / "lessons").glob("*.md"))
            if CHAPTER.match(p.name) and (not only or CHAPTER.match(p.name).group(1) in only)]


def stage(src, only=None):
    """Lay out the site's sources: lessons/ (with figures/), notebooks/, exercises.md and index.md."""
    shutil.copytree(ROOT / "lessons" / "figures", src / "lessons" / "figures")
    (src / "notebooks").mkdir()
    toc, nav = [], []
    for lesson, notebook in chapters(only):
        shutil.copy(lesson, src / "lessons" / lesson.name)
        entry = [{"Lesson": f"lessons/{lesson.name}"}]
        line = f"- [{title(lesson)}](lessons/{lesson.name})"
        if notebook is not None:
            shutil.copy(notebook, src / "notebooks" / notebook.name)
            entry.append({"Notebook": f"notebooks/{notebook.name}"})
            line += f" · [notebook](notebooks/{notebook.name})"
        nav.append({title(lesson): entry})
        toc.append(line)
    shutil.copy(ROOT / "exercises" / "README.md", src / "exercises.md")
    (src / "index.md").write_text(
        "# minigrad: the course\n\n"
        "Where training memory goes, and how activation checkpointing trades compute for it. Each "
        "chapter is a lesson and a notebook; the notebooks on this site were executed when it was "
        "built, so every plot and number is the one the code printed.\n\n" + "\n".join(toc) +
        "\n\nBuild-it exercises: [exercises](exercises.md).\n")
    return [{"Home": "index.md"}] + nav + [{"Exercises": "exercises.md"}]


def config(src, out, nav):
    """mkdocs.yml for the staged sources (JSON is valid YAML)."""
    import json
    return json.dumps({
        "site_name": "minigrad course",
        "docs_dir": str(src), "site_dir": str(out),
        "use_directory_urls": False,            # pages are files, so the site opens from the disk
        "theme": {"name": "material", "font": False},   # no web fonts: nothing is fetched
        "nav": nav,
        "markdown_extensions": ["tables", "fenced_code", "attr_list"],
        "plugins": ["search", {"mkdocs-jupyter": {"execute": True, "allow_errors": False,
                                                  "include_source": True, "ignore_h1_titles": True}}],
        "validation": {"links": {"not_found": "ignore"}},
    })


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "build" / "site", help="folder for the site")
    ap.add_argument("--only", nargs="+", metavar="CHAPTER", help="build only these chapters, e.g. 05 07b")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "docs"
        src.mkdir()
        nav = stage(src, args.only)
        cfg = pathlib.Path(tmp) / "mkdocs.yml"
        cfg.write_text(config(src, out, nav))
        env = dict(os.environ, MPLBACKEND="module://matplotlib_inline.backend_inline",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        # run from the temporary folder: mkdocs-jupyter keeps its cache under the working directory
        run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--clean", "-f", str(cfg)], env=env, cwd=tmp)
    if run.returncode:
        return run.returncode
    print(f"site: {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
