"""Every notebook runs top to bottom, headless, against a real local stack of its own: in
tests/test_workbook.py, in the same run that tries every exercise's checker on the empty, the
wrong and the right answer. That run covers the notebooks whose exercises are declared in
``lab_helpers.exercises.MODULES`` (``workbook.converted()``), so this module keeps that list
complete: a notebook left out of it would run nowhere.
"""

from lab_helpers import workbook
from lab_helpers.exercises import MODULES

NOTEBOOKS = workbook.notebooks()


def test_there_is_a_workbook():
    assert NOTEBOOKS and NOTEBOOKS[0].name.startswith("00_")


def test_every_notebook_has_its_exercises_declared_so_it_runs_in_the_trials():
    missing = [p.name for p in NOTEBOOKS if p not in workbook.converted()]
    assert not missing, (
        f"declare the exercises of {', '.join(missing)} in lab_helpers/answers/ and list it in "
        "MODULES: tests/test_workbook.py then runs it and tries its checkers"
    )
    assert sorted(MODULES) == [p.name[:2] for p in NOTEBOOKS], (
        "MODULES names a notebook that is gone"
    )
