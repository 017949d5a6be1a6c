"""Exercise (d), solved: the fewest layer forwards that reverse a chain with s slots."""
import math
from functools import lru_cache


@lru_cache(maxsize=None)
def fewest_forwards(l, s):
    """F(l, s) by the recurrence."""
    if l == 1:
        return 1
    if s == 1:
        return l * (l + 1) // 2
    return min(m + fewest_forwards(l - m, s - 1) + fewest_forwards(m, s) for m in range(1, l))


def extra_forwards(L, s):
    """t(L, s) by the binomial formula."""
    r = 0
    while math.comb(s + r, s) < L:
        r += 1
    return r * L - math.comb(s + r, s + 1)
