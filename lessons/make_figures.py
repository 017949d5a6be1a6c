"""Run the notebooks and save each figure a `figure:NAME` cell draws as lessons/figures/NAME.png.

    python lessons/make_figures.py                      # every notebook
    python lessons/make_figures.py notebooks/05-*.ipynb --out /tmp/figures

A code cell is tagged in its metadata (`"tags": ["figure:05-u-curve"]`) and must draw exactly one
figure; the PNG is the image the notebook itself displays, so no lesson figure is made by hand.
"""
import argparse
import base64
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIGURES = ROOT / "lessons" / "figures"
TAG = "figure:"
# figures at a resolution that reads well in a lesson, cropped to what is drawn
PREAMBLE = "%config InlineBackend.print_figure_kwargs = {'dpi': 110, 'bbox_inches': 'tight'}"


def figure_names(nb):
    """(cell index, figure name) for every tagged code cell of a notebook."""
    return [(i, tag[len(TAG):]) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for tag in cell.metadata.get("tags", []) if tag.startswith(TAG)]


def run(path, out):
    """Execute one notebook and write its tagged figures into `out`; returns the names written."""
    import nbclient
    import nbformat
    nb = nbformat.read(path, as_version=4)
    names = figure_names(nb)
    nb.cells.insert(0, nbformat.v4.new_code_cell(PREAMBLE))
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    written = []
    for i, name in names:
        pngs = [o["data"]["image/png"] for o in nb.cells[i + 1].outputs if "image/png" in o.get("data", {})]
        if len(pngs) != 1:
            raise SystemExit(f"{path.name}: the cell tagged {TAG}{name} drew {len(pngs)} figures; "
                             f"it must draw exactly one (end it with plt.show())")
        (out / f"{name}.png").write_bytes(base64.b64decode(pngs[0]))
        written.append(name)
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=pathlib.Path,
                    help="notebooks to run (default: every notebook under notebooks/)")
    ap.add_argument("--out", type=pathlib.Path, default=FIGURES, help="folder for the PNGs")
    args = ap.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    args.out.mkdir(parents=True, exist_ok=True)
    # the kernels import this checkout's minigrad and draw inline, whatever the caller's settings
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    for path in paths:
        start = time.perf_counter()
        names = run(path, args.out)
        print(f"{path.name}: {len(names)} figure(s) in {time.perf_counter() - start:.1f} s: {', '.join(names)}")


if __name__ == "__main__":
    sys.exit(main())
