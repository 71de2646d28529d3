"""The exercises of the workbook, one module per notebook, and the reference computations
that decide whether an answer is right (see `lab_helpers.exercises.Exercise`).

The reference values are computed here from the bundled data files, from the servers' own
counters or by the real tools, never written into a notebook: a notebook's checker cell is
only `check_exercise("NN.k")`. A learner who wants to see how an exercise is checked can
read these modules, after trying.
"""

MODULES = {
    "00": "welcome",
    "01": "containers",
    "02": "kubernetes",
    "03": "etl",
    "04": "time_series",
    "05": "communication",
    "06": "teardown",
}
"""The notebooks that have exercises declared here, and the module of each."""
