"""Step checks and exercise checkers for the notebooks: ✅ when right, ⛔ with what to try.

Both print one line and return nothing, so a cell that ends with one shows that line and
nothing else:

- `check(condition, what, hint)`: a step of the lesson worked (the stack answers, or a
  relation that the text states holds on this run);
- `check_exercise("04.2")`: the learner's answer to exercise 04.2 is right.

An exercise is declared once, in `lab_helpers/answers/`: its texts, minutes and the
plausible wrong answers the tests try on it in `exercises.yaml`, and its checker (the
reference computation that decides, whose parameters name the learner's answer and the
notebook names it reads) in the notebook's module there. A notebook's checker cell is the
single line `check_exercise("NN.k")`: expected values and reference code never appear in a
notebook.

A check never raises: a learner sees at once what is wrong and what to try, and the rest of
the notebook still runs. The notebook tests count the ⛔ marks in the outputs, so a reference
run of a notebook must print none.

Example:

    check(len(df) > 0, "the query returned rows", hint="is the stack running? make stack-status")
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import LabError

OK, FAIL = "✅", "⛔"


class Wrong(Exception):
    """Raised by an exercise's `verify` when the answer is wrong; the message is the
    feedback the learner reads (what is off, never the expected value)."""


class Unanswered(LabError):
    """Raised by `todo`: the code of an exercise is not written yet."""


def todo(key: str):
    """The placeholder in an exercise's starting code: raises `Unanswered`, which a
    notebook shows as one line, and which the checker reads as "not done yet"."""
    raise Unanswered(f"exercise {key} is not done yet: write your code in place of todo(...)")


def check(condition: Any, what: str, hint: str = "") -> None:
    """Print `✅ what` if `condition` is true, else `⛔ what: hint`.

    `condition` may also be a function of no arguments: an exception it raises counts as a
    failure and its message is shown, so a cell never stops with a traceback.
    """
    error = ""
    if callable(condition):
        try:
            condition = condition()
        except Exception as err:  # a learner's unfinished code: show it, do not crash
            error = f" ({type(err).__name__}: {err})"
            condition = False
    if condition:
        print(f"{OK} {what}")
    else:
        print(f"{FAIL} {what}{error}" + (f": {hint}" if hint else ""))


# -- exercises -------------------------------------------------------------------------------
@dataclass(frozen=True)
class WrongAnswer:
    """A plausible wrong answer to an exercise, for the tests: a cell put in place of the
    solution cell, after which the checker must say ⛔, with `says` in its line when given.

    The cell is `code`, or, with `edit` (`{old: new}`), the solution cell with each `old`
    text replaced by its `new` one: a near miss stated as what differs, which follows the
    solution when the solution changes (an `old` text no longer found once is an error,
    never a wrong answer that has silently become the right one).
    """

    code: str = ""
    says: str = ""
    edit: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if bool(self.code) == bool(self.edit):
            raise ValueError("a WrongAnswer has either `code` or `edit`")

    def cell(self, solution: str) -> str:
        """The cell that replaces `solution`, the exercise's solution cell."""
        for old, new in self.edit.items():
            if solution.count(old) != 1:
                raise ValueError(
                    f"{old!r} is in the solution {solution.count(old)} times, not once"
                )
            solution = solution.replace(old, new)
        return solution if self.edit else self.code


@dataclass(frozen=True)
class Exercise:
    """One exercise of the workbook.

    - `key`: `"NN.k"`, the notebook's number and the exercise's;
    - `title`: a few words, shown in the checker's line;
    - `verify(answer, **uses)`: returns if the answer is right, raises `Wrong` with
      feedback if not. Its parameters are named after the notebook's names: the first is
      `answer`, the notebook name (variable or function) the learner's answer goes into, one
      per exercise, so every checker can be run again in any order; the others are `uses`,
      the notebook names the checker also reads (parameters, data, a running source);
    - `answer`: given only when `verify` is shared and its first parameter cannot be named
      after it (a multiple-choice checker's is `answer`);
    - `hint`: where to look; it never holds the answer;
    - `writes` and `checked_by`: what the learner writes and what decides (for the
      teaching notes); `minutes`: the time a learner needs;
    - `wrong`: plausible wrong answers (label -> `WrongAnswer`) that the tests try;
    - `optional`: an exercise *if time allows*, outside the workshop's core path (its task
      says so; the pace table counts its minutes apart).
    """

    key: str
    title: str
    verify: Callable[..., None]
    hint: str
    writes: str
    checked_by: str
    minutes: int
    answer: str = ""
    wrong: Mapping[str, WrongAnswer] = field(default_factory=dict)
    optional: bool = False

    def __post_init__(self) -> None:
        if not self.answer:  # frozen: set once, here
            object.__setattr__(self, "answer", self._parameters()[0])

    def _parameters(self) -> list[str]:
        return list(inspect.signature(self.verify).parameters)

    @property
    def uses(self) -> tuple[str, ...]:
        """The notebook names `verify` reads besides the answer: its other parameters."""
        return tuple(self._parameters()[1:])

    @property
    def label(self) -> str:
        return f"Exercise {self.key} · {self.title}"


