"""The exercises of the workbook, one module per notebook, and the reference computations
that decide whether an answer is right (see `lab_helpers.exercises.Exercise`).

The reference values are computed here from the bundled data files or read from the
servers' own counters, never written into a notebook: a notebook's checker cell is only
`check_exercise("NN.k")`. A learner who wants to see how an exercise is checked can read
these modules, after trying.
"""

MODULES = {
    "01": "containers",
    "02": "kubernetes",
    "04": "time_series",
    "05": "communication",
    "06": "teardown",
}
"""The notebooks that have exercises declared here, and the module of each."""
