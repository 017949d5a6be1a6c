"""Exercise (d): the fewest layer forwards that reverse a chain with s slots (chapter 6).

Write both sides of the binomial theorem and let the tests check that they agree.

* ``fewest_forwards(l, s)``: the recurrence. With one slot (only x_0), reaching layer i costs i
  forwards: F(l, 1) = l(l+1)/2. With more, keep a checkpoint at some x_m after m forwards; reverse
  the right part with one slot fewer; then the left part with all s:
  F(l, s) = min over 1 <= m < l of  m + F(l - m, s - 1) + F(m, s),  and F(1, s) = 1.
  Memoise it (functools.lru_cache): plain recursion is exponential.
* ``extra_forwards(L, s)``: the closed form t(L, s) = r·L − C(s + r, s + 1), with r the least
  integer such that C(s + r, s) >= L (math.comb).

    pytest exercises/test_revolve_count.py
"""
import math
from functools import lru_cache


def fewest_forwards(l, s):
    """F(l, s) by the recurrence."""
    raise NotImplementedError("exercise (d): write fewest_forwards")


def extra_forwards(L, s):
    """t(L, s) by the binomial formula."""
    raise NotImplementedError("exercise (d): write extra_forwards")