MODULES = {
    "00": "welcome",
    "01": "containers",
    "02": "kubernetes",
    "03": "etl",
    "04": "time_series",
    "05": "communication",
    "06": "teardown",
}
"""The notebooks that have exercises, and the module of `lab_helpers/answers/` that holds the
checkers of each (the one list: the workbook's full rules and the tests read it)."""
DECLARATIONS = Path(__file__).parent / "answers" / "exercises.yaml"
"""Every exercise of the workbook, in order: its texts, minutes and wrong answers (the
comments at its top say each field). The checkers are the answer modules' functions."""
# The fields an entry may have, by its kind, and those of its parts.
_FIELDS = {
    "verify": {"title", "verify", "answer", "optional", "minutes", "hint", "writes",
               "checked_by", "wrong"},
    "choice": {"title", "choice", "answer", "minutes", "hint", "wrong"},
    "choice:": {"correct", "asks", "feedback", "options"},
    "wrong:verify": {"edit", "code", "says"},
    "wrong:choice": {"pick", "says"},
}  # fmt: skip
_TYPES = {"minutes": int, "optional": bool, "options": list, "choice": dict, "wrong": dict,
          "edit": dict, "feedback": dict}  # fmt: skip
_KEY = re.compile(r"\d\d\.\d+")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    would keep the last one without a word)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        twice = sorted({str(k) for k in keys if keys.count(k) > 1})
        if twice:
            raise yaml.constructor.ConstructorError(
                None, None, f"{twice[0]!r} is given twice", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


def _module(notebook: str):
    if notebook not in MODULES:
        raise LabError(f"notebook {notebook} has no exercises in lab_helpers.answers")
    return importlib.import_module(f".answers.{MODULES[notebook]}", __package__)


def _wrong_type(name: str, value: Any) -> bool:
    """Is `value` not what field `name` takes? Every value is text, except `minutes` (a whole
    number), `optional` (true or false), `options` (a list of letters) and the mappings:
    `choice` and `wrong` keyed by text, `edit` and `feedback` from text to text."""
    want = _TYPES.get(name, str)
    if type(value) is not want:
        return True
    if want is list:
        return not all(isinstance(item, str) for item in value)
    if want is dict:
        texts = value.items() if name in ("edit", "feedback") else ((k, "") for k in value)
        return not all(isinstance(k, str) and isinstance(v, str) for k, v in texts)
    return False


def _problem(entry: dict) -> str | None:
    """What is wrong with the shape of one entry: an unknown field (by the kind of exercise,
    in its choice and in each wrong answer), or a value of the wrong type."""
    kind = "choice" if "choice" in entry else "verify"
    parts = [("", entry, _FIELDS[kind])]
    if isinstance(entry.get("choice"), dict):
        parts.append(("choice: ", entry["choice"], _FIELDS["choice:"]))
    for label, wrong in (entry.get("wrong") or {}).items():
        if not isinstance(wrong, dict):
            return f"the wrong answer {label!r} is not a mapping of its fields"
        parts.append((f"wrong answer {label!r}: ", wrong, _FIELDS["wrong:" + kind]))
    for where, fields, allowed in parts:
        unknown = sorted(set(fields) - allowed)
        if unknown:
            return f"{where}unknown field {unknown[0]!r} (the fields: {', '.join(sorted(allowed))})"
        for name, value in fields.items():
            if _wrong_type(name, value):
                return f"{where}{name}: {value!r} is not what the field takes (see the comments)"
    return None


def _declared(key: str, entry: dict) -> Exercise:
    """The `Exercise` an entry of `DECLARATIONS` declares."""
    where = f"{DECLARATIONS.name}, exercise {key}"
    problem = _problem(entry)
    if problem:
        raise LabError(f"{where}: {problem}")
    fields = {name: value for name, value in entry.items() if name not in ("choice", "wrong")}
    wrong = entry.get("wrong") or {}
    try:
        if "choice" in entry:
            asked = entry["choice"]
            return multiple_choice(
                key, fields.pop("title"), fields.pop("answer"), correct=asked["correct"],
                feedback=asked["feedback"], asks=asked["asks"],
                options=tuple(asked.get("options", "abcd")),
                wrong={label: (w["pick"], w["says"]) for label, w in wrong.items()}, **fields,
            )  # fmt: skip
        verify = getattr(_module(key[:2]), fields.pop("verify", ""), None)
        if not callable(verify):
            raise LabError(f"{where}: `verify` names no function of its notebook's answer module")
        return Exercise(
            key=key,
            verify=verify,
            wrong={label: WrongAnswer(**w) for label, w in wrong.items()},
            **fields,
        )
    except (KeyError, TypeError, ValueError) as err:  # a field missing, or code and edit
        raise LabError(f"{where}: {type(err).__name__}: {err}") from None


@functools.cache
def _entries() -> dict[str, dict]:
    """`DECLARATIONS`, read once: each key `"NN.k"` of a notebook that has an answer module,
    each entry a mapping."""
    try:
        entries = yaml.load(DECLARATIONS.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise LabError(f"{DECLARATIONS.name} is not valid YAML: {err}") from None
    for key, entry in (entries or {}).items():
        if not isinstance(key, str) or not _KEY.fullmatch(key) or key[:2] not in MODULES:
            raise LabError(
                f'{DECLARATIONS.name}: {key!r} is not an exercise key: "NN.k" (in quotes), '
                "NN a notebook of lab_helpers.exercises.MODULES"
            )
        if not isinstance(entry, dict):
            raise LabError(f"{DECLARATIONS.name}, exercise {key}: its fields are missing")
    return entries or {}


@functools.cache
def _exercises(notebook: str) -> tuple[Exercise, ...]:
    """The exercises of one notebook, built once (a broken entry of another notebook does
    not stop these)."""
    _module(notebook)  # a notebook without an answer module is an error, not an empty list
    return tuple(_declared(key, entry) for key, entry in _entries().items() if key[:2] == notebook)


def exercises(notebook: str) -> list[Exercise]:
    """The exercises of notebook `notebook` (`"04"`), in order."""
    return list(_exercises(notebook))


def exercise(key: str) -> Exercise:
    """The exercise `key` (`"04.2"`)."""
    notebook = key.partition(".")[0]
    for found in exercises(notebook):
        if found.key == key:
            return found
    raise LabError(f"there is no exercise {key}: see lab_helpers/answers/")


def _user_namespace() -> dict:
    """The notebook's variables (the IPython user namespace), or {} outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return {}
    shell = get_ipython()
    return shell.user_ns if shell is not None else {}


def _unanswered(answer: Any) -> bool:
    return answer is Ellipsis or answer is None


def _verdict(ex: Exercise, namespace: Mapping[str, Any]) -> str | None:
    """None if the answer in `namespace` is right, else the feedback."""
    if ex.answer not in namespace:
        return f"`{ex.answer}` is not defined yet: run the exercise's cell first"
    missing = [name for name in ex.uses if name not in namespace]
    if missing:
        return f"run the cells above first ({', '.join(missing)} not defined yet)"
    answer = namespace[ex.answer]
    if _unanswered(answer):
        return "not answered yet"
    try:
        ex.verify(answer, **{name: namespace[name] for name in ex.uses})
    except Unanswered:
        return "not done yet: write your code in place of todo(...)"
    except (Wrong, AssertionError) as err:
        return str(err) or "not right yet"
    except LabError as err:  # the stack, not the answer: say what to fix
        return str(err)
    except Exception as err:  # the learner's code raised: show it, do not crash
        return f"your code raised {type(err).__name__}: {err}"
    return None


def check_exercise(key: str) -> None:
    """The checker cell of an exercise: `check_exercise("04.2")` prints one line, ✅ or
    ⛔ with feedback and a hint.

    The answer and the other names it needs are read from the notebook's variables (see
    `Exercise`), so a missing one is a sentence, never a traceback.
    """
    try:
        ex = exercise(key)
    except LabError as err:  # a key that is not declared, or a broken declaration
        print(f"{FAIL} {err}")
        return
    feedback = _verdict(ex, _user_namespace())
    if feedback is None:
        print(f"{OK} {ex.label}")
    else:
        print(f"{FAIL} {ex.label}: {feedback.rstrip('.')}. Hint: {ex.hint}")


# -- building blocks for verify functions ------------------------------------------------------
def choice(correct: str, feedback: Mapping[str, str], options: Sequence[str]) -> Callable:
    """`verify` of a multiple-choice question: the answer is one of `options` (a letter);
    `feedback` says, for each wrong option, why it is wrong."""

    def verify(answer: Any) -> None:
        picked = str(answer).strip().lower().strip("()")
        if picked not in options:
            raise Wrong(f"answer with one letter among {', '.join(options)} (a string)")
        if picked != correct:
            raise Wrong(feedback.get(picked, "not this one"))

    return verify


def multiple_choice(
    key: str,
    title: str,
    answer: str,
    *,
    correct: str,
    feedback: Mapping[str, str],
    hint: str,
    asks: str,
    wrong: Mapping[str, tuple[str, str]],
    options: Sequence[str] = ("a", "b", "c", "d"),
    minutes: int = 2,
) -> Exercise:
    """A multiple-choice exercise: the learner sets `answer` to one letter of `options`.

    `feedback` says, for each wrong letter, why it is wrong; `asks` is what the question is
    about, for the teaching notes; `wrong` maps a label to the letter the tests try and the
    words its feedback must hold (`label: (letter, says)`).
    """
    return Exercise(
        key=key,
        title=title,
        answer=answer,
        verify=choice(correct, feedback, options),
        hint=hint,
        writes=f"a multiple-choice answer: {asks}",
        checked_by="the letter, with feedback on each wrong one",
        minutes=minutes,
        wrong={
            label: WrongAnswer(f'{answer} = "{letter}"\n', says=says)
            for label, (letter, says) in wrong.items()
        },
    )


def _words(text: Any) -> str:
    """Lower case, punctuation gone (a dot only inside a number), white space folded."""
    kept = re.sub(r"[^\w\s.%-]", " ", str(text).lower()).split()
    return " ".join(word.strip(".") for word in kept if word.strip("."))


def short_answer(accept: Sequence[str], feedback: Mapping[str, str] | None = None) -> Callable:
    """`verify` of a short-answer question: the answer (a string) is right when, lower-cased
    and without punctuation, it is one of `accept`; `feedback` says, for known wrong
    answers written the same way, why they are wrong."""
    accepted = {_words(a) for a in accept}
    known = {_words(k): v for k, v in (feedback or {}).items()}

    def verify(answer: Any) -> None:
        if not isinstance(answer, str):
            raise Wrong("answer with a few words, as a string")
        given = _words(answer)
        if given not in accepted:
            raise Wrong(known.get(given, "not this one"))

    return verify


def run_coroutine(coroutine, timeout: float = 60.0):
    """Run `coroutine` to its end in a thread with an event loop of its own, and return its
    result (or raise its exception). A checker is called from a notebook whose event loop is
    already running; the learner's async code gets a fresh one."""
    outcome: dict[str, Any] = {}

    def target():
        try:
            outcome["value"] = asyncio.run(asyncio.wait_for(coroutine, timeout))
        except BaseException as err:  # handed to the caller below
            outcome["error"] = err

    thread = threading.Thread(target=target, name="exercise-check", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if "error" in outcome:
        raise outcome["error"]
    if "value" not in outcome:
        raise Wrong(f"your code did not finish within {timeout:.0f} s")
    return outcome["value"]


def call_async(function: Any, *args, timeout: float = 60.0):
    """Call the learner's `async def` function and wait for its result (see
    `run_coroutine`); a plain function is refused with a sentence."""
    if not inspect.iscoroutinefunction(function):
        raise Wrong("keep it an `async def` function, as in the exercise's cell")
    return run_coroutine(function(*args), timeout)
