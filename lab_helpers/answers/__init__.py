"""The exercises of the workbook: `exercises.yaml` declares them all (texts, minutes, the
wrong answers the tests try), and one module per notebook holds their checkers, the
reference computations that decide whether an answer is right (see
`lab_helpers.exercises.Exercise`).

The reference values are computed here from the bundled data files, from the servers' own
counters or by the real tools, never written into a notebook: a notebook's checker cell is
only `check_exercise("NN.k")`. A learner who wants to see how an exercise is checked can
read these modules, after trying.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from ..cmdline import CommandLineError
from ..exercises import Wrong

_T = TypeVar("_T")


# -- building blocks shared by the answer modules ------------------------------------------------
def parse_step(parse: Callable[[str], _T], commands: Mapping[str, Any], step: str) -> _T:
    """The command line `commands[step]` read by `parse` (a reader of `lab_helpers.cmdline`);
    raises `Wrong` naming the step when the line is missing or does not read."""
    line = commands.get(step)
    if line is None or line is Ellipsis:
        raise Wrong(f'write the "{step}" command')
    try:
        return parse(line)
    except CommandLineError as err:
        raise Wrong(f"{step}: {err}") from None


def is_number(value: Any) -> bool:
    """Whether `value` is one real number (a NumPy one too); a bool is not."""
    return not isinstance(value, bool) and isinstance(value, Real | np.floating | np.integer)


def per_asset(value: Any, name: str, assets: Sequence[str], listed: str) -> pd.Series:
    """The learner's `value` (named `name`) as a Series with one item per asset of `assets`
    (which the notebook names `listed`); raises `Wrong` otherwise."""
    if not isinstance(value, Mapping | pd.Series):
        raise Wrong(f"`{name}` should be a Series indexed by asset, not a {type(value).__name__}")
    series = pd.Series(dict(value.items()), dtype=object)
    if sorted(map(str, series.index)) != sorted(assets):
        raise Wrong(f"`{name}` needs one value per asset of {listed} ({', '.join(assets)})")
    return series
