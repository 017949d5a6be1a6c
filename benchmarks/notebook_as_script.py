"""Run a notebook's code cells in order as one script, printing what they print (for machines without Jupyter).

    python benchmarks/notebook_as_script.py notebooks/08-on-the-gpu.ipynb

The GPU machines the project is measured on have no nbformat/nbclient; this runs the same cells
(figures drawn with matplotlib's Agg backend, not shown), from the notebook's own folder.
"""
import json
import os
import sys


def main(path):
    import matplotlib
    matplotlib.use("Agg")
    with open(path, encoding="utf-8") as f:
        cells = json.load(f)["cells"]
    source = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    os.chdir(os.path.dirname(os.path.abspath(path)))
    exec(compile(source, path, "exec"), {"__name__": "__main__"})   # noqa: S102 - the repository's own notebook


if __name__ == "__main__":
    main(sys.argv[1])
