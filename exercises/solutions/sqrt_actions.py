"""Exercise (c), solved: √L segment checkpointing, written as a schedule of actions."""
import math

from minigrad.checkpoint.schedules import Action


def sqrt_actions(L):
    """The actions of √L placement for a chain of L layers."""
    k = math.isqrt(L - 1) + 1                      # ⌈√L⌉
    bounds = [round(j * L / k) for j in range(k + 1)]
    acts = []
    for a, b in zip(bounds[:-2], bounds[1:-1]):     # every segment but the last: keep its input, advance
        if a:
            acts.append(Action("keep", a))
        acts += [Action("advance", i) for i in range(a + 1, b + 1)]
    last = bounds[-2]                               # recorded at once: its input needs no slot
    acts += [Action("record", i) for i in range(last + 1, L + 1)]
    acts += [Action("reverse", i) for i in range(L, last, -1)]
    for a, b in zip(reversed(bounds[:-2]), reversed(bounds[1:-1])):
        acts.append(Action("restore", a))
        acts += [Action("record", i) for i in range(a + 1, b + 1)]
        acts += [Action("reverse", i) for i in range(b, a, -1)]
        if a:
            acts.append(Action("drop", a))
    return acts
