"""The README's commands, and a way to run one in this process (tests/test_readme.py).

``commands`` reads every bash code block: ``\\`` continuations joined, comments dropped, ``make``
lines skipped (``.ci/run`` and CI run those). ``examples`` reads the plain blocks whose first line
is ``$ python -m cil_lightning ...``: the command and the output the README shows for it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

README = Path(os.environ.get("CIL_README", Path(__file__).resolve().parents[1] / "README.md"))
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def _blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(text)]


def commands(path: Path = README) -> list[str]:
    """Every command line of the README's bash blocks, continuations joined, comments dropped."""
    out = []
    for lang, body in _blocks(path.read_text()):
        if lang != "bash":
            continue
        joined = re.sub(r"\\\n\s*", " ", body)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
            if line and not line.startswith("make "):
                out.append(" ".join(line.split()))
    return out


def examples(path: Path = README) -> list[tuple[str, list[str]]]:
    """(command, shown output lines) of each plain block that starts with ``$ python -m``."""
    out = []
    for lang, body in _blocks(path.read_text()):
        lines = body.splitlines()
        if lang == "" and lines and lines[0].startswith("$ python -m cil_lightning"):
            out.append((lines[0][2:].strip(), [ln for ln in lines[1:] if ln.strip()]))
    return out


def argv_of(command: str) -> tuple[str, list[str]]:
    """(module, arguments) of ``python -m <module> <arguments>``."""
    words = shlex.split(command)
    if words[:2] != ["python", "-m"] or len(words) < 3:
        raise ValueError(f"not a `python -m` command: {command}")
    return words[2], words[3:]


def with_overrides(args: list[str], extra: list[str]) -> list[str]:
    """``args`` with ``extra`` added before any trailing ``--flag`` (``--cfg job``); an extra
    ``key=value`` replaces the same key in ``args`` (Hydra rejects a key given twice in a
    multirun)."""
    keys = {a.split("=", 1)[0].lstrip("+~") for a in extra if "=" in a}
    kept = [a for a in args if not ("=" in a and a.split("=", 1)[0].lstrip("+~") in keys)]
    cut = next((i for i, a in enumerate(kept) if a.startswith("--")), len(kept))
    return kept[:cut] + list(extra) + kept[cut:]


@dataclass
class Result:
    code: object  # the exit code, or the message of a SystemExit(str)
    output: str  # stdout, stderr and the SystemExit message together

    @property
    def ok(self) -> bool:
        return self.code in (0, None)


def run_in_process(args: list[str]) -> Result:
    """``python -m cil_lightning <args>`` through ``cli.main`` in this process, output captured."""
    from hydra.core.global_hydra import GlobalHydra

    from cil_lightning.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = list(sys.argv)
    sys.argv = ["cil_lightning", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()  # hydra.main leaves it set; the next compose would fail
    message = code if isinstance(code, str) else ""
    return Result(code, out.getvalue() + err.getvalue() + message)
