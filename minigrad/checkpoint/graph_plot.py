"""A picture of a graph plan: ops left to right, kept outputs and recomputed ops coloured (needs matplotlib)."""
from __future__ import annotations

from ..errors import ArgumentError

COLOURS = {"kept": "#2a9d8f", "recomputed": "#e76f51", "both": "#8e44ad", "freed": "#bbbbbb"}


def plot_plan(plan, path: str, title: str = ""):
    """Save a PNG of ``plan``'s graph: one dot per op (area ~ output bytes), arcs for edges, colour by role."""
    try:
        import matplotlib  # noqa: PLC0415
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
        from matplotlib.lines import Line2D  # noqa: PLC0415
        from matplotlib.patches import Arc  # noqa: PLC0415
    except ImportError:
        raise ArgumentError("--plot needs matplotlib: pip install 'minigrad[notebooks]' (or matplotlib)") from None
    g = plan.graph
    kept, again = set(plan.kept_nodes), set(plan.recomputed_nodes)
    role = ["both" if v in kept and v in again else "kept" if v in kept else "recomputed" if v in again else "freed"
            for v in range(len(g))]
    biggest = max((v.out_bytes for v in g.nodes), default=1) or 1
    fig, ax = plt.subplots(figsize=(max(8, len(g) * 0.25), 4))
    for u, v in g.edges:
        span = v - u
        ax.add_patch(Arc(((u + v) / 2, 0), span, span * 0.6, theta1=0, theta2=180, lw=0.6, color="#999999"))
    for name, colour in COLOURS.items():
        xs = [v for v in range(len(g)) if role[v] == name]
        ax.scatter(xs, [0] * len(xs), s=[30 + 300 * g.nodes[v].out_bytes / biggest for v in xs], c=colour,
                   zorder=3, edgecolors="black", linewidths=0.4)
    for v in g.nodes:
        ax.text(v.index, -0.6, v.op, rotation=90, ha="center", va="top", fontsize=6)
    ax.set_xlim(-1, len(g))
    ax.set_ylim(-6, max(3, len(g) * 0.3))
    ax.axis("off")
    ax.legend([Line2D([], [], marker="o", ls="", color=c, markeredgecolor="black") for c in COLOURS.values()],
              ["output kept by the forward", "recomputed in backward", "kept and recomputed", "freed, not recomputed"],
              loc="upper left", fontsize=8, frameon=False)
    ax.set_title(title or plan.summary().split(",")[0], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
