"""Converter failures as a user can act on them: the root cause (innermost exception, the operator
or layer), never a framework dump on the terminal; the full output goes to a log file."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import traceback
from pathlib import Path

# Lines that carry the cause in converter messages (TF, onnx2tf, tf2onnx, torch.onnx, TFLite).
CAUSE = re.compile(
    r"(Dimensions must be|requires|not supported|unsupported|Unsupported|is not|cannot|Cannot|"
    r"could not|Could not|missing|Missing|failed to|Failed to|does not|mismatch|invalid|Invalid|"
    r"not found|No (conversion|registered|such|ONNX function)|Exporting the operator)"
)
WHERE = re.compile(r"\b(?:layer|Layer|operator|node|Node|OpType)\b[ :\"']+[\"'`]?([\w./:-]+)")


class ConversionError(Exception):
    """A converter could not handle the model; the message names the step and the root cause."""


class RouteUnavailable(ConversionError):
    """The route needs a package that is not installed: nothing is wrong with the model. A format
    whose every route is unavailable is recorded with the reason but does not fail the export."""


def chain(e: BaseException) -> list[BaseException]:
    """The exception and its explicit causes (`raise ... from`). An implicit context (an error
    raised while handling another) is followed only past exceptions that say nothing: the error
    raised later is the real one, the one it was handling is usually incidental."""
    out, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        out.append(e)
        if e.__cause__ is not None:
            e = e.__cause__
        elif e.__context__ is not None and not e.__suppress_context__ and not _telling(e):
            e = e.__context__
        else:
            break
    return out


def _telling(e: BaseException) -> bool:
    return any(CAUSE.search(ln) for ln in _lines(e))


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _lines(e: BaseException) -> list[str]:
    return [ANSI.sub("", ln).strip() for ln in str(e).splitlines() if ln.strip()]


def root_cause(e: BaseException) -> str:
    """`Type: the most telling line` of the innermost exception that says something (an error
    raised while handling an incidental IndexError is the cause, not that IndexError), plus where
    (layer/operator) when some message of the chain names it."""
    errors = chain(e)
    telling = [err for err in errors if _telling(err)]
    inner = telling[-1] if telling else errors[-1]
    lines = _lines(inner)
    line = next((ln for ln in lines if CAUSE.search(ln)), lines[0] if lines else "")
    where = None
    for err in errors:
        m = WHERE.search(str(err))
        if m:
            where = m.group(1)
            break
    text = f"{type(inner).__name__}: {line[:300]}" if line else type(inner).__name__
    if where and where not in text:
        text += f" (at {where})"
    return text


@contextlib.contextmanager
def captured(log: Path | None):
    """Send everything written to stdout/stderr, C++ logging included (file descriptors 1 and 2),
    to `log`; None (--debug) leaves the terminal alone."""
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        except BaseException:
            sys.stderr.write(traceback.format_exc())
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
